"""One small lazy, thread-safe holder for a model session (Immich's models/base.py is the model).

The weights are located and checked, and the session opened, on first use only, once per
process, however many threads ask at the same time. Sessions are onnxruntime's, or OpenVINO's
behind the same `run(None, feed)` call (`openvino_model`).
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import onnx
import onnxruntime as ort

from facelens.models.registry import model_path
from facelens.models.runtime import Precision, openvino_core, openvino_precision

S = TypeVar("S")


class LazyModel(ABC, Generic[S]):
    """Subclasses set `name` (a key of registry.CARDS) and implement `_open`."""

    name: str

    def __init__(self) -> None:
        self._session: S | None = None
        self._lock = threading.Lock()

    @abstractmethod
    def _open(self, path: Path) -> S: ...

    @property
    def session(self) -> S:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._open(model_path(self.name))
        return self._session


def onnx_session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session for an in-memory model."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def make_batch_dynamic(model: onnx.ModelProto, *, spatial: bool = False) -> onnx.ModelProto:
    """Let the first (and with `spatial`, the last two) input dims vary; drop stale shapes."""
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims:
            continue
        dims[0].dim_param = "N"
        if spatial and len(dims) == 4:
            dims[2].dim_param = f"{value.name}_H"
            dims[3].dim_param = f"{value.name}_W"
    del model.graph.value_info[:]
    return model


class OpenVINOModel:
    """A compiled OpenVINO CPU model called like an onnxruntime session: `run(None, feed)`.

    An infer request holds its own buffers, so each call borrows one from a pool (a new one
    when every request is busy) and returns it: concurrent callers never share a request.
    """

    def __init__(self, compiled: Any, precision: Precision) -> None:
        self._compiled = compiled
        self.precision = precision
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]
            ) -> list[np.ndarray]:
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            result = request.infer(feed)  # outputs are copied out (share_outputs=False)
        finally:
            self._idle.put(request)
        outputs = self._compiled.outputs
        if output_names is not None:
            outputs = [o for name in output_names for o in outputs if name in o.get_names()]
        return [np.asarray(result[o]) for o in outputs]


def openvino_model(model: onnx.ModelProto, threads: int,
                   precision: Precision | None = None) -> OpenVINOModel:
    """An OpenVINO CPU model compiled from an in-memory ONNX graph (dynamic dims stay dynamic).

    `precision` defaults to `openvino_precision()`. CPU pinning is off: on a shared machine, or
    with several 1-thread worker processes, pinned threads pile onto the same core."""
    core = openvino_core()
    chosen: Precision = precision or openvino_precision()
    compiled = core.compile_model(core.read_model(model.SerializeToString()), "CPU", {
        "INFERENCE_PRECISION_HINT": chosen,
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,
    })
    return OpenVINOModel(compiled, chosen)
