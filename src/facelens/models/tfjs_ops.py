"""Op emission for models/tfjs.py: each TensorFlow op of a TFJS graph mapped to ONNX nodes.

`Builder` holds the ONNX graph being written and what each TF tensor became (a run-time value
or a constant known at conversion); `HANDLERS` maps a TF op to the function that emits its ONNX
nodes; `fold_constant` computes an op whose inputs are all constants; `prune_transposes`
composes the layout Transposes the handlers wrap NHWC ops in and drops identity ones.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)


class UnsupportedGraphError(ValueError):
    """The graph uses an op (or an attribute of one) this converter does not map."""


def attr(node: dict[str, Any], key: str, default: Any = None) -> Any:
    """An attribute's value: int/float/bool/string scalars, int lists, or `default`."""
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "list" in value:
        listed = value["list"]
        if "i" in listed:
            return [int(v) for v in listed["i"]]
        if "s" in listed:
            return [base64.b64decode(v).decode() for v in listed["s"]]
        return []
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "type" in value:
        return value["type"]
    return default


def tensor_key(name: str) -> str:
    """A TF input reference as a tensor key: `node` ≡ `node:0`."""
    return name[:-2] if name.endswith(":0") else name


def inline_const(node: dict[str, Any]) -> np.ndarray:
    tensor = node["attr"]["value"]["tensor"]
    dtype = {"DT_FLOAT": np.float32, "DT_INT32": np.int32, "DT_INT64": np.int64}.get(
        tensor.get("dtype", ""))
    if dtype is None:
        raise UnsupportedGraphError(f"Const {node['name']}: dtype {tensor.get('dtype')}")
    shape = [int(d.get("size", 0)) for d in tensor.get("tensorShape", {}).get("dim", [])]
    if "tensorContent" in tensor:
        return np.frombuffer(base64.b64decode(tensor["tensorContent"]), dtype).reshape(shape)
    values = tensor.get("floatVal") or tensor.get("intVal") or tensor.get("int64Val") or [0]
    return np.full(shape, values[0], dtype)


@dataclass
class Builder:
    """The ONNX graph being written, and what each TF tensor became."""

    values: dict[str, str] = field(default_factory=dict)
    """TF tensor key → ONNX value name (for tensors computed at run time)."""
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    """TF tensor key → value (for tensors known at conversion time)."""
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    consumers: dict[str, int] = field(default_factory=dict)
    conv_of: dict[str, onnx.NodeProto] = field(default_factory=dict)
    """TF conv output key → its ONNX Conv node (to take a following bias)."""
    _count: int = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}__{self._count}"

    def node(self, op: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def constant(self, value: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def value(self, key: str) -> str:
        """The ONNX name of a TF tensor, materialising constants as initialisers."""
        if key in self.values:
            return self.values[key]
        if key in self.consts:
            self.values[key] = self.constant(self.consts[key], key.replace(":", "_"))
            return self.values[key]
        raise UnsupportedGraphError(f"tensor {key} is used before it is defined")

    def transpose(self, x: str, perm: tuple[int, ...], hint: str) -> str:
        return self.node("Transpose", [x], hint, perm=list(perm))


Handler = Callable[[Builder, dict[str, Any], list[str]], list[str] | str]


def _conv(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
    """Conv2D / DepthwiseConv2dNative, plain or fused (BiasAdd + activation), NHWC."""
    if attr(node, "data_format", "NHWC") != "NHWC":
        raise UnsupportedGraphError(f"{node['name']}: only NHWC convolutions are mapped")
    depthwise = "Depthwise" in node["op"]
    kernel = b.consts[inputs[1]]  # HWIO, or HW C M for depthwise
    height, width, cin, mult = kernel.shape
    if depthwise:
        weight = kernel.transpose(2, 3, 0, 1).reshape(cin * mult, 1, height, width)
    else:
        weight = kernel.transpose(3, 2, 0, 1)
    strides = attr(node, "strides", [1, 1, 1, 1])[1:3]
    dilations = attr(node, "dilations", [1, 1, 1, 1])[1:3]
    attrs: dict[str, Any] = {"strides": strides, "dilations": dilations,
                             "kernel_shape": [height, width]}
    if depthwise:
        attrs["group"] = cin
    padding = attr(node, "padding", "VALID")
    if padding == "SAME":
        attrs["auto_pad"] = "SAME_UPPER"
    elif padding == "EXPLICIT":
        explicit = attr(node, "explicit_paddings")
        attrs["pads"] = [explicit[2], explicit[4], explicit[3], explicit[5]]
    conv_inputs = [b.transpose(b.value(inputs[0]), NHWC_TO_NCHW, "to_nchw"),
                   b.constant(weight.astype(np.float32), node["name"] + "_w")]
    fused = attr(node, "fused_ops", [])
    if fused and fused[0] == "BiasAdd":
        conv_inputs.append(b.value(inputs[2]))
    out = b.node("Conv", conv_inputs, node["name"], **attrs)
    conv_node = b.nodes[-1]
    for op in fused[1:]:
        out = _activation(b, op, out, node, inputs[3:])
    result = b.transpose(out, NCHW_TO_NHWC, "to_nhwc")
    if not fused:
        b.conv_of[node["name"]] = conv_node
    return result


def _activation(b: Builder, op: str, x: str, node: dict[str, Any], extra: list[str]) -> str:
    if op == "Relu":
        return b.node("Relu", [x], op)
    if op == "Relu6":
        return b.node("Clip", [x, b.constant(np.float32(0), "zero"),
                               b.constant(np.float32(6), "six")], op)
    if op == "LeakyRelu":
        return b.node("LeakyRelu", [x], op, alpha=attr(node, "leakyrelu_alpha",
                                                         attr(node, "alpha", 0.2)))
    if op == "Elu":
        return b.node("Elu", [x], op)
    if op == "Sigmoid":
        return b.node("Sigmoid", [x], op)
    if op == "Prelu":  # alpha is per channel, last axis in NHWC: move it to axis 1
        alpha = b.consts[extra[0]]
        return b.node("PRelu", [x, b.constant(alpha.reshape(-1, 1, 1), "alpha")], op)
    raise UnsupportedGraphError(f"{node['name']}: fused activation {op}")


def _binary(onnx_op: str) -> Handler:
    def handler(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
        left, right = inputs
        if onnx_op == "Add" and right in b.consts and b.consts[right].ndim == 1 \
                and left in b.conv_of and b.consumers.get(left) == 1 \
                and len(b.conv_of[left].input) == 2:
            conv = b.conv_of.pop(left)  # the bias of a convolution: fold it in
            conv.input.append(b.value(right))
            return b.values[left]
        return b.node(onnx_op, [b.value(left), b.value(right)], node["name"])
    return handler


def _unary(onnx_op: str, **attrs: Any) -> Handler:
    def handler(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
        return b.node(onnx_op, [b.value(inputs[0])], node["name"], **attrs)
    return handler


def _activation_op(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
    return _activation(b, node["op"], b.value(inputs[0]), node, inputs[1:])


def _pool(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
    if attr(node, "data_format", "NHWC") != "NHWC":
        raise UnsupportedGraphError(f"{node['name']}: only NHWC pools are mapped")
    attrs: dict[str, Any] = {"kernel_shape": attr(node, "ksize")[1:3],
                             "strides": attr(node, "strides")[1:3]}
    if attr(node, "padding") == "SAME":
        attrs["auto_pad"] = "SAME_UPPER"
    op = "MaxPool" if node["op"] == "MaxPool" else "AveragePool"
    if op == "AveragePool":
        attrs["count_include_pad"] = 0  # TF averages over the valid cells only
    x = b.transpose(b.value(inputs[0]), NHWC_TO_NCHW, "to_nchw")
    return b.transpose(b.node(op, [x], node["name"], **attrs), NCHW_TO_NHWC, "to_nhwc")


def _pad(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
    pads = b.consts[inputs[1]].astype(np.int64)  # (rank, 2): before, after per axis
    onnx_inputs = [b.value(inputs[0]), b.constant(pads.T.reshape(-1), "pads")]
    if node["op"] == "PadV2":
        onnx_inputs.append(b.value(inputs[2]))
    mode = {"REFLECT": "reflect", "SYMMETRIC": "edge"}.get(attr(node, "mode", ""), "constant")
    return b.node("Pad", onnx_inputs, node["name"], mode=mode)


def _resize(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
    size = b.consts[inputs[1]].astype(np.int64)
    if attr(node, "align_corners", False):
        transform = "align_corners"
    elif attr(node, "half_pixel_centers", False):
        transform = "half_pixel" if node["op"] == "ResizeBilinear" else "tf_half_pixel_for_nn"
    else:
        transform = "asymmetric"
    nearest = node["op"] == "ResizeNearestNeighbor"
    x = b.transpose(b.value(inputs[0]), NHWC_TO_NCHW, "to_nchw")
    batch_channels = b.node("Slice", [b.node("Shape", [x], "shape"),
                                      b.constant(np.array([0], np.int64), "start"),
                                      b.constant(np.array([2], np.int64), "end")], "nc")
    sizes = b.node("Concat", [batch_channels, b.constant(size, "hw")], "sizes", axis=0)
    resized = b.node("Resize", [x, "", "", sizes], node["name"],
                     mode="nearest" if nearest else "linear",
                     coordinate_transformation_mode=transform,
                     nearest_mode="round_prefer_ceil" if transform == "align_corners"
                     else "floor")
    return b.transpose(resized, NCHW_TO_NHWC, "to_nhwc")


def _concat(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
    axis = int(b.consts[inputs[-1]])
    return b.node("Concat", [b.value(i) for i in inputs[:-1]], node["name"], axis=axis)


def _reshape(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
    shape = b.constant(b.consts[inputs[1]].astype(np.int64), "shape")
    return b.node("Reshape", [b.value(inputs[0]), shape], node["name"])


def _transpose(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
    return b.transpose(b.value(inputs[0]), tuple(int(p) for p in b.consts[inputs[1]]),
                       node["name"])


def _split(b: Builder, node: dict[str, Any], inputs: list[str]) -> list[str]:
    if node["op"] == "SplitV":
        x, sizes, axis = inputs[0], b.consts[inputs[1]].astype(np.int64), int(b.consts[inputs[2]])
    else:  # Split: axis first, equal parts
        axis, x, sizes = int(b.consts[inputs[0]]), inputs[1], None
    count = attr(node, "num_split")
    outs = [b.fresh(f"{node['name']}_{i}") for i in range(count)]
    split_inputs = [b.value(x)] + ([b.constant(sizes, "split")] if sizes is not None else [])
    b.nodes.append(helper.make_node("Split", split_inputs, outs, name=outs[0], axis=axis,
                                    **({} if sizes is not None else {"num_outputs": count})))
    return outs


def _reduce(onnx_op: str) -> Handler:
    def handler(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
        axes = np.atleast_1d(b.consts[inputs[1]]).astype(np.int64)
        keep = int(bool(attr(node, "keep_dims", False)))
        if onnx_op == "ReduceMean":  # opset 17: axes are an attribute for ReduceMean/Max
            return b.node(onnx_op, [b.value(inputs[0])], node["name"], axes=axes.tolist(),
                          keepdims=keep)
        return b.node(onnx_op, [b.value(inputs[0]), b.constant(axes, "axes")],
                      node["name"], keepdims=keep)
    return handler


def _softmax(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
    return b.node("Softmax", [b.value(inputs[0])], node["name"], axis=-1)


def _clip(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
    low, high = (np.float32(b.consts[i]) for i in inputs[1:3])
    return b.node("Clip", [b.value(inputs[0]), b.constant(low, "low"),
                           b.constant(high, "high")], node["name"])


def _rsqrt(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
    return b.node("Reciprocal", [b.node("Sqrt", [b.value(inputs[0])], "sqrt")], node["name"])



def _matmul(b: Builder, node: dict[str, Any], inputs: list[str]) -> str:
    """MatMul (a dense layer), plain or fused (BiasAdd + activation)."""
    left, right = (b.value(i) for i in inputs[:2])
    if attr(node, "transpose_a", False):
        left = b.transpose(left, (1, 0), "t_a")
    if attr(node, "transpose_b", False):
        right = b.transpose(right, (1, 0), "t_b")
    out = b.node("MatMul", [left, right], node["name"])
    fused = attr(node, "fused_ops", [])
    if fused and fused[0] == "BiasAdd":
        out = b.node("Add", [out, b.value(inputs[2])], "bias")
    for op in fused[1:]:
        out = _activation(b, op, out, node, inputs[3:])
    return out

HANDLERS: dict[str, Handler] = {
    "Conv2D": _conv, "_FusedConv2D": _conv, "DepthwiseConv2dNative": _conv,
    "FusedDepthwiseConv2dNative": _conv,
    "Add": _binary("Add"), "AddV2": _binary("Add"), "BiasAdd": _binary("Add"),
    "Sub": _binary("Sub"), "Mul": _binary("Mul"), "RealDiv": _binary("Div"),
    "Maximum": _binary("Max"), "Minimum": _binary("Min"),
    "Relu": _activation_op, "Relu6": _activation_op, "LeakyRelu": _activation_op,
    "Elu": _activation_op, "Sigmoid": _activation_op, "Prelu": _activation_op,
    "Tanh": _unary("Tanh"), "Exp": _unary("Exp"), "Sqrt": _unary("Sqrt"),
    "Rsqrt": _rsqrt,
    "Softmax": _softmax, "ClipByValue": _clip,
    "MaxPool": _pool, "AvgPool": _pool, "Pad": _pad, "PadV2": _pad, "MirrorPad": _pad,
    "ResizeBilinear": _resize, "ResizeNearestNeighbor": _resize,
    "ConcatV2": _concat, "Reshape": _reshape, "Transpose": _transpose,
    "SplitV": _split, "Split": _split, "Mean": _reduce("ReduceMean"),
    "Identity": _unary("Identity"),
    "MatMul": _matmul, "_FusedMatMul": _matmul,
}


def fold_constant(op: str, node: dict[str, Any], args: list[np.ndarray]) -> np.ndarray | None:
    """The value of an op whose inputs are all constants, or None if not folded here."""
    if op in ("Identity", "Cast"):
        return args[0]
    if op in ("Add", "AddV2"):
        return np.asarray(args[0] + args[1])
    if op == "Mul":
        return np.asarray(args[0] * args[1])
    if op == "Sub":
        return np.asarray(args[0] - args[1])
    if op == "Reshape":
        return args[0].reshape(args[1].astype(np.int64))
    if op == "Pack":
        return np.stack(args, axis=attr(node, "axis", 0))
    if op == "SparseToDense":  # (indices, output_shape, values, default)
        indices, shape, values, default = args
        dense = np.full(shape.astype(np.int64), default, dtype=np.asarray(default).dtype)
        for row, value in zip(np.atleast_2d(indices), np.broadcast_to(values, len(indices)),
                              strict=False):
            dense[tuple(np.atleast_1d(row))] = value
        return dense
    return None


def prune_transposes(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Compose chains of Transposes, drop identities and nodes whose outputs nobody uses."""
    producer = {o: n for n in nodes for o in n.output}
    rename: dict[str, str] = {}
    for n in nodes:
        n.input[:] = [rename.get(i, i) for i in n.input]
        if n.op_type != "Transpose" or n.input[0] not in producer:
            continue
        parent = producer[n.input[0]]
        if parent.op_type != "Transpose":
            continue
        inner = list(parent.attribute[0].ints)
        outer = list(n.attribute[0].ints)
        composed = [inner[p] for p in outer]
        n.input[0] = parent.input[0]
        n.attribute[0].ints[:] = composed
        if composed == sorted(composed) and n.output[0] not in outputs:
            rename[n.output[0]] = parent.input[0]
    for n in nodes:
        n.input[:] = [rename.get(i, i) for i in n.input]
    needed = set(outputs)
    kept: list[onnx.NodeProto] = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(n.input)
    return kept[::-1]
