"""`ScanIndex`: every face's 4-bit code scored on the CPU's AMX tiles (or, without them, with
AVX-512 VNNI), the best candidates re-scored on float16 vectors. No longer the large-gallery
index anywhere: the sign scan (sign_index.py), built on this class, is faster on AMX CPUs too
(docs/decisions.md); `facelens bench search --index scan` still times it.

Why a scan and not lists or a graph: face embeddings are near-isotropic (participation ratio
~110 in 256 dimensions) and a second photo sits at centred cosine 0.46–0.81 to the first, so
partitions must be probed widely and graph walks stop short (docs/decisions.md). A matrix
engine makes scoring every face cheap instead: 100 queries against 1M faces are ~21 G int8
multiply-adds, ~3 ms of TDPBSSD on 2 cores. What the scan pays beyond that is reading the
codes (hence 4 bits, unpacked in L1) and checking each score against its query's running
floor (one test per 16 x 16 tile in the common case); scan_kernel.c. With VNNI instead of
tiles the products are ~7x slower and are the whole cost (docs/decisions.md).

Codes: vectors are centred on the gallery mean (a shift every score of a query shares, so the
ranking is unchanged), rotated onto their principal axes and cut to the strongest
`CODE_SHARE` of them (a multiple of 64), each axis cut into 16 levels over ±2.5 standard
deviations. Queries are projected, scaled per axis and rounded to int8. The scan keeps
`candidates` faces per query and thread (at least k); those are re-scored exactly on the
float16 rows, so scores are float16 inner products like IVFIndex's. The axes are fitted on the
gallery when it reaches `_FIT_AT` faces and again each time it has grown 4x; smaller galleries
use the identity axes.

Removal blanks the face's code and zeroes its float16 row at once; `save` writes the float16
rows (codes are re-made at load) and compacts first once dead rows pass a quarter. Searches
may run concurrently; `add` and `remove` must not run beside them (the gallery serialises them).
"""

from __future__ import annotations

import ctypes
import json
import os
from functools import cache
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from facelens.index.indexes import (
    Ids,
    Vectors,
    _as_batch,
    _as_ids,
    _as_queries,
    _no_results,
    _return_freed_memory,
    _RowMap,
    _write,
)

_KERNEL = Path(__file__).with_name("scan_kernel.so")  # AMX, VNNI and AVX-512 sign scans
_AVX2 = Path(__file__).with_name("scan_avx2.so")  # sign scan and the shared float16 re-rank
_FIT_AT = 1_000  # faces before the principal axes are fitted (identity axes below)
_FIT_SAMPLE = 65_536  # faces the axes and scales are fitted on
_LANES = 64  # code dimensions come in tiles of 64 bytes
_BLOCK = 16  # faces per block of the packed layout
_ZERO = 0x88  # a byte of two 4-bit codes 0 (stored as value + 8)
_LEVELS = 7.5  # 4-bit values -8..7: an axis's clip range is spread over 7.5 steps each way
_CLIP = 2.5  # standard deviations of an axis coded before clipping (r@10 0.995 at 1M)


@cache
def _kernels() -> tuple[ctypes.CDLL | None, ctypes.CDLL | None, tuple[str, ...]]:
    """(the AVX-512 library, the AVX2 library, the units that can run here, best first):
    "amx" (int8 tiles), "vnni" (AVX-512 VNNI), then the sign scan's (sign_index.py)
    "avx512" (with VPOPCNTDQ: Ice Lake, Zen 4 and later) and "avx2". A library is None where
    it was not built or this CPU cannot run it."""
    flags = set(next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), "").split()) \
        if Path("/proc/cpuinfo").exists() else set()
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    avx2 = None
    if {"avx2", "fma", "f16c", "popcnt"} <= flags and _AVX2.exists():
        avx2 = ctypes.CDLL(str(_AVX2))  # a ctypes CDLL call releases the GIL while it runs
        avx2.fl_rescore.argtypes = [p, i32, p, i32, p, i32, i32, p, p]
        avx2.fl_sign_search_avx2.argtypes = [p, i64, p, i32, i32, i32, p, p]
        avx2.fl_sign_queries.argtypes = [p, i32, i32, p, p, p]
    scan = None
    if avx2 is not None and {"avx512f", "avx512bw", "avx512vl"} <= flags and _KERNEL.exists():
        scan = ctypes.CDLL(str(_KERNEL))
        scan.fl_scan_search.argtypes = [p, i64, i32, p, p, i32, i32, i32, p, p]
        scan.fl_scan_search_vnni.argtypes = scan.fl_scan_search.argtypes
        scan.fl_project.argtypes = [p, i32, i32, p, p, i32, p]
        scan.fl_sign_search_avx512.argtypes = avx2.fl_sign_search_avx2.argtypes
    found = tuple(unit for unit, ok in (
        ("amx", scan is not None and {"amx_tile", "amx_int8"} <= flags
         and scan.fl_scan_enable() == 0),
        ("vnni", scan is not None and "avx512_vnni" in flags),
        ("avx512", scan is not None and "avx512_vpopcntdq" in flags),
        ("avx2", avx2 is not None)) if ok)
    return scan, avx2, found


def units() -> tuple[str, ...]:
    """The units a scan index can run on here, best first (empty: neither can run here)."""
    return _kernels()[2]


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def _aligned(shape: tuple[int, ...], fill: int) -> npt.NDArray[np.uint8]:
    """Bytes at a 64-byte boundary: numpy's large arrays sit 16 bytes past one, which puts
    every 64-byte tile row across two cache lines (the scan runs ~1.4x slower)."""
    size = int(np.prod(shape))
    raw = np.full(size + 64, fill, np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset:offset + size].reshape(shape)


def _packed_blocks(faces: int, code_dims: int) -> npt.NDArray[np.uint8]:
    """Room for `faces` codes in the kernel's layout: block, tile, row pair, face, byte of 4
    (scan_kernel.c), every code 0 (nibbles of 8)."""
    pairs = -(-faces // (2 * _BLOCK))  # the kernel reads blocks two at a time
    return _aligned((2 * pairs, code_dims // _LANES, _BLOCK // 2, _BLOCK, 4), _ZERO)


class ScanIndex:
    """Exhaustive 4-bit scan on AMX tiles or AVX-512 VNNI with a float16 re-rank (module
    docstring: why, how). `unit`: "amx" or "vnni", the best one here by default.

    The code layout is four methods (`_blank`, `_encode`, `_erase`, `_candidates`) and the
    axes' choice (`_code_axes`); SignScanIndex (sign_index.py) swaps them for 1-bit codes."""

    _magic = b"FLSCAN1\n"
    UNITS = ("amx", "vnni")
    NEEDS = "AMX int8 or AVX-512 VNNI"
    _FILL = _ZERO  # a blank code byte
    _FITTED = ("_mean", "_axes", "_scale")  # what `_fit` makes, saved with the rows
    CODE_SHARE = 0.75  # of the principal axes coded (rounded up to a multiple of 64)
    CANDIDATES = 32
    SWEEP: tuple[dict[str, Any], ...] = (
        {"candidates": 8}, {"candidates": 16}, {"candidates": 64})
    """Settings `facelens bench search` times beside the default."""

    @classmethod
    def runs_here(cls) -> bool:
        """Whether this CPU has one of the index's units and its kernel was built."""
        return any(unit in units() for unit in cls.UNITS)

    def __init__(self, dim: int, *, candidates: int | None = None,
                 unit: str | None = None) -> None:
        here = [u for u in units() if u in self.UNITS]
        if not here or (unit is not None and unit not in here):
            raise RuntimeError(f"{type(self).__name__} needs a CPU with {unit or self.NEEDS}"
                               " and the kernels built by `make setup` "
                               "(src/facelens/index/*.c)")
        self._dim = dim
        self.candidates = candidates or self.CANDIDATES
        self._unit = unit or here[0]
        self._threads = len(os.sched_getaffinity(0))
        self._vectors = np.zeros((0, dim), np.float16)  # row -> float16 vector (capacity)
        self._labels = np.empty(0, np.int64)  # row -> face id, -1 once removed (n rows)
        self._row = _RowMap()
        self._n = 0  # rows in use
        self._blocks = np.empty(0, np.uint8)  # codes by row, in the kernel's layout (_fit)
        self._fit(np.zeros((0, dim), np.float32))

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def params(self) -> dict[str, Any]:
        return {"backend": f"4-bit {self._unit.upper()} scan of {self._code_dims} of "
                           f"{self._dim} principal axes + float16 re-rank",
                "candidates": self.candidates, "threads": self._threads}

    def __len__(self) -> int:
        return len(self._row)

    def ids(self) -> Ids:
        return self._labels[self._labels >= 0]

    def _fit(self, sample: Vectors) -> None:
        """Mean, axes and scales from `sample` of the gallery's faces (identity axes under
        `_FIT_AT`); the next fit is due when the gallery has grown 4x."""
        if len(sample) < _FIT_AT:
            self._mean = np.zeros(self._dim, np.float32)
            self._code_axes(np.eye(self._dim, dtype=np.float32), None)
        else:
            self._mean = sample.mean(axis=0)
            values, vectors = np.linalg.eigh(np.cov((sample - self._mean).T))
            axes = vectors[:, np.argsort(values)[::-1]].astype(np.float32)
            self._code_axes(axes, sample - self._mean)
        # why the gallery's size, not the sample's: the sample is capped, so 4x the sample
        # would call for a refit (and a re-coding of every face) at each add past 262k faces
        self._fitted_at = self._n
        self._repack()

    def _code_axes(self, axes: Vectors, centred: Vectors | None) -> None:
        """`_axes`, `_scale`, `_code_dims` from the principal axes (dim x dim, strongest
        first) and the centred sample they came from (None: identity axes, no sample)."""
        if centred is None:
            self._code_dims = -(-self._dim // _LANES) * _LANES
            # unit vectors: about 1/sqrt(dim) on each axis
            self._scale = np.full(self._code_dims, _CLIP / _LEVELS / np.sqrt(self._dim),
                                  np.float32)
        else:
            self._code_dims = -(-round(self._dim * self.CODE_SHARE) // _LANES) * _LANES
        self._axes = np.zeros((self._dim, self._code_dims), np.float32)
        kept = axes[:, :self._code_dims]
        self._axes[:, :kept.shape[1]] = kept
        if centred is not None:
            spread = (centred @ self._axes).std(axis=0)
            # a clipped tail value only ranks its face a little low; the re-rank is exact
            self._scale = np.maximum(spread * _CLIP / _LEVELS, 1e-6).astype(np.float32)

    def _blank(self, capacity: int) -> npt.NDArray[np.uint8]:
        """Blank codes for `capacity` faces in the kernel's layout."""
        return _packed_blocks(capacity, self._code_dims)

    def _repack(self) -> None:
        """Codes of every row, for the current axes and capacity."""
        self._blocks[:] = self._FILL  # why: old codes must not linger in freed memory either
        self._blocks = self._blank(len(self._vectors))
        self._encode(np.arange(self._n))

    def _codes(self, vectors: Vectors) -> npt.NDArray[np.uint8]:
        """Each vector's bytes in the packed layout: (faces, tile, row pair, byte of 4)."""
        projected = (vectors - self._mean) @ self._axes / self._scale
        values = (np.clip(np.rint(projected), -8, 7) + 8).astype(np.uint8)
        tiles = values.reshape(len(vectors), -1, _BLOCK, 4)
        return tiles[:, :, :_BLOCK // 2] | (tiles[:, :, _BLOCK // 2:] << 4)

    def _encode(self, rows: npt.NDArray[np.int64]) -> None:
        """(Re)write the codes of these rows from their float16 vectors."""
        for start in range(0, len(rows), 65_536):
            part = rows[start:start + 65_536]
            codes = self._codes(self._vectors[part].astype(np.float32))
            # face f -> block f//16, column f%16 of each tile's row pairs
            self._blocks[part // _BLOCK, :, :, part % _BLOCK, :] = codes

    def _grow(self, rows: int) -> None:
        capacity = len(self._vectors)
        if rows <= capacity:
            return
        capacity = max(rows, capacity + capacity // 2, _BLOCK)
        vectors = np.zeros((capacity, self._dim), np.float16)
        vectors[:self._n] = self._vectors[:self._n]
        blocks = self._blank(capacity)
        blocks[:len(self._blocks)] = self._blocks
        self._vectors[:] = 0  # why: the old copies must not linger in freed memory
        self._blocks[:] = self._FILL
        self._vectors, self._blocks = vectors, blocks
        _return_freed_memory()

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        ids_, vecs = _as_batch(ids, vectors, self._dim)
        self.remove(ids_)
        if not len(ids_):
            return
        first = self._n
        self._grow(first + len(ids_))
        self._vectors[first:first + len(ids_)] = vecs
        self._labels = np.concatenate([self._labels, ids_])
        self._row.add(ids_, first)
        self._n += len(ids_)
        if len(self._row) >= max(_FIT_AT, 4 * self._fitted_at):
            self._compact(refit=True)
        else:
            self._encode(np.arange(first, self._n))

    def remove(self, ids: npt.ArrayLike) -> int:
        rows = self._row.pop(_as_ids(ids))
        if rows:  # erased now, not at the next compaction
            at = np.asarray(rows, np.int64)
            self._labels[at] = -1
            self._vectors[at] = 0
            self._erase(at)
        return len(rows)

    def _erase(self, rows: npt.NDArray[np.int64]) -> None:
        """Blank the codes of these rows."""
        self._blocks[rows // _BLOCK, :, :, rows % _BLOCK, :] = _ZERO

    def _compact(self, refit: bool = False) -> None:
        """Keep only live rows (and refit the axes on them if asked)."""
        live = np.flatnonzero(self._labels >= 0)
        kept = self._vectors[live]
        self._vectors[:] = 0
        self._vectors, self._labels, self._n = kept, self._labels[live], len(live)
        self._row = _RowMap(self._labels)
        if refit:
            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(self._n, min(self._n, _FIT_SAMPLE), replace=False))
            self._fit(kept[sample].astype(np.float32))
        else:
            self._repack()
        _return_freed_memory()

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[Vectors, Ids]:
        q = _as_queries(queries, self._dim, k)
        if not len(self._row):
            return _no_results(len(q), k)
        keep = max(self.candidates, k)
        found_scores = np.empty((len(q), self._threads * keep), np.int32)
        rows = np.empty((len(q), self._threads * keep), np.int64)
        self._candidates(q, keep, found_scores, rows)
        if rows.shape[1] > 2 * keep:  # many threads: re-score only the best 2·keep codes
            cols = np.argpartition(-found_scores, 2 * keep - 1, axis=1)[:, :2 * keep]
            rows = np.ascontiguousarray(np.take_along_axis(rows, cols, axis=1))
        kk = min(k, rows.shape[1])
        best, found = np.empty((len(q), kk), np.float32), np.empty((len(q), kk), np.int64)
        avx2 = _kernels()[1]
        assert avx2 is not None  # checked when the index was made
        avx2.fl_rescore(_ptr(self._vectors), self._dim, _ptr(q), len(q), _ptr(rows),
                        rows.shape[1], kk, _ptr(best), _ptr(found))
        out_scores, out_ids = _no_results(len(q), k)
        out_scores[:, :kk] = best
        out_ids[:, :kk] = np.where(found >= 0, self._labels[np.maximum(found, 0)], -1)
        return out_scores, out_ids

    def _candidates(self, q: Vectors, keep: int, scores: npt.NDArray[np.int32],
                    rows: npt.NDArray[np.int64]) -> None:
        """Each query's best `keep` rows per thread by their codes into `rows` (-1: none),
        with the codes' scores (higher is nearer) in `scores`."""
        scan = _kernels()[0]
        assert scan is not None  # checked when the index was made
        # code · (q @ axes · scale) = (face − mean) @ axes · (q @ axes): the score less q · mean
        padded = _aligned((-(-len(q) // 16) * 16, self._code_dims), 0).view(np.int8)
        scan.fl_project(_ptr(q), len(q), self._dim, _ptr(self._axes), _ptr(self._scale),
                        self._code_dims, _ptr(padded))
        kernel = scan.fl_scan_search if self._unit == "amx" else scan.fl_scan_search_vnni
        kernel(_ptr(self._blocks), self._n, self._code_dims, _ptr(self._labels), _ptr(padded),
               len(q), keep, self._threads, _ptr(scores), _ptr(rows))

    def save(self, path: Path) -> None:
        """A magic line, a JSON header, then the fitted arrays (`_FITTED`), labels and float16
        rows (.npy); the codes are re-made from the rows at load."""
        if self._n - len(self._row) > self._n // 4:
            self._compact()
        header = json.dumps({"dim": self._dim, "candidates": self.candidates,
                             "fitted_at": self._fitted_at}).encode()

        def write(f: Any) -> None:
            f.write(self._magic)
            np.save(f, np.frombuffer(header, np.uint8), allow_pickle=False)
            for array in (*(getattr(self, name) for name in self._FITTED), self._labels,
                          self._vectors[:self._n]):
                np.save(f, array, allow_pickle=False)

        _write(path, write)

    @classmethod
    def load(cls, path: Path) -> Self:
        with path.open("rb") as f:
            if f.read(len(cls._magic)) != cls._magic:
                raise ValueError(f"{path} is not a facelens scan index")
            header = json.loads(np.load(f, allow_pickle=False).tobytes())
            fitted = [np.load(f, allow_pickle=False) for _ in cls._FITTED]
            labels, vectors = (np.load(f, allow_pickle=False) for _ in range(2))
        index = cls(int(header["dim"]), candidates=int(header["candidates"]))
        for name, array in zip(cls._FITTED, fitted, strict=True):
            setattr(index, name, array)
        index._code_dims, index._fitted_at = index._axes.shape[1], int(header["fitted_at"])
        index._vectors, index._labels, index._n = vectors, labels, len(labels)
        index._row = _RowMap(labels)
        index._repack()
        return index
