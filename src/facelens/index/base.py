"""What every index shares: the `VectorIndex` interface, the checks of ids, vectors and queries,
best-first top-k, the id -> row map of the row-based indexes, and atomic file writes.

Similarity is the inner product (cosine, since embeddings are unit length). Every index answers
`search(queries, k)` with (Q, k) float32 scores and int64 ids, best first; slots with no face
hold id -1 and score -inf. Ids are non-negative int64; adding an id that is present replaces its
vector. Removal is erasure: a removed face never comes back from `search`, and after `save()`
neither its float32 nor its float16 bytes are in the index files.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Protocol, Self

import numpy as np
import numpy.typing as npt

Ids = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]


class VectorIndex(Protocol):
    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None: ...

    def remove(self, ids: npt.ArrayLike) -> int:
        """Erase these ids (absent ones are ignored); returns how many were present."""
        ...

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[Vectors, Ids]: ...

    def ids(self) -> Ids: ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> Self: ...


def as_ids(ids: npt.ArrayLike) -> Ids:
    out = np.asarray(ids, dtype=np.int64).reshape(-1)
    if out.size and out.min() < 0:
        raise ValueError("ids must be non-negative (-1 marks an empty result slot)")
    return out


def as_batch(ids: npt.ArrayLike, vectors: npt.ArrayLike, dim: int) -> tuple[Ids, Vectors]:
    ids_ = as_ids(ids)
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    if vecs.shape != (len(ids_), dim):
        raise ValueError(f"vectors must be ({len(ids_)}, {dim}), got {vecs.shape}")
    if len(np.unique(ids_)) != len(ids_):
        raise ValueError("duplicate ids in one add() call")
    return ids_, vecs


def as_queries(queries: npt.ArrayLike, dim: int, k: int) -> Vectors:
    q = np.atleast_2d(np.ascontiguousarray(queries, dtype=np.float32))
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must be (Q, {dim}), got {q.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return q


def no_results(n_queries: int, k: int) -> tuple[Vectors, Ids]:
    return (np.full((n_queries, k), -np.inf, np.float32), np.full((n_queries, k), -1, np.int64))


def top_k(scores: Vectors, k: int) -> tuple[Vectors, npt.NDArray[np.intp]]:
    """Best-first top-k columns of each row of `scores` (k <= number of columns)."""
    n = scores.shape[1]
    cols = np.argpartition(scores, n - k, axis=1)[:, n - k:]
    best = np.take_along_axis(scores, cols, axis=1)
    order = np.argsort(-best, axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1), np.take_along_axis(cols, order, axis=1)


def return_freed_memory() -> None:
    """Hand the heap freed by a rebuild back to the OS: glibc keeps it otherwise, and the old
    index's hundreds of megabytes would stay resident (a no-op without glibc)."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RowMap:
    """Face id -> row as two int64 arrays sorted by id: 16 bytes a face, where a dict of
    Python ints costs ~110 (a fifth of the ANN index at a million faces)."""

    def __init__(self, labels: Ids | None = None) -> None:
        """From row -> id labels (-1: a dead row), or empty."""
        labels = np.empty(0, np.int64) if labels is None else labels
        live = np.flatnonzero(labels >= 0)
        order = np.argsort(labels[live], kind="stable")
        self._ids, self._rows = labels[live][order], live[order].astype(np.int64)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: Ids, first: int) -> None:
        """Map `ids` (distinct, none mapped yet) to rows first, first + 1, …"""
        order = np.argsort(ids, kind="stable")
        at = np.searchsorted(self._ids, ids[order])
        self._ids = np.insert(self._ids, at, ids[order])
        self._rows = np.insert(self._rows, at, first + order)

    def pop(self, ids: Ids) -> list[int]:
        """Unmap whichever of `ids` are mapped; their rows."""
        if not len(self._ids):
            return []
        wanted = np.unique(ids)
        at = np.minimum(np.searchsorted(self._ids, wanted), len(self._ids) - 1)
        at = at[self._ids[at] == wanted]
        rows = self._rows[at].tolist()
        self._ids, self._rows = np.delete(self._ids, at), np.delete(self._rows, at)
        return rows


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it only if the block succeeds, so a crash
    mid-save never leaves a torn index behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` through `write(file)`, all or nothing."""
    with _atomic(path) as tmp, tmp.open("wb") as f:
        write(f)


def read_magic(path: Path, magic: bytes, kind: str) -> BinaryIO:
    """`path` opened past its magic line; a ValueError if it starts with another."""
    f = path.open("rb")
    if f.read(len(magic)) != magic:
        f.close()
        raise ValueError(f"{path} is not a facelens {kind} index")
    return f
