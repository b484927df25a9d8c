"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) as ONNX.

dlib-bin is built without BLAS, so its ResNet costs ~60 ms a face; the same network with the
same weights runs several times faster under OpenVINO. This module reads dlib's serialised net
itself (no dlib call) and writes the equivalent ONNX graph.

What the file holds (checked against the bytes, dlib 19.x serialisation):

- Integers: one control byte (bit 7: negative, low nibble: byte count) then that many
  little-endian bytes. Floats scalars: an int64 mantissa and an int16 exponent, both as such
  integers (value = mantissa·2^exponent). Strings: length, bytes. bools: the characters
  ``'1'``/``'0'``. Tensors: version 2, (num_samples, k, nr, nc), then raw little-endian
  float32 values (so weights load with one ``np.frombuffer`` each).
- The net nests outside-in: the loss record (``loss_metric_2``, margin, threshold), then one
  version int per wrapper from the outermost in (2: a layer, 1: a tag or skip, 3: the layer
  that owns the input), then the input (``input_rgb_image_sized``: the three channel means
  and 150, 150; the /256 is implicit in dlib) and the layer records from the first layer out.
  Tags and skips have no record; only their position in that version run says where they are.
- ``affine_`` is stored per channel (gamma, beta of shape (1, C, 1, 1), CONV mode), and
  always right after a ``con_4``, so it is folded into that convolution here.
- Padding of every convolution and pool is stored (0 for the stride-2 ones).
- ``add_prev`` of different shapes yields the larger shape, the smaller operand zero-padded at
  the end of the channel and spatial axes: in every down-sampling block the pooled shortcut
  has fewer channels, and at 8→3/4 and 4→1/2 pixels the convolution path is smaller.
- ``fc_2`` (no bias) stores its weights as (inputs, outputs): y = x @ W.

Converting the 22 MB file takes ~0.1 s on the 2-core dev VM (parse ~25 ms, graph and
onnx.checker ~75 ms); OpenVINO then compiles it in ~0.3 s. Descriptors match dlib's to
cosine > 0.9999999 (max abs difference ~4e-7) at ~3 ms a face against dlib-bin's ~58 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT = "chips"
OUTPUT = "descriptor"
OPSET = 17


class _Reader:
    """A cursor over dlib's serialisation format."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        start = self.pos + 1
        value = int.from_bytes(self.data[start:start + size], "little")
        self.pos = start + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        return float(np.ldexp(float(mantissa), self.int()))

    def str(self) -> str:
        size = self.int()
        text = self.data[self.pos:self.pos + size].decode("ascii")
        self.pos += size
        return text

    def bool(self) -> bool:
        char = self.data[self.pos:self.pos + 1]
        if char not in (b"0", b"1"):
            raise ValueError(f"bad bool {char!r} at byte {self.pos}")
        self.pos += 1
        return char == b"1"

    def expect(self, value: int, what: str) -> None:
        got = self.int()
        if got != value:
            raise ValueError(f"{what}: expected {value}, got {got} (byte {self.pos})")

    def tensor(self) -> np.ndarray:
        self.expect(2, "tensor version")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, "<f4", count, self.pos).reshape(shape)
        self.pos += 4 * count
        return values.astype(np.float32)

    def alias(self) -> tuple[int, ...]:
        """An alias_tensor: only a shape (it views the layer's params tensor)."""
        self.expect(1, "alias_tensor version")
        return tuple(self.int() for _ in range(4))


@dataclass
class _Layer:
    kind: str
    """"con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "fc" or "tag"/"skip"."""
    ints: tuple[int, ...] = ()
    weights: list[np.ndarray] = field(default_factory=list)


def _layer_details(r: _Reader) -> _Layer:
    """One layer's own record (the `details` part of dlib's add_layer)."""
    name = r.str()
    if name == "con_4":
        params = r.tensor().reshape(-1)
        ints = tuple(r.int() for _ in range(7))  # filters, nr, nc, stride y/x, padding y/x
        filters, bias = r.alias(), r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        n = int(np.prod(filters))
        if filters[0] != ints[0] or bias[1] != ints[0] or params.size != n + ints[0]:
            raise ValueError(f"inconsistent con_4 shapes {filters}, {bias}, {params.size}")
        return _Layer("con", ints, [params[:n].reshape(filters), params[n:n + ints[0]]])
    if name == "affine_":
        params = r.tensor().reshape(-1)
        gamma, beta = r.alias(), r.alias()
        if r.int() != 0 or gamma != beta or gamma[1] * 2 != params.size:
            raise ValueError("only per-channel (CONV mode) affine layers are supported")
        channels = gamma[1]
        return _Layer("affine", (), [params[:channels], params[channels:]])
    if name == "relu_":
        return _Layer("relu")
    if name in ("max_pool_2", "avg_pool_2"):
        return _Layer(name[:-2], tuple(r.int() for _ in range(6)))  # nr, nc, strides, pads
    if name == "add_prev_":
        return _Layer("add_prev")
    if name == "fc_2":
        outputs, inputs = r.int(), r.int()
        params = r.tensor()
        r.alias(), r.alias()
        if r.int() != 1:  # FC_NO_BIAS
            raise ValueError("only fc_no_bias is supported")
        for _ in range(4):
            r.float()
        return _Layer("fc", (inputs, outputs), [params.reshape(inputs, outputs)])
    raise ValueError(f"unsupported dlib layer {name!r} at byte {r.pos}")


def _layer_tail(r: _Reader) -> None:
    """add_layer's bookkeeping after the details: three flags and three (empty) tensors."""
    for _ in range(3):
        r.bool()
    for _ in range(3):
        if r.tensor().size:
            raise ValueError("unexpected cached tensor in the model file")


def read_dlib_resnet(path: Path) -> tuple[np.ndarray, list[_Layer]]:
    """Parse the .dat file: the input channel means and the layers in forward order."""
    r = _Reader(path.read_bytes())
    r.expect(1, "loss layer version")
    if (loss := r.str()) != "loss_metric_2":
        raise ValueError(f"not dlib's metric-learning net: loss {loss!r}")
    r.float(), r.float()  # margin, distance threshold
    wrappers = []
    while (version := r.int()) != 3:
        if version not in (1, 2):
            raise ValueError(f"unexpected layer version {version}")
        wrappers.append(version)
    if r.str() != "input_rgb_image_sized":
        raise ValueError("expected an input_rgb_image_sized input layer")
    means = np.array([r.float() for _ in range(3)], np.float32)
    if (r.int(), r.int()) != (150, 150):
        raise ValueError("expected 150×150 input chips")

    layers = [_layer_details(r)]  # the layer owning the input (version 3)
    _layer_tail(r)
    r.expect(1, "sample expansion factor")
    for version in reversed(wrappers):  # forward order
        if version == 1:
            layers.append(_Layer("tag"))
            continue
        layers.append(_layer_details(r))
        _layer_tail(r)
    if r.pos != len(r.data):
        raise ValueError(f"{len(r.data) - r.pos} trailing bytes")
    return means, layers


class _Graph:
    """Accumulates ONNX nodes and initialisers (the caller tracks each value's shape)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, value: np.ndarray) -> str:
        name = f"w{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: object) -> str:
        self.count += 1
        out = f"{op_type.lower()}{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _out_size(size: int, window: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - window) // stride


def dlib_resnet_onnx(path: Path) -> onnx.ModelProto:
    """The dlib face-recognition ResNet of `path` as an ONNX graph.

    Input "chips": uint8 RGB (N, 150, 150, 3), as dlib.get_face_chip returns them (the
    normalisation is in the graph). Output "descriptor": (N, 128) float32, not normalised,
    what dlib's compute_face_descriptor returns. N is dynamic.
    """
    means, layers = read_dlib_resnet(path)
    g = _Graph()
    x = g.op("Cast", [INPUT], to=TensorProto.FLOAT)
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    x = g.op("Sub", [x, g.const(means.reshape(1, 3, 1, 1))])
    x = g.op("Mul", [x, g.const(np.array(1 / 256, np.float32))])  # exact: a power of two
    shape = (3, 150, 150)

    # dlib's residual blocks, forward: tag1, the block, then add_prev1 (adds tag1); or
    # tag1, the block, tag2, skip1 (back to tag1), avg_pool, add_prev2 (adds tag2). A run of
    # one wrapper is a tag1, a run of two is tag2 + skip1.
    tags: list[tuple[str, tuple[int, int, int]]] = []
    pending: tuple[str, tuple[int, int, int]] | None = None
    i = 0
    while i < len(layers):
        layer = layers[i]
        if layer.kind == "tag":
            run = 1
            while i + run < len(layers) and layers[i + run].kind == "tag":
                run += 1
            if run == 1:
                tags = [(x, shape)]
                pending = tags[0]
            elif run == 2 and tags:
                pending = (x, shape)
                x, shape = tags[0]
            else:
                raise ValueError(f"unexpected run of {run} tag/skip layers")
            i += run
            continue
        if layer.kind == "con":
            filters, nr, nc, sy, sx, py, px = layer.ints
            weight, bias = layer.weights
            if i + 1 < len(layers) and layers[i + 1].kind == "affine":
                gamma, beta = layers[i + 1].weights
                weight = weight * gamma.reshape(-1, 1, 1, 1)
                bias = bias * gamma + beta
                i += 1
            x = g.op("Conv", [x, g.const(weight), g.const(bias)], kernel_shape=[nr, nc],
                     strides=[sy, sx], pads=[py, px, py, px])
            shape = (filters, _out_size(shape[1], nr, sy, py), _out_size(shape[2], nc, sx, px))
        elif layer.kind == "affine":
            raise ValueError("an affine layer not after a convolution")
        elif layer.kind == "relu":
            x = g.op("Relu", [x])
        elif layer.kind in ("max_pool", "avg_pool"):
            nr, nc, sy, sx, py, px = layer.ints
            if layer.kind == "avg_pool" and nr == 0 and nc == 0:  # avg_pool_everything
                x = g.op("GlobalAveragePool", [x])
                shape = (shape[0], 1, 1)
            else:
                op = "MaxPool" if layer.kind == "max_pool" else "AveragePool"
                x = g.op(op, [x], kernel_shape=[nr, nc], strides=[sy, sx],
                         pads=[py, px, py, px])
                shape = (shape[0], _out_size(shape[1], nr, sy, py),
                         _out_size(shape[2], nc, sx, px))
        elif layer.kind == "add_prev":
            if pending is None:
                raise ValueError("add_prev without a tag")
            other, other_shape = pending
            target = tuple(max(a, b) for a, b in zip(shape, other_shape, strict=True))
            x = g.op("Add", [_zero_pad(g, x, shape, target), _zero_pad(g, other, other_shape,
                                                                          target)])
            shape, pending = target, None
        elif layer.kind == "fc":
            inputs, _ = layer.ints
            if shape[0] * shape[1] * shape[2] != inputs:
                raise ValueError(f"fc expects {inputs} inputs, the net gives {shape}")
            x = g.op("Flatten", [x], axis=1)
            x = g.op("MatMul", [x, g.const(layer.weights[0])])
        i += 1
    g.nodes[-1].output[0] = OUTPUT

    graph = helper.make_graph(
        g.nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["N", 150, 150, 3])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", layers[-1].ints[1]])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="facelens.models.dlib_net")
    onnx.checker.check_model(model)
    return model


def _zero_pad(g: _Graph, x: str, shape: tuple[int, ...], target: tuple[int, ...]) -> str:
    """dlib's add_prev semantics: a smaller operand counts as zero beyond its end."""
    if shape == target:
        return x
    ends = [0, *(t - s for s, t in zip(shape, target, strict=True))]
    pads = np.array([0, 0, 0, 0, *ends], np.int64)
    return g.op("Pad", [x, g.const(pads)], mode="constant")
