"""One small lazy, thread-safe holder for a model session (Immich's models/base.py is the model).

The weights are located and checked, and the session opened, on first use only, once per
process, however many threads ask at the same time.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Generic, TypeVar

import onnx
import onnxruntime as ort

from facelens.models.registry import model_path

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

    @property
    def loaded(self) -> bool:
        return self._session is not None


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
