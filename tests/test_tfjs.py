"""The TFJS graph-model → ONNX converter (facelens/models/tfjs.py) on small graphs written
here (float16 and affine-quantised weights, NHWC ops, onnx-tf style NCHW transposes), checked
against numpy, and on the NanoDet graph the street layer runs."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest

from facelens.models.base import onnx_session
from facelens.models.tfjs import UnsupportedGraphError, cached_onnx, convert

RNG = np.random.default_rng(7)


def _node(name: str, op: str, inputs: list[str], **attr: Any) -> dict[str, Any]:
    return {"name": name, "op": op, "input": inputs, "attr": attr}


def _ints(values: list[int]) -> dict[str, Any]:
    return {"list": {"i": [str(v) for v in values]}}


def _text(value: str) -> dict[str, Any]:
    return {"s": base64.b64encode(value.encode()).decode()}


def _write_model(folder: Path, nodes: list[dict[str, Any]], weights: dict[str, np.ndarray],
                 shape: list[int], outputs: list[str], quantise: str | None = "float16") -> Path:
    """A TFJS graph model: Const nodes for `weights` (float ones stored as `quantise`)."""
    manifest, blobs = [], []
    for name, value in weights.items():
        spec: dict[str, Any] = {"name": name, "shape": list(value.shape),
                                "dtype": "int32" if value.dtype.kind == "i" else "float32"}
        if value.dtype.kind == "f" and quantise == "float16":
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            blobs.append(value.astype(np.float16).tobytes())
        elif value.dtype.kind == "f" and quantise == "uint8":
            low, high = float(value.min()), float(value.max())
            scale = (high - low) / 255
            spec["quantization"] = {"dtype": "uint8", "scale": scale, "min": low}
            blobs.append(np.round((value - low) / scale).astype(np.uint8).tobytes())
        else:
            blobs.append(value.astype(np.int32 if value.dtype.kind == "i" else np.float32)
                         .tobytes())
        manifest.append(spec)
    (folder / "group1-shard1of1.bin").write_bytes(b"".join(blobs))
    consts = [_node(name, "Const", []) for name in weights]
    placeholder = _node("input", "Placeholder", [], shape={"shape": {"dim": [
        {"size": str(d)} for d in shape]}})
    model = {"format": "graph-model",
             "modelTopology": {"node": [placeholder, *consts, *nodes]},
             "signature": {"outputs": {f"{o}:0": {"name": f"{o}:0"} for o in outputs}},
             "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": manifest}]}
    path = folder / "model.json"
    path.write_text(json.dumps(model))
    return path


def _conv_nhwc(x: np.ndarray, kernel: np.ndarray, stride: int = 1) -> np.ndarray:
    """numpy VALID convolution, NHWC input, HWIO kernel."""
    kh, kw = kernel.shape[:2]
    out_h = (x.shape[1] - kh) // stride + 1
    out_w = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]), np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride]
            out += patch @ kernel[i, j]
    return out


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = onnx_session(model, 1)
    return session.run(None, {session.get_inputs()[0].name: x})


def test_nhwc_conv_bias_activation_pool_and_concat_match_numpy(tmp_path: Path) -> None:
    kernel = RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)
    bias = RNG.normal(size=4).astype(np.float32)
    depthwise = RNG.normal(size=(3, 3, 4, 1)).astype(np.float32)
    nodes = [
        _node("conv", "Conv2D", ["input", "kernel"], strides=_ints([1, 1, 1, 1]),
              padding=_text("VALID"), data_format=_text("NHWC")),
        _node("biased", "BiasAdd", ["conv", "bias"]),
        _node("act", "LeakyRelu", ["biased"], alpha={"f": 0.1}),
        _node("dw", "DepthwiseConv2dNative", ["act", "depthwise"],
              strides=_ints([1, 1, 1, 1]), padding=_text("VALID"), data_format=_text("NHWC")),
        _node("relu6", "Relu6", ["dw"]),
        _node("pool", "MaxPool", ["relu6"], ksize=_ints([1, 2, 2, 1]),
              strides=_ints([1, 2, 2, 1]), padding=_text("VALID"), data_format=_text("NHWC")),
        _node("joined", "ConcatV2", ["pool", "pool", "axis"]),
        _node("flat", "Reshape", ["joined", "shape"]),
        _node("out", "Sigmoid", ["flat"]),
    ]
    weights = {"kernel": kernel, "bias": bias, "depthwise": depthwise,
               "axis": np.array(3, np.int32), "shape": np.array([1, -1], np.int32)}
    path = _write_model(tmp_path, nodes, weights, [1, 10, 10, 3], ["out"])
    x = RNG.normal(size=(1, 10, 10, 3)).astype(np.float32)

    (got,) = _run(convert(path), x)

    k16 = kernel.astype(np.float16).astype(np.float64)  # the weights as stored
    d16 = depthwise.astype(np.float16).astype(np.float64)
    reference = _reference_chain(x, k16, bias.astype(np.float16).astype(np.float64), d16)
    assert got.shape == reference.shape
    assert np.abs(got - reference).max() < 1e-5


def _reference_chain(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray,
                     depthwise: np.ndarray) -> np.ndarray:
    y = _conv_nhwc(x.astype(np.float64), kernel) + bias
    y = np.where(y > 0, y, 0.1 * y)
    y = np.stack([_conv_nhwc(y[..., c:c + 1], depthwise[:, :, c:c + 1])[..., 0]
                  for c in range(y.shape[-1])], axis=-1)
    y = np.clip(y, 0, 6)
    n, h, w, c = y.shape
    y = y[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    y = np.concatenate([y, y], axis=3).reshape(1, -1)
    return 1 / (1 + np.exp(-y))


def test_onnx_tf_transposes_cancel_and_bias_folds_into_conv(tmp_path: Path) -> None:
    """An NCHW graph exported through onnx-tf: Pad, Transpose to NHWC, conv, bias, back."""
    kernel = RNG.normal(size=(3, 3, 2, 3)).astype(np.float32)
    bias = RNG.normal(size=3).astype(np.float32)
    nodes = [
        _node("pad", "Pad", ["input", "pads"]),
        _node("to_nhwc", "Transpose", ["pad", "perm_in"]),
        _node("conv", "Conv2D", ["to_nhwc", "kernel"], strides=_ints([1, 1, 1, 1]),
              padding=_text("VALID"), data_format=_text("NHWC")),
        _node("add", "Add", ["conv", "bias"]),
        _node("to_nchw", "Transpose", ["add", "perm_out"]),
        _node("up", "Transpose", ["to_nchw", "perm_in"]),
        _node("resize", "ResizeBilinear", ["up", "size"], half_pixel_centers={"b": True},
              align_corners={"b": False}),
        _node("out", "Transpose", ["resize", "perm_out"]),
    ]
    weights = {"pads": np.array([[0, 0], [0, 0], [1, 1], [1, 1]], np.int32),
               "perm_in": np.array([0, 2, 3, 1], np.int32),
               "perm_out": np.array([0, 3, 1, 2], np.int32), "kernel": kernel, "bias": bias,
               "size": np.array([12, 12], np.int32)}
    path = _write_model(tmp_path, nodes, weights, [1, 2, 6, 6], ["out"], quantise=None)

    model = convert(path)

    ops = [n.op_type for n in model.graph.node]
    assert "Transpose" not in ops and "Add" not in ops  # cancelled; bias in the Conv
    assert len(next(n for n in model.graph.node if n.op_type == "Conv").input) == 3
    x = RNG.normal(size=(1, 2, 6, 6)).astype(np.float32)
    (got,) = _run(model, x)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).transpose(0, 2, 3, 1)
    conv = (_conv_nhwc(padded, kernel.astype(np.float64)) + bias).transpose(0, 3, 1, 2)
    assert got.shape == (1, 3, 12, 12)
    # TF's half-pixel bilinear resize is OpenCV's INTER_LINEAR.
    resized = np.stack([cv2.resize(c.astype(np.float32), (12, 12),
                                   interpolation=cv2.INTER_LINEAR) for c in conv[0]])[None]
    assert np.abs(got - resized).max() < 1e-4


def test_affine_uint8_weights_and_constant_folding(tmp_path: Path) -> None:
    """uint8 weights dequantise as q·scale + min; SparseToDense with no indices folds away."""
    scale = RNG.normal(size=(4,)).astype(np.float32)
    nodes = [
        _node("zeros", "SparseToDense", ["indices", "dense_shape", "values", "zero"]),
        _node("shape", "AddV2", ["target", "zeros"]),
        _node("scaled", "Mul", ["input", "scale"]),
        _node("out", "Reshape", ["scaled", "shape"]),
    ]
    weights = {"indices": np.zeros((0, 1), np.int32), "dense_shape": np.array([2], np.int32),
               "values": np.zeros((0,), np.int32), "zero": np.array(0, np.int32),
               "target": np.array([2, -1], np.int32), "scale": scale}
    path = _write_model(tmp_path, nodes, weights, [1, 4], ["out"], quantise="uint8")

    model = convert(path)

    assert [n.op_type for n in model.graph.node if n.op_type != "Identity"] == \
        ["Mul", "Reshape"]
    x = np.ones((1, 4), np.float32)
    (got,) = _run(model, x)
    step = (scale.max() - scale.min()) / 255
    assert got.shape == (2, 2)
    assert np.abs(got.reshape(-1) - scale).max() <= step / 2 + 1e-6


def test_unknown_op_is_named(tmp_path: Path) -> None:
    path = _write_model(tmp_path, [_node("out", "Cumsum", ["input", "axis"])],
                        {"axis": np.array(0, np.int32)}, [1, 4], ["out"])
    with pytest.raises(UnsupportedGraphError, match="Cumsum"):
        convert(path)


def test_cached_onnx_converts_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_model(tmp_path, [_node("out", "Relu", ["input"])], {}, [1, 4], ["out"])
    monkeypatch.setenv("FACELENS_MODEL_CACHE", str(tmp_path / "cache"))
    first = cached_onnx(path, ("a" * 64, "b" * 64), "tiny")
    stored = list((tmp_path / "cache").glob("tiny-*.onnx"))
    assert len(stored) == 1
    path.write_text("not json any more")  # a second call must not read the source again
    assert cached_onnx(path, ("a" * 64, "b" * 64), "tiny") == first


def test_nanodet_converts_without_layout_shuffles() -> None:
    """The shipped NanoDet graph: every onnx-tf Transpose pair cancels; outputs per stride."""
    from facelens.models.registry import model_path

    model = convert(model_path("nanodet"))

    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 34
    assert ops.count("Transpose") == 6  # only the head's (cells, classes) outputs
    shapes = sorted(tuple(d.dim_value for d in o.type.tensor_type.shape.dim)
                    for o in model.graph.output)
    assert shapes == sorted((1, cells, width) for cells in (2704, 676, 169)
                            for width in (80, 44))


def test_scalable_nanodet_matches_the_fixed_graph_and_runs_at_other_sizes(
        load_rgb: Callable[[str], np.ndarray]) -> None:
    """`scalable`: the FPN's four Resizes become scales (×2, ×2, ×½, ×½), so the graph runs at
    any input in multiples of 32; at its own 416² it computes what the fixed graph does."""
    from facelens.models.registry import model_path
    from facelens.scene.detect import letterbox

    fixed = onnx_session(convert(model_path("nanodet")), 1)
    model = convert(model_path("nanodet"), scalable=True)
    assert not any(n.op_type in ("Shape", "Slice") for n in model.graph.node)
    free = onnx_session(model, 1)
    blob = letterbox(load_rgb("two_people.jpg"))[0]
    names = [o.name for o in fixed.get_outputs()]
    for a, b in zip(fixed.run(names, {"input_1": blob}), free.run(names, {"input_1": blob}),
                    strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    wide = free.run(names, {"input_1": letterbox(load_rgb("two_people.jpg"), (576, 320))[0]})
    assert sorted(o.shape[1] for o in wide) == sorted(2 * [72 * 40, 36 * 20, 18 * 10])
