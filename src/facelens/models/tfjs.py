"""TensorFlow.js graph models (`model.json` + weight shards) as ONNX, without TensorFlow.

A TFJS graph model is a GraphDef in JSON (`modelTopology.node`: name, op, inputs, attrs)
whose Const nodes take their values, in order, from the shards listed in `weightsManifest`
(float32, int32 or bool; float16 or affine uint8/uint16 when quantised). This module reads
both, folds whatever is computable from constants alone (shape arithmetic, `SparseToDense`
with no indices), and maps each remaining op to ONNX nodes (models/tfjs_ops.py):

- TF keeps images NHWC; ONNX convolutions, pools and resizes are NCHW. Each such op is
  wrapped in a pair of Transposes, then consecutive Transposes are composed and identity
  ones removed, so graphs exported from NCHW frameworks (onnx-tf adds the opposite pair
  around every convolution) come out without layout shuffles.
- A convolution whose only consumer adds a 1-D constant takes it as its ONNX bias.

Converting NanoDet (7.6 MB of float16 weights) takes ~0.1 s. Its ONNX outputs matched the
TFJS graph run by TensorFlow 2.21 (the GraphDef with the same weights, checked once outside
the project) to 1.3e-5 at most on a photo (outputs range to ±11) and 5.7e-6 on noise.
BlazePose full (6.3 MB) converts in ~0.8 s with the same ops; its keypoints came within 0.005 px
(of 256) of MediaPipe's own `pose_landmark_full.tflite` (tests/scene/test_pose.py).
`cached_onnx` keeps the result beside the sources' digests: one conversion per install.

`scalable` frees the input's spatial size for a fully convolutional graph (NanoDet, run at
another size when settings.street_detect_side is set, scene/detect.py): the graph's Resizes,
which TF stores with fixed output sizes, are written as scales instead.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Self

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from facelens.models.base import LazyModel, onnx_session
from facelens.models.registry import CARDS, model_path
from facelens.models.tfjs_ops import (
    HANDLERS,
    Builder,
    UnsupportedGraphError,
    fold_constant,
    inline_const,
    prune_transposes,
    tensor_key,
)

OPSET = 17
CONVERTER = 1
"""Part of every cached file's name: raise it when a change here changes the ONNX written."""
_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANTISED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


def read_weights(model_json: dict[str, Any], folder: Path) -> dict[str, np.ndarray]:
    """Every weight named in the manifest, dequantised to its original dtype."""
    weights: dict[str, np.ndarray] = {}
    for group in model_json["weightsManifest"]:
        data = b"".join((folder / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            count = int(np.prod(spec["shape"], dtype=np.int64))
            quant = spec.get("quantization")
            stored = _QUANTISED[quant["dtype"]] if quant else _DTYPES[spec["dtype"]]
            size = count * np.dtype(stored).itemsize
            raw = np.frombuffer(data, stored, count, offset).reshape(spec["shape"])
            offset += size
            if quant and quant["dtype"] != "float16":  # affine: value = q * scale + min
                raw = raw.astype(np.float32) * quant["scale"] + quant["min"]
            weights[spec["name"]] = raw.astype(_DTYPES[spec["dtype"]])
        if offset != len(data):
            raise UnsupportedGraphError(f"weight shards hold {len(data)} bytes, manifest "
                                        f"describes {offset}")
    return weights


def convert(model_file: Path, name: str = "tfjs", scalable: bool = False) -> onnx.ModelProto:
    """The ONNX model of the TFJS graph model `model_file` (weights read beside it).

    `scalable`: the input's spatial size is left free (a fully convolutional network run at
    another size): each Resize is written as scales (its fixed output size over its input's
    size at the graph's own input size) and the outputs' inner dimensions are left free."""
    model_json = json.loads(model_file.read_text())
    if model_json.get("format") != "graph-model":
        raise UnsupportedGraphError(f"{model_file}: not a TFJS graph model")
    weights = read_weights(model_json, model_file.parent)
    b = Builder()
    graph_nodes = model_json["modelTopology"]["node"]
    for node in graph_nodes:
        for ref in node.get("input", []):
            if not ref.startswith("^"):
                b.consumers[tensor_key(ref)] = b.consumers.get(tensor_key(ref), 0) + 1
    graph_inputs: list[onnx.ValueInfoProto] = []
    for node in graph_nodes:
        op, key = node["op"], node["name"]
        inputs = [tensor_key(i) for i in node.get("input", []) if not i.startswith("^")]
        if op == "Const":
            b.consts[key] = weights[key] if key in weights else inline_const(node)
            continue
        if op == "Placeholder":
            dims = _attr_shape(node)
            graph_inputs.append(helper.make_tensor_value_info(
                key, TensorProto.FLOAT, [d if d > 0 else f"{key}_{i}" for i, d in
                                         enumerate(dims)]))
            b.values[key] = key
            continue
        if all(i in b.consts for i in inputs):
            folded = fold_constant(op, node, [b.consts[i] for i in inputs])
            if folded is not None:
                b.consts[key] = folded
                continue
        handler = HANDLERS.get(op)
        if handler is None:
            raise UnsupportedGraphError(f"op {op} ({key}) is not mapped to ONNX")
        result = handler(b, node, inputs)
        if isinstance(result, list):
            for i, out in enumerate(result):
                b.values[key if i == 0 else f"{key}:{i}"] = out
        else:
            b.values[key] = result
    outputs = _graph_outputs(model_json, b, scalable)
    if scalable:
        b.nodes = _resizes_by_scale(b, graph_inputs, outputs)
        graph_inputs = [_free_spatial(i) for i in graph_inputs]
    nodes = prune_transposes(b.nodes, {o.name for o in outputs})
    used = {i for n in nodes for i in n.input}
    initializers = [t for t in b.initializers if t.name in used]
    graph = helper.make_graph(nodes, name, graph_inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="facelens.models.tfjs", ir_version=8)
    onnx.checker.check_model(model)
    return model


def _attr_shape(node: dict[str, Any]) -> list[int]:
    dims = node.get("attr", {}).get("shape", {}).get("shape", {}).get("dim", [])
    return [int(d.get("size", -1)) for d in dims]


def _graph_outputs(model_json: dict[str, Any], b: Builder,
                   scalable: bool = False) -> list[onnx.ValueInfoProto]:
    """One ONNX output per signature output (named without `:0`), renamed via Identity;
    when `scalable`, only the first (batch) and last (channel) dimensions stay fixed."""
    signature = model_json.get("signature", {}).get("outputs", {}) or {
        model_json["modelTopology"]["node"][-1]["name"]: {}}
    outputs = []
    for ref, spec in signature.items():
        out = tensor_key(ref)
        dims = [int(d.get("size", -1)) for d in spec.get("tensorShape", {}).get("dim", [])]
        if scalable:
            dims = [d if i in (0, len(dims) - 1) else -1 for i, d in enumerate(dims)]
        tensor = tensor_key(spec.get("name", ref))  # the key may be a Keras layer's name
        b.nodes.append(helper.make_node("Identity", [b.value(tensor)], [out], name=out))
        outputs.append(helper.make_tensor_value_info(
            out, TensorProto.FLOAT, [d if d > 0 else f"{out}_{i}" for i, d in enumerate(dims)]))
    return outputs


def _resizes_by_scale(b: Builder, inputs: list[onnx.ValueInfoProto],
                      outputs: list[onnx.ValueInfoProto]) -> list[onnx.NodeProto]:
    """`b.nodes` with each Resize's fixed output size (`sizes`) replaced by scales: the size
    over its input's size, found by shape inference at the graph's own input size."""
    fixed = helper.make_graph(b.nodes, "fixed", inputs, outputs, b.initializers)
    inferred = onnx.shape_inference.infer_shapes(helper.make_model(
        fixed, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8))
    known = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
             for v in inferred.graph.value_info}
    produced = {o: n for n in b.nodes for o in n.output}
    written = {t.name: t for t in b.initializers}
    nodes = []
    for node in b.nodes:
        if node.op_type == "Resize":
            hw = produced[node.input[3]].input[1]  # sizes = Concat(batch and channels, hw)
            size = numpy_helper.to_array(written[hw])
            scales = np.array([1, 1, *(size / known[node.input[0]][2:])], np.float32)
            rewritten = helper.make_node("Resize", [node.input[0], "", b.constant(
                scales, "scales")], list(node.output), name=node.name)
            rewritten.attribute.extend(node.attribute)
            node = rewritten
        nodes.append(node)
    return nodes


def _free_spatial(value: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """An image input with its spatial dimensions (those over 4 after the batch: colour
    channels never are) left free."""
    dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
    return helper.make_tensor_value_info(value.name, TensorProto.FLOAT, [
        d if i == 0 or d <= 4 else f"{value.name}_{i}" for i, d in enumerate(dims)])


def cache_dir() -> Path:
    """Where converted graphs are kept: $FACELENS_MODEL_CACHE, else under the venv."""
    configured = os.environ.get("FACELENS_MODEL_CACHE")
    return Path(configured) if configured else Path(sys.prefix) / "facelens-models"


def cached_onnx(model_file: Path, digests: tuple[str, ...], name: str,
                scalable: bool = False) -> onnx.ModelProto:
    """`convert(model_file, name, scalable)`, stored once under `cache_dir()` by the sources'
    digests (a scalable graph under its own name: it is another ONNX)."""
    kind = "-scalable" if scalable else ""
    target = cache_dir() / (f"{name}{kind}-c{CONVERTER}-"
                            f"{'-'.join(d[:16] for d in digests)}.onnx")
    if target.is_file():
        return onnx.load(str(target))
    model = convert(model_file, name, scalable)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    onnx.save(model, str(partial))
    partial.replace(target)  # atomic: concurrent first loads never read half a file
    return model



_shared: dict[type, TfjsModel] = {}
_shared_lock = threading.Lock()


class TfjsModel(LazyModel[ort.InferenceSession]):
    """A TFJS graph model converted to ONNX once, run by onnxruntime. Subclasses set `name`
    (the card of the `.json` graph) and `weights` (the card of its weight shard): both files
    are sha256-checked before conversion."""

    weights: str
    scalable: bool = False
    """Whether the input's spatial size is free (convert's `scalable`)."""

    def __init__(self, threads: int = 1) -> None:
        super().__init__()
        self._threads = threads

    @classmethod
    def shared(cls) -> Self:
        """The process-wide instance of this model (one session, opened on first use)."""
        with _shared_lock:
            if cls not in _shared:
                _shared[cls] = cls()
            return _shared[cls]

    def _open(self, path: Path) -> ort.InferenceSession:
        model_path(self.weights)
        digests = (CARDS[self.name].sha256, CARDS[self.weights].sha256)
        return onnx_session(cached_onnx(path, digests, self.name, self.scalable),
                            self._threads)
