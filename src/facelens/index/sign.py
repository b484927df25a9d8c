"""`SignScanIndex`: every face's 256 sign bits, a filter on each query's strongest directions
scanned with AVX-512 or AVX2, the nearest of the faces it passes by a weighted Hamming distance
re-ranked on float16 vectors; the large-gallery index on x86-64 CPUs.

Why a scan and not lists or a graph: face embeddings are near-isotropic (participation ratio
~110 in 256 dimensions) and a second photo sits at centred cosine 0.46–0.81 to the first, so
partitions must be probed widely and graph walks stop short (docs/decisions.md). Scoring every
face is cheap instead once a face is a few bytes read in order.

Why signs: on the bench's face-like vectors (`facelens bench search`), the signs of a face's
centred vector on the principal axes keep the mate exact search names among a thread's 256
nearest of 500k faces by Hamming distance (docs/decisions.md). The codes (sign_codes.py) use
only axes that carry spread, and fill up to 256 bits with fixed random rotations of them.

Why a filter: a second photo's sign rarely flips where the query's projection is large, so
counting a face's bits unlike the query's on only its 64 strongest directions lets ~0.5% of
strangers and nearly every mate through (sign_scan.c counts 512 or 256 faces at once across
registers). The faces that pass get a full count from their 32-byte codes, a bit unlike the
query's counting 3 on its strongest directions and 1 elsewhere: nearer the float ranking than
plain Hamming, so each thread keeps 128 candidates, re-scored exactly on the float16 rows (so
scores are float16 inner products). How many may pass is a share of the faces: the
`pass_share` of a large gallery, more in a small one (at least 16 x `candidates` a thread),
turned into a count of unlike bits by `_passing`, the share of faces each count lets through,
measured when the axes are fitted.

The axes are fitted on the gallery when it reaches `_FIT_AT` faces and again each time it has
grown 4x; smaller galleries use the identity axes. Removal blanks the face's code and zeroes its
float16 row at once; `save` writes the float16 rows (codes are re-made at load) and compacts
first once dead rows pass a quarter. Searches may run concurrently; `add` and `remove` must not
run beside them (the gallery serialises them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Self

import numpy as np
import numpy.typing as npt

from facelens.geometry import l2_normalize
from facelens.index import kernels, sign_codes
from facelens.index.base import (
    Ids,
    RowMap,
    Vectors,
    as_batch,
    as_ids,
    as_queries,
    no_results,
    read_magic,
    return_freed_memory,
    write_atomic,
)
from facelens.index.sign_codes import STRONG

_FIT_AT = 1_000  # faces before the principal axes are fitted (identity axes below)
_FIT_SAMPLE = 65_536  # faces the axes are fitted on
_FITTED = ("_mean", "_axes", "_passing")  # what `_fit` makes, saved with the rows


class SignScanIndex:
    """A filter on each query's strongest sign bits, then a full count of unlike bits
    weighted toward those, on AVX-512 or AVX2 (`unit`: "avx512" or "avx2", the best one here
    by default), with a float16 re-rank (module docstring: why). `candidates`: faces a thread
    keeps per query; `pass_share`: the share of a large gallery's faces its filter passes."""

    _magic = b"FLSIGN2\n"
    UNITS = ("avx512", "avx2")
    NEEDS = "AVX-512 or AVX2"
    CANDIDATES = 128
    # Between the shares that 20 and 21 unlike bits pass on fused and SFace faces (~0.48%,
    # ~0.9%), so that a gallery's own measurement lands on 20 (docs/decisions.md)
    PASS_SHARE = 0.006
    SWEEP = ({"candidates": 64, "pass_share": PASS_SHARE},
             {"candidates": 256, "pass_share": PASS_SHARE},
             {"candidates": CANDIDATES, "pass_share": 0.003},
             {"candidates": CANDIDATES, "pass_share": 0.012})
    """Settings `facelens bench search` times beside the default."""

    @classmethod
    def runs_here(cls) -> bool:
        """Whether this CPU has one of the index's units and its kernel was built."""
        return bool(kernels.units())

    def __init__(self, dim: int, *, candidates: int | None = None, unit: str | None = None,
                 pass_share: float = PASS_SHARE) -> None:
        here = kernels.units()
        if not here or (unit is not None and unit not in here):
            raise RuntimeError(f"{type(self).__name__} needs a CPU with {unit or self.NEEDS}"
                               " and the kernels built by `make setup` "
                               "(src/facelens/index/*.c)")
        self._dim = dim
        self.candidates = candidates or self.CANDIDATES
        self.pass_share = pass_share
        self._unit = unit or here[0]
        self._threads = len(os.sched_getaffinity(0))
        self._vectors = np.zeros((0, dim), np.float16)  # row -> float16 vector (capacity)
        self._labels = np.empty(0, np.int64)  # row -> face id, -1 once removed (n rows)
        self._row = RowMap()
        self._n = 0  # rows in use
        self._blocks = sign_codes.blank(0)  # codes by row, in the kernel's layout (_fit)
        self._fit(np.zeros((0, dim), np.float32))

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def params(self) -> dict[str, Any]:
        return {"backend": f"{sign_codes.BITS}-bit sign scan ({self._unit.upper()}) of "
                           f"{self._dim}-d vectors, filtered on each query's {STRONG} "
                           "strongest, + float16 re-rank",
                "candidates": self.candidates, "pass_share": self.pass_share,
                "threads": self._threads}

    def __len__(self) -> int:
        return len(self._row)

    def ids(self) -> Ids:
        return self._labels[self._labels >= 0]

    def _fit(self, sample: Vectors) -> None:
        """Mean and axes from `sample` of the gallery's faces (identity axes under `_FIT_AT`),
        and the share of faces the filter passes at each count; the next fit is due when the
        gallery has grown 4x."""
        sample = l2_normalize(sample)  # directions, as the codes are (see `_encode`)
        if len(sample) < _FIT_AT:
            self._mean = np.zeros(self._dim, np.float32)
            self._axes = sign_codes.code_axes(np.eye(self._dim, dtype=np.float32), None)
            self._passing = sign_codes.binomial_passing()
        else:
            self._mean = sample.mean(axis=0)
            centred = sample - self._mean
            values, vectors = np.linalg.eigh(np.cov(centred.T))
            principal = vectors[:, np.argsort(values)[::-1]].astype(np.float32)
            self._axes = sign_codes.code_axes(principal, centred)
            self._passing = self._measure_passing(centred)
        # why the gallery's size, not the sample's: the sample is capped, so 4x the sample
        # would call for a refit (and a re-coding of every face) at each add past 262k faces
        self._fitted_at = self._n
        self._repack()

    def _measure_passing(self, centred: Vectors) -> npt.NDArray[np.float64]:
        """The share of faces unlike a query on at most t of its STRONG strongest directions,
        t = 0..STRONG: the first fitted faces taken as queries of the next ones."""
        asked, filtered = sign_codes.PASSING_SAMPLE
        asked = min(asked, len(centred) // 4)
        # the queries as the kernel makes them, so that these are its filter's shares
        queries = self.queries(centred[:asked] + self._mean)
        faces = centred[asked:asked + filtered] @ self._axes > 0
        return sign_codes.passing(queries, faces)

    def _pass(self, keep: int) -> int:
        """The most of a query's STRONG strongest bits a face may be unlike and be counted
        in full: a count that passes `pass_share` of the faces, or at least 16 x `keep` of
        a thread's (all of them in a small gallery)."""
        share = max(self.pass_share, 16 * keep * self._threads / max(self._n, 1))
        if share >= 1:
            return STRONG
        return max(0, int(np.searchsorted(self._passing, share, side="right")) - 1)

    def _repack(self) -> None:
        """Codes of every row, for the current axes and capacity."""
        self._blocks[:] = 0  # why: old codes must not linger in freed memory either
        self._blocks = sign_codes.blank(len(self._vectors))
        self._encode(np.arange(self._n))

    def _encode(self, rows: npt.NDArray[np.int64]) -> None:
        """(Re)write the codes of every block holding one of these rows, from its float16
        vectors (rows removed or past the end stay blank)."""
        for block in np.unique(rows // sign_codes.FACES):
            faces = np.arange(block * sign_codes.FACES,
                              min((block + 1) * sign_codes.FACES, self._n))
            # why normalised: a subject's vector is the plain mean of its templates (shorter
            # than a single photo's); its code must depend on its direction only
            vectors = l2_normalize(self._vectors[faces].astype(np.float32))
            sign_codes.write_block(self._blocks[block], (vectors - self._mean) @ self._axes > 0)
            sign_codes.erase(self._blocks, faces[self._labels[faces] < 0])

    def _grow(self, rows: int) -> None:
        capacity = len(self._vectors)
        if rows <= capacity:
            return
        # by half again: one-face-at-a-time enrolment copies each row O(1) times on average
        capacity = max(rows, capacity + capacity // 2, 16)
        vectors = np.zeros((capacity, self._dim), np.float16)
        vectors[:self._n] = self._vectors[:self._n]
        blocks = sign_codes.blank(capacity)
        blocks[:len(self._blocks)] = self._blocks
        self._vectors[:] = 0  # why: the old copies must not linger in freed memory
        self._blocks[:] = 0
        self._vectors, self._blocks = vectors, blocks
        return_freed_memory()

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        ids_, vecs = as_batch(ids, vectors, self._dim)
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
        rows = self._row.pop(as_ids(ids))
        if rows:  # erased now, not at the next compaction
            at = np.asarray(rows, np.int64)
            self._labels[at] = -1
            self._vectors[at] = 0
            sign_codes.erase(self._blocks, at)
        return len(rows)

    def _compact(self, refit: bool = False) -> None:
        """Keep only live rows (and refit the axes on them if asked)."""
        live = np.flatnonzero(self._labels >= 0)
        kept = self._vectors[live]
        self._vectors[:] = 0
        self._vectors, self._labels, self._n = kept, self._labels[live], len(live)
        self._row = RowMap(self._labels)
        if refit:
            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(self._n, min(self._n, _FIT_SAMPLE), replace=False))
            self._fit(kept[sample].astype(np.float32))
        else:
            self._repack()
        return_freed_memory()

    def queries(self, q: Vectors) -> npt.NDArray[np.void]:
        """The queries as the kernel takes them (`sign_codes.QUERY`: their bits, where in a
        block the words of the faces unlike each on its strongest directions lie; `pass` left
        at STRONG), made in C: a numpy product here would wake BLAS threads that spin on the
        scan's cores."""
        out = np.empty(len(q), sign_codes.QUERY)
        kernels.sign_queries(np.ascontiguousarray(q, np.float32), self._mean, self._axes, out)
        return out

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[Vectors, Ids]:
        q = as_queries(queries, self._dim, k)
        if not len(self._row):
            return no_results(len(q), k)
        keep = max(self.candidates, k)
        found_scores = np.empty((len(q), self._threads * keep), np.int32)
        rows = np.empty((len(q), self._threads * keep), np.int64)
        self._candidates(q, keep, found_scores, rows)
        if rows.shape[1] > 2 * keep:  # many threads: re-score only the best 2·keep codes
            cols = np.argpartition(-found_scores, 2 * keep - 1, axis=1)[:, :2 * keep]
            rows = np.ascontiguousarray(np.take_along_axis(rows, cols, axis=1))
        kk = min(k, rows.shape[1])
        best, found = kernels.rescore(self._vectors, q, rows, kk)
        out_scores, out_ids = no_results(len(q), k)
        out_scores[:, :kk] = best
        out_ids[:, :kk] = np.where(found >= 0, self._labels[np.maximum(found, 0)], -1)
        return out_scores, out_ids

    def _candidates(self, q: Vectors, keep: int, scores: npt.NDArray[np.int32],
                    rows: npt.NDArray[np.int64]) -> None:
        """Each query's best `keep` rows per thread by their codes into `rows` (-1: none),
        with the codes' scores (higher is nearer: minus the weighted count) in `scores`."""
        queries = self.queries(q)
        queries["pass"] = self._pass(keep)
        kernels.sign_search(self._unit, self._blocks, self._n, queries, keep, self._threads,
                            scores, rows)

    def save(self, path: Path) -> None:
        """A magic line, a JSON header, then the fitted arrays (`_FITTED`), labels and float16
        rows (.npy); the codes are re-made from the rows at load."""
        if self._n - len(self._row) > self._n // 4:
            self._compact()
        header = json.dumps({"dim": self._dim, "candidates": self.candidates,
                             "fitted_at": self._fitted_at}).encode()

        def write(f: BinaryIO) -> None:
            f.write(self._magic)
            np.save(f, np.frombuffer(header, np.uint8), allow_pickle=False)
            for array in (*(getattr(self, name) for name in _FITTED), self._labels,
                          self._vectors[:self._n]):
                np.save(f, array, allow_pickle=False)

        write_atomic(path, write)

    @classmethod
    def load(cls, path: Path) -> Self:
        with read_magic(path, cls._magic, "sign scan") as f:
            header = json.loads(np.load(f, allow_pickle=False).tobytes())
            fitted = [np.load(f, allow_pickle=False) for _ in _FITTED]
            labels, vectors = (np.load(f, allow_pickle=False) for _ in range(2))
        index = cls(int(header["dim"]), candidates=int(header["candidates"]))
        for name, array in zip(_FITTED, fitted, strict=True):
            setattr(index, name, array)
        index._fitted_at = int(header["fitted_at"])
        index._vectors, index._labels, index._n = vectors, labels, len(labels)
        index._row = RowMap(labels)
        index._repack()
        return index
