"""What computes SFace's numbers under a `settings.runtime`, answered without loading a model
runtime where the CPU's flags tell (so `facelens models` starts fast)."""

from __future__ import annotations

import platform
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from facelens.settings import Runtime

Precision = Literal["bf16", "f32"]
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


_core: list[Any] = []
_core_lock = threading.Lock()


def openvino_core() -> Any:
    """The process's OpenVINO Core, made once. Before any model runs, its numpy bridge is
    initialised here, in one thread: pybind11 does it on first use, and two threads first using
    it at once deadlock (one holds the GIL waiting for the static the other initialises, which
    waits for the GIL; 1 in ~35 cold runs of 8 threads calling `verify` hung for good)."""
    with _core_lock:
        if not _core:
            import numpy as np
            import openvino as ov

            _ = ov.Tensor(np.zeros(1, np.float32)).data  # numpy bridge initialised now
            _core.append(ov.Core())
        return _core[0]


def _cpu_flags() -> frozenset[str] | None:
    """The x86 CPU's feature flags from /proc/cpuinfo (None where there is no such file)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return None


@lru_cache(maxsize=1)
def openvino_precision() -> Precision:
    """bf16 where the CPU computes it natively (AVX512-BF16 or AMX), else f32: read from the
    CPU's flags on Linux x86, else asked of OpenVINO (its OPTIMIZATION_CAPABILITIES)."""
    flags = _cpu_flags()
    if flags is not None:
        return "bf16" if flags & _BF16_FLAGS else "f32"
    capabilities = openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in capabilities else "f32"


def openvino_precision_for(runtime: Runtime) -> Precision | None:
    """The OpenVINO inference precision of `runtime` (None: not an OpenVINO runtime)."""
    if runtime == "openvino":
        return "f32"
    return openvino_precision() if runtime == "openvino-bf16" else None


def runtime_label(runtime: Runtime) -> str:
    """What computes the numbers under `runtime`: "openvino-f32", "openvino-bf16" (or f32 on
    a CPU without bf16) or "onnxruntime"."""
    precision = openvino_precision_for(runtime)
    return f"openvino-{precision}" if precision else "onnxruntime"
