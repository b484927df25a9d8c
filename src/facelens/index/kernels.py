"""The sign scan's C kernels, built by `make setup` and called through ctypes (a ctypes call
releases the GIL while it runs): scan_avx512.so holds the scan for AVX-512 with VPOPCNTDQ
(Ice Lake, Zen 4 and later); scan_avx2.so the scan for AVX2, the queries' bits and the float16
re-rank, which the AVX-512 scan uses too. Sources: sign_scan.c (compiled once for each) and
scan_avx2.c; layout and query record: sign_scan.h."""

from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from facelens.index.base import Ids, Vectors

_AVX512 = Path(__file__).with_name("scan_avx512.so")
_AVX2 = Path(__file__).with_name("scan_avx2.so")


def _cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return set()
    return set(next((line for line in cpuinfo.read_text().splitlines()
                     if line.startswith("flags")), "").split())


@cache
def _libraries() -> tuple[ctypes.CDLL | None, ctypes.CDLL | None, tuple[str, ...]]:
    """(the AVX-512 library, the AVX2 library, the units that can run here, best first:
    "avx512", "avx2"). A library is None where it was not built or this CPU cannot run it."""
    flags = _cpu_flags()
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    search_args = [p, i64, p, i32, i32, i32, p, p]
    avx2 = None
    if {"avx2", "fma", "f16c", "popcnt"} <= flags and _AVX2.exists():
        avx2 = ctypes.CDLL(str(_AVX2))
        avx2.fl_rescore.argtypes = [p, i32, p, i32, p, i32, i32, p, p]
        avx2.fl_sign_search_avx2.argtypes = search_args
        avx2.fl_sign_queries.argtypes = [p, i32, i32, p, p, p]
    avx512 = None
    if (avx2 is not None and _AVX512.exists()
            and {"avx512f", "avx512bw", "avx512vl", "avx512_vpopcntdq"} <= flags):
        avx512 = ctypes.CDLL(str(_AVX512))
        avx512.fl_sign_search_avx512.argtypes = search_args
    found = tuple(unit for unit, library in (("avx512", avx512), ("avx2", avx2)) if library)
    return avx512, avx2, found


def units() -> tuple[str, ...]:
    """The units the sign scan can run on here, best first (empty: it cannot run here)."""
    return _libraries()[2]


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def _avx2() -> ctypes.CDLL:
    avx2 = _libraries()[1]
    assert avx2 is not None  # every unit needs it: checked when the index was made
    return avx2


def aligned(shape: tuple[int, ...], fill: int) -> npt.NDArray[np.uint8]:
    """Bytes at a 64-byte boundary: numpy's large arrays sit 16 bytes past one, which puts
    every 64-byte word the kernels load across two cache lines."""
    size = int(np.prod(shape))
    raw = np.full(size + 64, fill, np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset:offset + size].reshape(shape)


def sign_queries(queries: Vectors, mean: Vectors, axes: Vectors, out: np.ndarray) -> None:
    """Fill `out` (one sign_query record a query) from `queries` centred on `mean` and
    projected on `axes` (dim x 256)."""
    _avx2().fl_sign_queries(_ptr(queries), len(queries), queries.shape[1], _ptr(mean),
                            _ptr(axes), _ptr(out))


def sign_search(unit: str, blocks: npt.NDArray[np.uint8], n: int, queries: np.ndarray,
                keep: int, threads: int, scores: npt.NDArray[np.int32], rows: Ids) -> None:
    """Each query's best `keep` of the first `n` faces in `blocks`, per thread, on `unit`."""
    library = _libraries()[0] if unit == "avx512" else _avx2()
    assert library is not None  # checked when the index was made
    getattr(library, f"fl_sign_search_{unit}")(_ptr(blocks), n, _ptr(queries), len(queries),
                                               keep, threads, _ptr(scores), _ptr(rows))


def rescore(vectors: npt.NDArray[np.float16], queries: Vectors, rows: Ids,
            k: int) -> tuple[Vectors, Ids]:
    """Each query's best k of its candidate `rows` (-1: none) by the inner product with their
    float16 `vectors`, best first (score -inf, row -1 where fewer than k)."""
    best, found = np.empty((len(queries), k), np.float32), np.empty((len(queries), k), np.int64)
    _avx2().fl_rescore(_ptr(vectors), vectors.shape[1], _ptr(queries), len(queries), _ptr(rows),
                       rows.shape[1], k, _ptr(best), _ptr(found))
    return best, found
