"""`IVFIndex`: several independent faiss partitions of the gallery, each face's 4-bit PQ code
filed once in each, the best candidates re-ranked on float16 rows; the large-gallery index where
the CPU runs neither sign scan (sign.py).

Why several partitions, not one or a graph: face embeddings are close to isotropic (covariance
participation ratio ~110) and a second photo sits at centred cosine 0.46–0.81 to the first, so a
probe lies far from its face: a graph walk rarely reaches it and one partition must be probed at
~30% to keep it, while each of several partitions probed at 1–2% misses it independently
(docs/decisions.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, Self

import numpy as np
import numpy.typing as npt

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
    top_k,
    write_atomic,
)

_MIN_TRAIN = 1_000  # faces before the lists are trained (scanned exactly below)
_MIN_SCAN = 50_000  # PQ codes a query scans at least
_FEW_QUERIES = 32  # batches below this size use faiss's list-parallel kernel
_DEEP_RERANK = 32  # the re-rank factor once _MIN_SCAN makes the scan near-exhaustive


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


class IVFIndex:
    """Several independent partitions of the gallery (multi-table IVF), each face's 4-bit PQ
    code (one 4-bit sub-quantiser per `CODE_DIMS` dimensions) filed once in each, re-ranked on
    float16 copies; inner-product metric.

    One faiss `IndexIVFPQFastScan` holds all `TABLES` partitions as one set of lists: partition
    t owns lists t·K … t·K+K−1, whose centroids are K random gallery faces of its own. A query
    scans its `probe_share` of lists nearest to it (over all partitions) with SIMD fast-scan
    codes, then re-scores its best candidates, duplicates dropped, on the float16 rows, so
    scores are float16 inner products. Why 2 dimensions per 4-bit sub-space: with 4, a weak
    second photo's score drowns in the codes' noise (docs/decisions.md).
    Under `_MIN_TRAIN` faces there are no lists and the float16 rows are scanned exactly; the
    lists are made then and remade each time the gallery has grown 4x (K ≈ sqrt(n)/2). Removal
    takes the face's codes out of every list and zeroes its float16 row at once; `save` compacts
    once dead rows pass a quarter. Not safe for a search concurrent with `add` (which files
    codes by swapping the lists' quantizer) or with another search (each sets the fast-scan
    kernel for its batch size): callers serialise them, as the gallery does.
    """

    # "2": 10 partitions of 2-dim sub-space codes; a file of another layout (FLIVFMT: 12
    # partitions) is refused, so the gallery rebuilds that cache from the database
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
        self._row = RowMap()
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

    def _codes(self) -> npt.NDArray[np.uint8]:
        """Writable view of the stored float16 rows' bytes, one row per face row."""
        import faiss

        store = self._parts()[1]
        flat = faiss.rev_swig_ptr(store.codes.data(), store.codes.size())
        return flat.reshape(-1, store.code_size)

    def _forget(self, ids: npt.ArrayLike) -> list[int]:
        """Erase these faces' rows; returns the rows (why now: not at the next rebuild)."""
        rows = self._row.pop(as_ids(ids))
        if rows:
            self._labels[rows] = -1
            self._codes()[rows] = 0
        return rows

    def ids(self) -> Ids:
        return self._labels[self._labels >= 0]

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        ids_, vecs = as_batch(ids, vectors, self.dim)
        self.remove(ids_)
        if not len(ids_):
            return
        ivf, store = self._parts()
        first = store.ntotal
        if ivf is not None:  # by hand: IndexRefine.add would number rows from the lists' count
            self._file(ivf, vecs, np.arange(first, first + len(ids_)))
        store.add(vecs)
        self._index.ntotal = store.ntotal
        self._labels = np.concatenate([self._labels, ids_])
        self._row.add(ids_, first)
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

        store = self._parts()[1]
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
        self._row = RowMap(self._labels)
        self._trained_at = n if ivf is not None else 0
        return_freed_memory()

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

        q = as_queries(queries, self.dim, k)
        if not len(self._row):
            return no_results(len(q), k)
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

    def save(self, path: Path) -> None:
        """A magic line, the row -> id labels (.npy), then the faiss index bytes (.npy);
        compacted first once dead rows pass a quarter, so churn cannot grow the file."""
        import faiss

        if len(self._labels) - len(self._row) > len(self._labels) // 4:
            self._rebuild()
        blob = faiss.serialize_index(self._index)

        def write(f: BinaryIO) -> None:
            f.write(self._magic)
            np.save(f, self._labels, allow_pickle=False)
            np.save(f, blob, allow_pickle=False)

        write_atomic(path, write)

    @classmethod
    def load(cls, path: Path) -> Self:
        import faiss

        with read_magic(path, cls._magic, "IVF") as f:
            labels = np.load(f, allow_pickle=False)
            blob = np.load(f, allow_pickle=False)
        faiss_index = faiss.deserialize_index(blob)
        index = cls(int(faiss_index.d))
        index._index, index._labels, index._row = faiss_index, labels, RowMap(labels)
        ivf = index._parts()[0]
        index._trained_at = ivf.ntotal // cls.TABLES if ivf is not None else 0
        return index
