"""`ExactIndex`: brute-force inner product over a float32 matrix, the index of small galleries."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import numpy.typing as npt

from facelens.index.base import (
    Ids,
    Vectors,
    as_batch,
    as_ids,
    as_queries,
    no_results,
    top_k,
    write_atomic,
)

_BLOCK_BYTES = 256 << 20  # score matrix per brute-force chunk: bounds memory at any gallery size


class ExactIndex:
    """Brute-force inner product over a float32 matrix; exact, and fastest below ~20k faces."""

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._ids = np.empty(0, np.int64)
        self._vectors = np.empty((0, dim), np.float32)
        self._n = 0
        self._row: dict[int, int] = {}

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return self._n

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        ids_, vecs = as_batch(ids, vectors, self._dim)
        self.remove(ids_)
        end = self._n + len(ids_)
        if end > len(self._ids):  # grow geometrically: one-face-at-a-time enrolment stays O(1)
            cap = max(end, 2 * len(self._ids))
            self._ids = np.concatenate([self._ids[:self._n], np.empty(cap - self._n, np.int64)])
            grown = np.zeros((cap, self._dim), np.float32)
            grown[:self._n] = self._vectors[:self._n]
            self._vectors = grown
        self._ids[self._n:end] = ids_
        self._vectors[self._n:end] = vecs
        self._row.update(zip(ids_.tolist(), range(self._n, end), strict=True))
        self._n = end

    def remove(self, ids: npt.ArrayLike) -> int:
        removed = 0
        for face in as_ids(ids).tolist():
            row = self._row.pop(face, None)
            if row is None:
                continue
            last = self._n - 1
            if row != last:  # move the last row into the hole to stay contiguous
                self._vectors[row] = self._vectors[last]
                self._ids[row] = self._ids[last]
                self._row[int(self._ids[row])] = row
            self._vectors[last] = 0  # why: an erased embedding must not linger in memory
            self._n = last
            removed += 1
        return removed

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[Vectors, Ids]:
        q = as_queries(queries, self._dim, k)
        scores, ids = no_results(len(q), k)
        if self._n == 0:
            return scores, ids
        kk = min(k, self._n)
        vectors = self._vectors[:self._n]
        step = max(1, _BLOCK_BYTES // (4 * self._n))
        for start in range(0, len(q), step):
            block = slice(start, start + step)
            best, rows = top_k(q[block] @ vectors.T, kk)
            scores[block, :kk] = best
            ids[block, :kk] = self._ids[rows]
        return scores, ids

    def ids(self) -> Ids:
        return self._ids[:self._n].copy()

    def vectors(self) -> Vectors:
        """The stored vectors, row-aligned with `ids()`."""
        return self._vectors[:self._n].copy()

    def save(self, path: Path) -> None:
        """One .npy of (id, vector) records, so the file is self-describing and `np.load`able."""
        records = np.empty(self._n, [("id", "<i8"), ("vector", "<f4", (self._dim,))])
        records["id"], records["vector"] = self._ids[:self._n], self._vectors[:self._n]
        write_atomic(path, lambda f: np.save(f, records, allow_pickle=False))

    @classmethod
    def load(cls, path: Path) -> Self:
        records = np.load(path, allow_pickle=False)
        index = cls(records.dtype["vector"].shape[0])
        index.add(records["id"], records["vector"])
        return index
