"""Vector index over L2-normalised face embeddings: one interface, five backends.

Similarity is the inner product (cosine, since embeddings are unit length). Every backend answers
`search(queries, k)` with (Q, k) float32 scores and int64 ids, best first; slots with no face hold
id -1 and score -inf. Ids are non-negative int64; adding an id that is present replaces its vector.

- `ExactIndex`: numpy brute force, exact; the default while a gallery is small.
- `SignScanIndex` (sign_index.py): every face's 256 sign bits, a filter on each query's 64
  strongest scanned with AVX-512 or AVX2, the nearest of the faces it passes by a weighted
  Hamming distance re-ranked on float16 vectors; approximate, for large galleries on x86-64.
- `ScanIndex` (scan_index.py): every face's 4-bit code scored on AMX tiles (or AVX-512 VNNI),
  re-ranked on float16 vectors; approximate, no longer chosen (slower than the sign scan on
  AMX CPUs too), kept for comparison and as the sign scan's base.
- `IVFIndex`: 10 independent faiss partitions of 4-bit PQ codes re-ranked on float16 vectors;
  approximate, for large galleries on CPUs without AVX2 (or without the built kernels).
- `HNSWIndex`: faiss HNSW graph over float16 vectors; approximate, kept for saved indexes.
- `AutoIndex` / `make_index`: exact up to `ANN_THRESHOLD` faces, moves itself to the best
  index this CPU runs above it (`large_index`).
- `MilvusIndex`: the same interface over a Milvus server or a milvus-lite file, for scale-out.

Removal is erasure: a removed face never comes back from `search`, and after `save()` neither its
float32 nor its float16 bytes are in the index files (checked by tests/test_index.py).

Why several IVF partitions, and not HNSW or one partition: real SFace embeddings are close to
isotropic (covariance participation ratio 112 of 128 on LFW, `data/embedding_spectrum.json`)
and a second photo is only at cosine ~0.7, so a probe sits far from its face: a graph walk rarely
reaches it, and one partition must be probed at ~30% to keep it. Independent partitions each
miss it independently, so 12 of them probed at ~1% of their lists keep it as often while
scanning ~10x fewer codes. 1M face-like vectors (`facelens bench search`), 800 mated probes, k=10,
batches of 100, 2 cores, medians of alternating rounds:

    index                                     build   r@1 mated          ms/query
    numpy brute force, float32                   3 s   1.0                10.0
    faiss HNSWSQ fp16, M=32, efC=40            555 s   0.948 / 0.988      3.7 / 5.7 (ef 512/1024)
    one partition: 3,577 lists, 30% probed      35 s   0.995              0.46 (19x)
    IVFIndex: 12 x 447 lists, 1% probed         38 s   0.994              0.18 (54x)

(HNSW ran while other benchmarks shared the cores, so its times are pessimistic; its recall is
not.) Those vectors had no mean and every second photo at cosine 0.7. Copying what LFW shows
instead (a common mean, second photos spread from 0.46 to 0.81 between the 5% and 95% points,
and the default galleries' 256-d fused vectors) dropped that setting's r@1 to 0.91: the mate
is lost in the 4-bit codes' noise, not in the lists. So codes now quantise 2 dimensions per
4-bit sub-space (dim/4 bytes), and to pay for the bigger codes there are 10 partitions, 2% of
lists probed, 16·k candidates re-ranked: r@1 0.992 at 12x numpy on 1M fused faces, 1.54x the
raw bytes resident (docs/decisions.md).

Earlier, on 200k uniform vectors, faiss HNSWSQ fp16 beat usearch f16 (same M=32, efC=40): at
ef=128 1.61 vs 2.71 ms/query and r@1 0.940 vs 0.863, at equal size (528 vs 532 B/face).
"""

from __future__ import annotations

import ctypes
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, Self

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from facelens.index.scan import ScanIndex

Ids = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]

ANN_THRESHOLD = 30_000
"""Faces above which `AutoIndex` leaves brute force for an approximate index: up to here an exact
scan answers in well under a millisecond, which the IVF lists do not beat (fused 256-d faces,
batches of 100: exact 0.08 against IVF 0.13 ms a query at 20k, 0.23 against 0.12 at 50k). The
int8 scan would win earlier, but nothing below this needs it."""
_BLOCK_BYTES = 256 << 20  # score matrix per brute-force chunk: bounds memory at any gallery size
_MIN_TRAIN = 1_000  # IVFIndex: faces before its lists are trained (scanned exactly below)
_MIN_SCAN = 50_000  # IVFIndex: PQ codes a query scans at least
_FEW_QUERIES = 32  # IVFIndex: batches below this size use faiss's list-parallel kernel
_DEEP_RERANK = 32  # IVFIndex: its re-rank factor once _MIN_SCAN makes the scan near-exhaustive


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


def _as_ids(ids: npt.ArrayLike) -> Ids:
    out = np.asarray(ids, dtype=np.int64).reshape(-1)
    if out.size and out.min() < 0:
        raise ValueError("ids must be non-negative (-1 marks an empty result slot)")
    return out


def _as_batch(ids: npt.ArrayLike, vectors: npt.ArrayLike, dim: int) -> tuple[Ids, Vectors]:
    ids_ = _as_ids(ids)
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    if vecs.shape != (len(ids_), dim):
        raise ValueError(f"vectors must be ({len(ids_)}, {dim}), got {vecs.shape}")
    if len(np.unique(ids_)) != len(ids_):
        raise ValueError("duplicate ids in one add() call")
    return ids_, vecs


def _as_queries(queries: npt.ArrayLike, dim: int, k: int) -> Vectors:
    q = np.atleast_2d(np.ascontiguousarray(queries, dtype=np.float32))
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must be (Q, {dim}), got {q.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return q


def _no_results(n_queries: int, k: int) -> tuple[Vectors, Ids]:
    return (np.full((n_queries, k), -np.inf, np.float32), np.full((n_queries, k), -1, np.int64))


def _return_freed_memory() -> None:
    """Hand the heap freed by a rebuild back to the OS: glibc keeps it otherwise, and the old
    index's hundreds of megabytes would stay resident (a no-op without glibc)."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _distinct(scores: Vectors, rows: Ids, k: int) -> tuple[Vectors, Ids]:
    """The best k of each query's (score, row) results with every row's repeats dropped."""
    order = np.argsort(rows, axis=1, kind="stable")
    ranked = np.take_along_axis(rows, order, axis=1)
    repeat = np.zeros(rows.shape, bool)
    np.put_along_axis(repeat, order[:, 1:], (ranked[:, 1:] == ranked[:, :-1])
                      & (ranked[:, 1:] >= 0), axis=1)
    scores = np.where(repeat | (rows < 0), -np.inf, scores).astype(np.float32)
    if scores.shape[1] < k:  # fewer results than asked: empty slots
        pad = k - scores.shape[1]
        scores = np.hstack([scores, np.full((len(rows), pad), -np.inf, np.float32)])
        rows = np.hstack([rows, np.full((len(rows), pad), -1, np.int64)])
    best, cols = top_k(scores, k)
    kept = np.take_along_axis(rows, cols, axis=1)
    return best, np.where(np.isfinite(best), kept, -1)


def top_k(scores: Vectors, k: int) -> tuple[Vectors, npt.NDArray[np.intp]]:
    """Best-first top-k columns of each row of `scores` (k <= number of columns)."""
    n = scores.shape[1]
    cols = np.argpartition(scores, n - k, axis=1)[:, n - k:]
    best = np.take_along_axis(scores, cols, axis=1)
    order = np.argsort(-best, axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1), np.take_along_axis(cols, order, axis=1)


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


def _write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    with _atomic(path) as tmp, tmp.open("wb") as f:
        write(f)


def _save_faiss(path: Path, magic: bytes, labels: Ids, index: Any) -> None:
    """A magic line, the row -> id array (.npy), then the faiss index bytes (.npy)."""
    import faiss

    blob = faiss.serialize_index(index)

    def write(f: BinaryIO) -> None:
        f.write(magic)
        np.save(f, labels, allow_pickle=False)
        np.save(f, blob, allow_pickle=False)

    _write(path, write)


def _load_faiss(path: Path, magic: bytes, kind: str) -> tuple[Any, Ids, _RowMap]:
    """(faiss index, row -> id labels, id -> row) from a file written by `_save_faiss`."""
    import faiss

    with path.open("rb") as f:
        if f.read(len(magic)) != magic:
            raise ValueError(f"{path} is not a facelens {kind} index")
        labels = np.load(f, allow_pickle=False)
        blob = np.load(f, allow_pickle=False)
    return faiss.deserialize_index(blob), labels, _RowMap(labels)


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
        ids_, vecs = _as_batch(ids, vectors, self._dim)
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
        for face in _as_ids(ids).tolist():
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
        q = _as_queries(queries, self._dim, k)
        scores, ids = _no_results(len(q), k)
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
        _write(path, lambda f: np.save(f, records, allow_pickle=False))

    @classmethod
    def load(cls, path: Path) -> Self:
        records = np.load(path, allow_pickle=False)
        index = cls(records.dtype["vector"].shape[0])
        index.add(records["id"], records["vector"])
        return index


class _RowMap:
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


class _FaissRows:
    """What the faiss-backed indexes share: float16 rows addressed by face id, erased in
    place (the label becomes -1 and the row's bytes are zeroed at once)."""

    _labels: Ids
    """Row -> face id, -1 once removed."""
    _row: _RowMap
    """Face id -> row."""
    _index: Any
    _magic: bytes

    def _store(self) -> Any:
        """The faiss index holding the float16 rows (`codes`, `code_size`, `sa_decode`)."""
        raise NotImplementedError

    def _codes(self) -> npt.NDArray[np.uint8]:
        """Writable view of the stored float16 rows' bytes, one row per face row."""
        import faiss

        store = self._store()
        flat = faiss.rev_swig_ptr(store.codes.data(), store.codes.size())
        return flat.reshape(-1, store.code_size)

    def _append(self, ids: Ids, first: int) -> None:
        self._labels = np.concatenate([self._labels, ids])
        self._row.add(ids, first)

    def _forget(self, ids: npt.ArrayLike) -> list[int]:
        """Erase these faces' rows; returns the rows (why now: not at the next rebuild)."""
        rows = self._row.pop(_as_ids(ids))
        if rows:
            self._labels[rows] = -1
            self._codes()[rows] = 0
        return rows

    def ids(self) -> Ids:
        return self._labels[self._labels >= 0]

    def _rebuild(self) -> None:
        """Rebuild from the live rows only."""
        raise NotImplementedError

    def save(self, path: Path) -> None:
        """Compact first once dead rows pass a quarter, so churn cannot grow the file."""
        if len(self._labels) - len(self._row) > len(self._labels) // 4:
            self._rebuild()
        _save_faiss(path, self._magic, self._labels, self._index)


class HNSWIndex(_FaissRows):
    """faiss HNSW graph (`IndexHNSWSQ`) over float16 vectors, inner-product metric.

    Scores come from the float16 copies (within ~1e-3 of the float32 inner product). faiss graphs
    are append-only, so `remove` marks the node dead (a bitmap selector keeps it out of every
    search) and zeroes its stored float16 code at once; `save` rebuilds the graph without dead
    nodes once they pass a quarter of it, so re-enrolment churn cannot grow it for ever.
    Parameters: `connectivity` (M, links per node; 2M on the base layer), `expansion_add`
    (efConstruction) and `expansion_search` (efSearch, raised to k when k is larger).
    """

    _magic = b"FLHNSW1\n"

    def __init__(self, dim: int, *, connectivity: int = 32, expansion_add: int = 40,
                 expansion_search: int = 128) -> None:
        import faiss  # why lazy: small galleries never need it

        self._index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, connectivity,
                                        faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = expansion_add
        self._index.hnsw.efSearch = expansion_search
        self._labels = np.empty(0, np.int64)  # graph node -> face id, -1 once removed
        self._row = _RowMap()
        self._live_bits: npt.NDArray[np.uint8] | None = None  # selector bitmap; None: stale

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def expansion_search(self) -> int:
        return int(self._index.hnsw.efSearch)

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        self._index.hnsw.efSearch = value

    @property
    def params(self) -> dict[str, Any]:
        hnsw = self._index.hnsw
        return {"backend": "faiss IndexHNSWSQ fp16", "connectivity": hnsw.nb_neighbors(1),
                "expansion_add": hnsw.efConstruction, "expansion_search": hnsw.efSearch}

    def __len__(self) -> int:
        return len(self._row)

    def _store(self) -> Any:
        import faiss

        return faiss.downcast_index(self._index.storage)

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        ids_, vecs = _as_batch(ids, vectors, self.dim)
        self.remove(ids_)
        if not len(ids_):
            return
        first = self._index.ntotal
        self._index.add(vecs)
        self._append(ids_, first)
        self._live_bits = None

    def remove(self, ids: npt.ArrayLike) -> int:
        rows = self._forget(ids)
        if rows:
            self._live_bits = None
        return len(rows)

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[Vectors, Ids]:
        import faiss

        q = _as_queries(queries, self.dim, k)
        if not len(self._row):
            return _no_results(len(q), k)
        params = faiss.SearchParametersHNSW(efSearch=max(self.expansion_search, k))
        if len(self._row) < len(self._labels):  # dead nodes: let the search skip them
            if self._live_bits is None:
                self._live_bits = np.packbits(self._labels >= 0, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(len(self._labels),
                                                faiss.swig_ptr(self._live_bits))
        scores, rows = self._index.search(q, k, params=params)
        hit = rows >= 0
        return (np.where(hit, scores, -np.inf).astype(np.float32),
                np.where(hit, self._labels[rows], -1))

    def _rebuild(self) -> None:
        live = np.flatnonzero(self._labels >= 0)
        fresh = HNSWIndex(self.dim, connectivity=self._index.hnsw.nb_neighbors(1),
                          expansion_add=self._index.hnsw.efConstruction,
                          expansion_search=self.expansion_search)
        fresh.add(self._labels[live], self._store().sa_decode(self._codes()[live]))
        self._index, self._labels, self._row = fresh._index, fresh._labels, fresh._row
        self._live_bits = None

    @classmethod
    def load(cls, path: Path) -> Self:
        index = cls.__new__(cls)
        # deserialize_index gives back the concrete IndexHNSWSQ
        index._index, index._labels, index._row = _load_faiss(path, cls._magic, "HNSW")
        index._live_bits = None
        return index


class IVFIndex(_FaissRows):
    """Several independent partitions of the gallery (multi-table IVF), each face's 4-bit PQ
    code (one 4-bit sub-quantiser per `CODE_DIMS` dimensions) filed once in each, re-ranked on
    float16 copies; inner-product metric.

    One faiss `IndexIVFPQFastScan` holds all `TABLES` partitions as one set of lists: partition
    t owns lists t·K … t·K+K−1, whose centroids are K random gallery faces of its own. A query
    scans its `probe_share` of lists nearest to it (over all partitions) with SIMD fast-scan
    codes, then re-scores its best candidates, duplicates dropped, on the float16 rows, so
    scores are float16 inner products like `HNSWIndex`'s. Why several partitions: on
    near-isotropic embeddings one partition must be probed at ~30% to keep a face at cosine 0.7,
    while each of several partitions probed at 1–2% misses it independently. Why 2 dimensions
    per 4-bit sub-space: with 4, a weak second photo's score drowns in the codes' noise
    (docs/decisions.md).
    Under `_MIN_TRAIN` faces there are no lists and the float16 rows are scanned exactly; the
    lists are made then and remade each time the gallery has grown 4x (K ≈ sqrt(n)/2). Removal
    takes the face's codes out of every list and zeroes its float16 row at once; `save` compacts
    once dead rows pass a quarter. Not safe for a search concurrent with `add` (which files
    codes by swapping the lists' quantizer) or with another search (each sets the fast-scan
    kernel for its batch size): callers serialise them, as the gallery does.
    """

    # "2": 10 partitions of 2-dim sub-space codes. A file of the 12-partition layout (FLIVFMT)
    # no longer loads, so the gallery rebuilds that cache from the database.
    _magic = b"FLIVFM2\n"
    TABLES = 10
    CODE_DIMS = 2
    SWEEP = ({"probe_share": 0.015, "rerank": 16}, {"probe_share": 0.025, "rerank": 16},
             {"probe_share": 0.03, "rerank": 16}, {"probe_share": 0.02, "rerank": 4},
             {"probe_share": 0.02, "rerank": 8}, {"probe_share": 0.02, "rerank": 32})
    """Settings `facelens bench search` times beside the default on the same lists."""

    def __init__(self, dim: int, *, probe_share: float = 0.02, rerank: int = 16) -> None:
        import faiss

        self.probe_share, self.rerank = probe_share, rerank
        self._index: Any = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16,
                                                      faiss.METRIC_INNER_PRODUCT)
        self._labels = np.empty(0, np.int64)  # row -> face id, -1 once removed
        self._row = _RowMap()
        self._trained_at = 0  # live faces when the lists were made; 0: no lists yet
        self._fillers: list[Any] = []  # per partition: its centroids, ids = global list ids

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def _parts(self) -> tuple[Any, Any]:
        """(inverted lists or None, float16 row store)."""
        import faiss

        if isinstance(self._index, faiss.IndexRefine):
            return (faiss.downcast_index(self._index.base_index),
                    faiss.downcast_index(self._index.refine_index))
        return None, self._index

    @property
    def params(self) -> dict[str, Any]:
        ivf = self._parts()[0]
        return {"backend": f"faiss multi-table IVF ({self.TABLES} partitions) "
                           f"PQ{ivf.pq.M if ivf else self.dim // self.CODE_DIMS}x4 fast-scan "
                           "+ float16 re-rank",
                "lists": ivf.nlist if ivf else 0, "probe_share": self.probe_share,
                "nprobe": self._nprobe(ivf) if ivf else 0, "rerank": self.rerank}

    def __len__(self) -> int:
        return len(self._row)

    def _nprobe(self, ivf: Any) -> int:
        # small galleries scan at least _MIN_SCAN codes: ~50 µs, and recall becomes near-exact
        share = max(self.probe_share, _MIN_SCAN / max(1, self.TABLES * len(self._row)))
        return min(ivf.nlist, int(np.ceil(share * ivf.nlist)))

    def _store(self) -> Any:
        return self._parts()[1]

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        ids_, vecs = _as_batch(ids, vectors, self.dim)
        self.remove(ids_)
        if not len(ids_):
            return
        ivf, store = self._parts()
        first = store.ntotal
        if ivf is not None:  # by hand: IndexRefine.add would number rows from the lists' count
            self._file(ivf, vecs, np.arange(first, first + len(ids_)))
        store.add(vecs)
        self._index.ntotal = store.ntotal
        self._append(ids_, first)
        if len(self._row) >= max(_MIN_TRAIN, 4 * self._trained_at):
            self._rebuild()

    def _file(self, ivf: Any, vecs: Vectors, rows: Ids) -> None:
        """File each vector's code in its nearest list of every partition: faiss assigns with
        the lists' quantizer, so it is swapped for one partition's centroids at a time."""
        import faiss

        if not self._fillers:
            cells = ivf.nlist // self.TABLES
            centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
            for t in range(self.TABLES):
                part = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
                part.add_with_ids(centroids[t * cells:(t + 1) * cells],
                                  np.arange(t * cells, (t + 1) * cells, dtype=np.int64))
                self._fillers.append(part)
        quantizer, owned = ivf.quantizer, ivf.own_fields
        ivf.own_fields = False
        try:
            for part in self._fillers:
                ivf.quantizer = part
                ivf.add_with_ids(vecs, rows)
        finally:
            ivf.quantizer, ivf.own_fields = quantizer, owned

    def _rebuild(self) -> None:
        """A fresh index of the live rows only: lists from `_MIN_TRAIN` faces on."""
        import faiss

        store = self._store()
        live = np.flatnonzero(self._labels >= 0)
        n = len(live)
        rng = np.random.default_rng(0)
        ivf = None
        fresh_store = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16,
                                                 faiss.METRIC_INNER_PRODUCT)
        fresh: Any = fresh_store
        if n >= _MIN_TRAIN:
            cells = max(8, round(np.sqrt(n) / 2))
            centroids = faiss.IndexFlatIP(self.dim)  # each partition: random faces of its own
            for _ in range(self.TABLES):
                centroids.add(store.sa_decode(self._codes()[np.sort(rng.choice(live, cells,
                                                                                replace=False))]))
            sub = self.dim // self.CODE_DIMS if self.dim % self.CODE_DIMS == 0 else self.dim
            coded = faiss.IndexIVFPQ(centroids, self.dim, self.TABLES * cells, sub, 4,
                                     faiss.METRIC_INNER_PRODUCT)
            coded.by_residual = False  # one code for a face, whichever list holds it
            sample = np.sort(rng.choice(live, min(n, 65_536), replace=False))
            coded.train(store.sa_decode(self._codes()[sample]))  # the PQ only: lists are set
            ivf = faiss.IndexIVFPQFastScan(coded, 32)
            fresh = faiss.IndexRefine(ivf, fresh_store)
        self._fillers = []
        for start in range(0, n, 50_000):  # chunks: no float32 copy of the whole gallery
            rows = live[start:start + 50_000]
            vecs = store.sa_decode(self._codes()[rows])
            if ivf is not None:
                self._file(ivf, vecs, np.arange(start, start + len(rows)))
            fresh_store.add(vecs)
        fresh.ntotal = n
        self._codes()[:] = 0  # why: the old rows (dead ones too) must not linger in freed memory
        self._index, self._labels = fresh, self._labels[live]
        self._row = _RowMap(self._labels)
        self._trained_at = n if ivf is not None else 0
        _return_freed_memory()

    def remove(self, ids: npt.ArrayLike) -> int:
        import faiss

        rows = self._forget(ids)
        if not rows:
            return 0
        ivf = self._parts()[0]
        if ivf is None:  # an exact scan would still see the zeroed rows: drop them now (small)
            self._rebuild()
            return len(rows)
        lists = faiss.downcast_InvertedLists(ivf.invlists)
        before = [lists.list_size(i) for i in range(lists.nlist)]
        ivf.remove_ids(faiss.IDSelectorBatch(np.asarray(rows, np.int64)))
        # faiss fills each hole with its list's last code but leaves that slot's old bytes in the
        # last block, which is saved whole: zero them so no erased code survives
        packer = ivf.get_CodePacker()
        zero = np.zeros(packer.code_size, np.uint8)
        for i, old in enumerate(before):
            new = lists.list_size(i)
            for slot in range(new, min(old, -(-new // packer.nvec) * packer.nvec)):
                packer.pack_1_c(faiss.swig_ptr(zero), slot, lists.get_codes(i))
        return len(rows)

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[Vectors, Ids]:
        import faiss

        q = _as_queries(queries, self.dim, k)
        if not len(self._row):
            return _no_results(len(q), k)
        ivf = self._parts()[0]
        if ivf is None:
            scores, rows = self._index.search(q, k)
        else:
            nprobe = self._nprobe(ivf)
            # faiss's default fast-scan kernel gives a lone query one core; kernel 10 spreads
            # its lists over all (1M fused faces: 1.6 against 2.9 ms) but loses from ~32 queries
            ivf.implem = 10 if len(q) < _FEW_QUERIES else 0
            # A face is met once in each partition whose probed lists hold it (`met` times on
            # average, more near the query): ask for `repeats`·k results, so that k distinct
            # faces survive dropping repeats, from about rerank·k distinct candidates. Where
            # the _MIN_SCAN floor widened the scan (small galleries) the re-rank deepens alike.
            share = nprobe / ivf.nlist
            rerank = min(_DEEP_RERANK, self.rerank * share / self.probe_share)
            met = max(1.0, self.TABLES * share)
            repeats = min(self.TABLES, int(np.ceil(met + 2)))
            wanted = min(len(self._labels), k * repeats)
            params = faiss.IndexRefineSearchParameters(
                k_factor=max(1.0, rerank * met / repeats),
                base_index_params=faiss.SearchParametersIVF(nprobe=nprobe))
            scores, rows = self._index.search(q, wanted, params=params)
            scores, rows = _distinct(scores, rows, k)
        hit = rows >= 0
        return (np.where(hit, scores, -np.inf).astype(np.float32),
                np.where(hit, self._labels[rows], -1))

    @classmethod
    def load(cls, path: Path) -> Self:
        faiss_index, labels, rows = _load_faiss(path, cls._magic, "IVF")
        index = cls(int(faiss_index.d))
        index._index, index._labels, index._row = faiss_index, labels, rows
        ivf = index._parts()[0]
        index._trained_at = ivf.ntotal // cls.TABLES if ivf is not None else 0
        return index


class AutoIndex:
    """Exact while the gallery holds at most `threshold` faces, `large_index` (one of the
    scans, or IVF lists) once it grows past it.

    The move builds the approximate index from the exact index's vectors and then drops them,
    so no second float32 copy is kept. A gallery that shrinks again stays approximate (no
    flip-flopping). Saved indexes load as the kind they were saved as (IVF and HNSW too), and
    say when that is `outdated`.
    """

    def __init__(self, dim: int, threshold: int = ANN_THRESHOLD,
                 inner: ExactIndex | HNSWIndex | IVFIndex | ScanIndex | None = None) -> None:
        self.threshold = threshold
        self.inner = inner if inner is not None else ExactIndex(dim)

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def approximate(self) -> bool:
        return not isinstance(self.inner, ExactIndex)

    @property
    def outdated(self) -> bool:
        """Approximate but not of the kind this machine builds now (say an IVF cache saved
        before the scan could run here): a cache worth rebuilding from the database."""
        return self.approximate and type(self.inner) is not large_index_kind()

    def __len__(self) -> int:
        return len(self.inner)

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        self.inner.add(ids, vectors)
        if isinstance(self.inner, ExactIndex) and len(self.inner) > self.threshold:
            exact, self.inner = self.inner, large_index(self.inner.dim)
            self.inner.add(exact.ids(), exact.vectors())

    def remove(self, ids: npt.ArrayLike) -> int:
        return self.inner.remove(ids)

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[Vectors, Ids]:
        return self.inner.search(queries, k)

    def ids(self) -> Ids:
        return self.inner.ids()

    def save(self, path: Path) -> None:
        self.inner.save(path)

    @classmethod
    def load(cls, path: Path, threshold: int = ANN_THRESHOLD) -> Self:
        with path.open("rb") as f:
            head = f.read(8)
        from facelens.index.scan import ScanIndex
        from facelens.index.sign import SignScanIndex

        kinds: tuple[type[Any], ...] = (ScanIndex, SignScanIndex, IVFIndex, HNSWIndex)
        kind = next((k for k in kinds if head == k._magic), ExactIndex)
        inner = kind.load(path)  # ExactIndex.load rejects what is not its .npy either
        return cls(inner.dim, threshold, inner)


def make_index(dim: int, size_hint: int = 0, path: Path | None = None,
               threshold: int = ANN_THRESHOLD) -> AutoIndex:
    """The index saved at `path` if there is one, else an empty one sized for `size_hint` faces
    (starting approximate when the hint is above the threshold, to skip the later move)."""
    if path is not None and path.exists():
        index = AutoIndex.load(path, threshold)
        if index.dim != dim:
            raise ValueError(f"{path} holds {index.dim}-d vectors, not {dim}-d")
        return index
    return AutoIndex(dim, threshold, large_index(dim) if size_hint > threshold else None)


def large_index_kind() -> type[ScanIndex] | type[IVFIndex]:
    """The approximate index for galleries past the threshold: the sign scan where the CPU
    has AVX-512 (with VPOPCNTDQ) or AVX2 (`sign_index.py`), else the IVF partitions. Not the
    4-bit scan, even on AMX: on an AMX CPU the AVX-512 sign scan ran 94-115x numpy in
    batches against the AMX scan's 64-83x, and a lone query 0.6 ms against 5
    (docs/decisions.md); the 4-bit scan's recall@10 is higher."""
    # why here: it builds on this module
    from facelens.index.sign import SignScanIndex

    return SignScanIndex if SignScanIndex.runs_here() else IVFIndex


def large_index(dim: int) -> ScanIndex | IVFIndex:
    """An empty index of `large_index_kind`."""
    return large_index_kind()(dim)


class MilvusIndex:
    """The interface over Milvus: `uri` is a server ("http://host:19530") or a milvus-lite
    directory path. Milvus owns the storage; `save(path)` makes it durable and writes a small
    JSON descriptor (uri, collection, dim) that `load(path)` reconnects from."""

    _batch = 5_000

    def __init__(self, dim: int, uri: str, collection: str = "faces", *,
                 ef: int = 128) -> None:
        from pymilvus import MilvusClient  # why lazy: an optional, heavy dependency

        self._dim, self._uri, self._name, self._ef = dim, uri, collection, ef
        self._client = MilvusClient(uri)
        self._dirty = False  # rows were deleted since the last purge
        if not self._client.has_collection(collection):
            self._create(collection)
        else:
            fields = self._client.describe_collection(collection)["fields"]
            stored = next(f["params"]["dim"] for f in fields if f["name"] == "vector")
            if int(stored) != dim:
                raise ValueError(f"collection {collection!r} holds {stored}-d vectors")

    def _create(self, name: str) -> None:
        from pymilvus import DataType

        schema = self._client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self._dim)
        params = self._client.prepare_index_params()
        params.add_index("vector", index_type="HNSW", metric_type="IP",
                         params={"M": 32, "efConstruction": 64})
        self._client.create_collection(name, schema=schema, index_params=params,
                                       consistency_level="Strong")

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        rows = self._client.query(self._name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        ids_, vecs = _as_batch(ids, vectors, self._dim)
        if self._client.get(self._name, ids=ids_.tolist(), output_fields=["id"]):
            self._dirty = True  # an upsert deletes the old row
        for start in range(0, len(ids_), self._batch):
            chunk = slice(start, start + self._batch)
            rows = [{"id": i, "vector": v} for i, v in zip(ids_[chunk].tolist(), vecs[chunk],
                                                           strict=True)]
            self._client.upsert(self._name, rows)

    def remove(self, ids: npt.ArrayLike) -> int:
        wanted = np.unique(_as_ids(ids)).tolist()
        if not wanted:
            return 0
        present = [r["id"] for r in self._client.get(self._name, ids=wanted, output_fields=["id"])]
        if present:
            self._client.delete(self._name, ids=present)
            self._dirty = True
        return len(present)

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[Vectors, Ids]:
        q = _as_queries(queries, self._dim, k)
        scores, ids = _no_results(len(q), k)
        hits = self._client.search(self._name, data=list(q), limit=k, anns_field="vector",
                                   output_fields=["id"],
                                   search_params={"metric_type": "IP",
                                                  "params": {"ef": max(self._ef, k)}})
        for row, found in enumerate(hits):
            for col, hit in enumerate(found):
                scores[row, col], ids[row, col] = hit["distance"], hit["id"]
        return scores, ids

    def _rows(self, name: str, fields: list[str]) -> Iterator[list[dict[str, Any]]]:
        it = self._client.query_iterator(name, batch_size=self._batch, filter="",
                                         output_fields=fields)
        try:
            while batch := it.next():
                yield batch
        finally:
            it.close()

    def ids(self) -> Ids:
        found = [r["id"] for batch in self._rows(self._name, ["id"]) for r in batch]
        return np.asarray(found, np.int64)

    def _purge(self) -> None:
        # Why: a Milvus delete only writes a tombstone; the row's vector stays in the segment
        # files until a compaction that milvus-lite runs only once many files pile up. Copying
        # the live rows into a fresh collection is what really erases the deleted ones.
        fresh = f"{self._name}__purge"
        if self._client.has_collection(fresh):
            self._client.drop_collection(fresh)
        self._create(fresh)
        for batch in self._rows(self._name, ["id", "vector"]):
            self._client.insert(fresh, batch)
        self._client.drop_collection(self._name)
        self._client.rename_collection(fresh, self._name)
        self._client.load_collection(self._name)
        self._dirty = False

    def save(self, path: Path) -> None:
        if self._dirty:
            self._purge()
        self._client.flush(self._name)
        about = {"uri": self._uri, "collection": self._name, "dim": self._dim}
        _write(path, lambda f: f.write(json.dumps(about).encode()))

    @classmethod
    def load(cls, path: Path) -> Self:
        about = json.loads(path.read_text())
        return cls(int(about["dim"]), about["uri"], about["collection"])

    def close(self) -> None:
        self._client.close()
