"""Fold block-quantised weights of an ONNX graph into plain float32 initialisers.

The registry's SFace ships int8 block-quantised (``DequantizeLinear`` with ``block_size``):
onnxruntime would dequantise every weight on every run. Folding once at load makes the graph
an ordinary fp32 network (same numbers, faster runs) and drops the ~170 unused graph inputs
that keep onnxruntime from loading the file as shipped.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None,
                axis: int, block_size: int) -> np.ndarray:
    """numpy DequantizeLinear (opset 21), per-tensor, per-axis or blocked."""
    x = q.astype(np.float32)
    z = np.zeros_like(scale, dtype=np.float32) if zero is None else zero.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return (x - z.reshape(())) * scale.reshape(()).astype(np.float32)
    axis = axis % q.ndim
    if block_size:
        scale = np.repeat(scale, block_size, axis=axis)
        z = np.repeat(z, block_size, axis=axis)
        index = [slice(None)] * q.ndim
        index[axis] = slice(0, q.shape[axis])
        scale, z = scale[tuple(index)], z[tuple(index)]
    else:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, z = scale.reshape(shape), z.reshape(shape)
    return (x - z) * scale.astype(np.float32)


def fold_quantized_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` whose constant DequantizeLinear/Reshape chains are folded."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    kept: list[onnx.NodeProto] = []
    folded: dict[str, np.ndarray] = {}
    for node in graph.node:
        inputs = [name for name in node.input if name]
        all_const = all(name in consts for name in inputs)
        if node.op_type == "DequantizeLinear" and all_const:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            zero = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            value = _dequantize(consts[node.input[0]], consts[node.input[1]], zero,
                                int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)))
        elif node.op_type == "Reshape" and all_const:
            value = consts[node.input[0]].reshape(consts[node.input[1]].astype(np.int64))
        else:
            kept.append(node)
            continue
        consts[node.output[0]] = folded[node.output[0]] = value

    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    initializers = [numpy_helper.from_array(consts[name], name)
                    for name in sorted(used) if name in consts and not any(
                        n.op_type == "Constant" and n.output[0] == name for n in kept)]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    real_inputs = [i for i in graph.input if i.name not in consts and i.name in used]
    del graph.input[:]
    graph.input.extend(real_inputs)
    return model
