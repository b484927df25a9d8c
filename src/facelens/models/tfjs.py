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
from onnx import TensorProto, helper

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


def convert(model_file: Path, name: str = "tfjs") -> onnx.ModelProto:
    """The ONNX model of the TFJS graph model `model_file` (weights read beside it)."""
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
    outputs = _graph_outputs(model_json, b)
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


def _graph_outputs(model_json: dict[str, Any], b: Builder) -> list[onnx.ValueInfoProto]:
    """One ONNX output per signature output (named without `:0`), renamed via Identity."""
    signature = model_json.get("signature", {}).get("outputs", {}) or {
        model_json["modelTopology"]["node"][-1]["name"]: {}}
    outputs = []
    for ref, spec in signature.items():
        out = tensor_key(ref)
        dims = [int(d.get("size", -1)) for d in spec.get("tensorShape", {}).get("dim", [])]
        tensor = tensor_key(spec.get("name", ref))  # the key may be a Keras layer's name
        b.nodes.append(helper.make_node("Identity", [b.value(tensor)], [out], name=out))
        outputs.append(helper.make_tensor_value_info(
            out, TensorProto.FLOAT, [d if d > 0 else f"{out}_{i}" for i, d in enumerate(dims)]))
    return outputs


def cache_dir() -> Path:
    """Where converted graphs are kept: $FACELENS_MODEL_CACHE, else under the venv."""
    configured = os.environ.get("FACELENS_MODEL_CACHE")
    return Path(configured) if configured else Path(sys.prefix) / "facelens-models"


def cached_onnx(model_file: Path, digests: tuple[str, ...], name: str) -> onnx.ModelProto:
    """`convert(model_file)`, stored once under `cache_dir()` by the sources' digests."""
    target = cache_dir() / f"{name}-c{CONVERTER}-{'-'.join(d[:16] for d in digests)}.onnx"
    if target.is_file():
        return onnx.load(str(target))
    model = convert(model_file, name)
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
        return onnx_session(cached_onnx(path, digests, self.name), self._threads)
