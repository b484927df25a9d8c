"""`ScanIndex`: every face's 4-bit code scored on the CPU's AMX tiles (or, without them, with
AVX-512 VNNI), the best candidates re-scored on float16 vectors. The large-gallery index where
the CPU has either.

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

from facelens.gallery.index import (
    Ids,
    Vectors,
    _as_batch,
    _as_ids,
    _as_queries,
    _no_results,
    _return_freed_memory,
    _RowMap,
    _write,
    top_k,
)

_KERNEL = Path(__file__).with_name("scan_kernel.so")  # built by `make setup`
_FIT_AT = 1_000  # faces before the principal axes are fitted (identity axes below)
_FIT_SAMPLE = 65_536  # faces the axes and scales are fitted on
_LANES = 64  # code dimensions come in tiles of 64 bytes
_BLOCK = 16  # faces per block of the packed layout
_ZERO = 0x88  # a byte of two 4-bit codes 0 (stored as value + 8)
_LEVELS = 7.5  # 4-bit values -8..7: an axis's clip range is spread over 7.5 steps each way
_CLIP = 2.5  # standard deviations of an axis coded before clipping (r@10 0.995 at 1M)


@cache
def _kernel() -> tuple[ctypes.CDLL, tuple[str, ...]] | None:
    """The compiled scan and the units it can run on here, best first: "amx" (int8 tiles) and
    "vnni" (AVX-512 VNNI); None where it was not built or the CPU has neither."""
    flags = set(next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), "").split()) \
        if Path("/proc/cpuinfo").exists() else set()
    if not {"avx512f", "avx512bw", "avx512vl"} <= flags or not _KERNEL.exists():
        return None
    lib = ctypes.CDLL(str(_KERNEL))  # a ctypes CDLL call releases the GIL while it runs
    found = tuple(unit for unit, ok in (
        ("amx", {"amx_tile", "amx_int8"} <= flags and lib.fl_scan_enable() == 0),
        ("vnni", "avx512_vnni" in flags)) if ok)
    if not found:
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.fl_scan_search.argtypes = [p, i64, i32, p, p, i32, i32, i32, p, p]
    lib.fl_scan_search_vnni.argtypes = lib.fl_scan_search.argtypes
    lib.fl_rescore.argtypes = [p, i32, p, i32, p, i32, p]
    lib.fl_project.argtypes = [p, i32, i32, p, p, i32, p]
    return lib, found


def units() -> tuple[str, ...]:
    """The units `ScanIndex` can run on here, best first (empty: it cannot run here)."""
    kernel = _kernel()
    return kernel[1] if kernel else ()


def available() -> bool:
    """Whether `ScanIndex` can run here (AMX int8 tiles or AVX-512 VNNI, and the built kernel)."""
    return bool(units())


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
    docstring: why, how). `unit`: "amx" or "vnni", the best one here by default."""

    _magic = b"FLSCAN1\n"
    CODE_SHARE = 0.75  # of the principal axes coded (rounded up to a multiple of 64)
    SWEEP = ({"candidates": 8}, {"candidates": 16}, {"candidates": 64})
    """Settings `facelens bench search` times beside the default."""

    def __init__(self, dim: int, *, candidates: int = 32, unit: str | None = None) -> None:
        here = units()
        if not here or (unit is not None and unit not in here):
            raise RuntimeError(f"ScanIndex needs a CPU with {unit or 'AMX int8 or AVX-512 VNNI'}"
                               " and the kernel built by `make setup` "
                               "(src/facelens/gallery/scan_kernel.c)")
        self._dim, self.candidates = dim, candidates
        self._unit = unit or here[0]
        self._threads = len(os.sched_getaffinity(0))
        self._vectors = np.zeros((0, dim), np.float16)  # row -> float16 vector (capacity)
        self._labels = np.empty(0, np.int64)  # row -> face id, -1 once removed (n rows)
        self._row = _RowMap()
        self._n = 0  # rows in use
        self._blocks = _packed_blocks(0, _LANES)  # 4-bit codes by row, the kernel's layout
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
        """Axes, 4-bit scales and code width from `sample` (identity axes under `_FIT_AT`)."""
        if len(sample) < _FIT_AT:
            self._code_dims = -(-self._dim // _LANES) * _LANES
            self._axes = np.eye(self._dim, self._code_dims, dtype=np.float32)
            self._mean = np.zeros(self._dim, np.float32)
            # unit vectors: about 1/sqrt(dim) on each axis
            self._scale = np.full(self._code_dims, _CLIP / _LEVELS / np.sqrt(self._dim),
                                  np.float32)
        else:
            self._code_dims = -(-round(self._dim * self.CODE_SHARE) // _LANES) * _LANES
            self._mean = sample.mean(axis=0)
            values, vectors = np.linalg.eigh(np.cov((sample - self._mean).T))
            axes = vectors[:, np.argsort(values)[::-1][:self._code_dims]].astype(np.float32)
            self._axes = np.zeros((self._dim, self._code_dims), np.float32)
            self._axes[:, :axes.shape[1]] = axes
            spread = ((sample - self._mean) @ self._axes).std(axis=0)
            # a clipped tail value only ranks its face a little low; the re-rank is exact
            self._scale = np.maximum(spread * _CLIP / _LEVELS, 1e-6).astype(np.float32)
        self._fitted_at = len(sample)
        self._repack()

    def _repack(self) -> None:
        """Codes of every row, for the current axes and capacity."""
        capacity = len(self._vectors)
        self._blocks[:] = _ZERO  # why: old codes must not linger in freed memory either
        self._blocks = _packed_blocks(capacity, self._code_dims)
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
        blocks = _packed_blocks(capacity, self._code_dims)
        blocks[:len(self._blocks)] = self._blocks
        self._vectors[:] = 0  # why: the old copies must not linger in freed memory
        self._blocks[:] = _ZERO
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
            self._blocks[at // _BLOCK, :, :, at % _BLOCK, :] = _ZERO
        return len(rows)

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
        kernel = _kernel()
        assert kernel is not None  # checked when the index was made
        lib = kernel[0]
        keep = max(self.candidates, k)
        # code · (q @ axes · scale) = (face − mean) @ axes · (q @ axes): the score less q · mean
        padded = _aligned((-(-len(q) // 16) * 16, self._code_dims), 0).view(np.int8)
        lib.fl_project(_ptr(q), len(q), self._dim, _ptr(self._axes), _ptr(self._scale),
                       self._code_dims, _ptr(padded))
        found_scores = np.empty((len(q), self._threads * keep), np.int32)
        rows = np.empty((len(q), self._threads * keep), np.int64)
        scan = lib.fl_scan_search if self._unit == "amx" else lib.fl_scan_search_vnni
        scan(_ptr(self._blocks), self._n, self._code_dims, _ptr(self._labels), _ptr(padded),
             len(q), keep, self._threads, _ptr(found_scores), _ptr(rows))
        if rows.shape[1] > 2 * keep:  # many threads: re-score only the best 2·keep codes
            cols = np.argpartition(-found_scores, 2 * keep - 1, axis=1)[:, :2 * keep]
            rows = np.ascontiguousarray(np.take_along_axis(rows, cols, axis=1))
        scores = np.empty(rows.shape, np.float32)
        lib.fl_rescore(_ptr(self._vectors), self._dim, _ptr(q), len(q), _ptr(rows),
                       rows.shape[1], _ptr(scores))
        kk = min(k, rows.shape[1])
        best, cols = top_k(scores, kk)
        found = np.take_along_axis(rows, cols, axis=1)
        out_scores, out_ids = _no_results(len(q), k)
        hit = np.isfinite(best)
        out_scores[:, :kk] = np.where(hit, best, -np.inf)
        out_ids[:, :kk] = np.where(hit, self._labels[np.maximum(found, 0)], -1)
        return out_scores, out_ids

    def save(self, path: Path) -> None:
        """A magic line, a JSON header, then the axes, scales, labels and float16 rows (.npy);
        the codes are re-made from the rows at load."""
        if self._n - len(self._row) > self._n // 4:
            self._compact()
        header = json.dumps({"dim": self._dim, "candidates": self.candidates,
                             "fitted_at": self._fitted_at}).encode()

        def write(f: Any) -> None:
            f.write(self._magic)
            np.save(f, np.frombuffer(header, np.uint8), allow_pickle=False)
            for array in (self._mean, self._axes, self._scale, self._labels,
                          self._vectors[:self._n]):
                np.save(f, array, allow_pickle=False)

        _write(path, write)

    @classmethod
    def load(cls, path: Path) -> Self:
        with path.open("rb") as f:
            if f.read(len(cls._magic)) != cls._magic:
                raise ValueError(f"{path} is not a facelens scan index")
            header = json.loads(np.load(f, allow_pickle=False).tobytes())
            mean, axes, scale, labels, vectors = (np.load(f, allow_pickle=False)
                                                  for _ in range(5))
        index = cls(int(header["dim"]), candidates=int(header["candidates"]))
        index._mean, index._axes, index._scale = mean, axes, scale
        index._code_dims, index._fitted_at = axes.shape[1], int(header["fitted_at"])
        index._vectors, index._labels, index._n = vectors, labels, len(labels)
        index._row = _RowMap(labels)
        index._repack()
        return index
