"""`MilvusIndex`: the `VectorIndex` interface over one gallery's share of a Milvus collection.

One collection per embedder holds every gallery, the gallery id its partition key: a search is
filtered `gallery == id` (Milvus hashes the key to a partition, so it scans only that one), and
a 100M-face deployment has one index to build and load per embedder rather than one per
gallery. `uri` is a Milvus server ("http://host:19530") or a milvus-lite file ("….db", the
embedded case, which has partition keys too).

Removal: on a server a delete is a Milvus delete (a tombstone), and `save()` after deletes
flushes and asks for a compaction, which rewrites the segments holding deleted rows without
them; nothing is ever copied. milvus-lite's compact() does nothing (measured: every deleted
vector was still in its parquet files afterwards), so for lite alone `save()` after deletes
rewrites the collection's live rows, which keeps the erasure promise of `base.py` at the small
sizes lite is for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from facelens.index.base import (
    Ids,
    Vectors,
    as_batch,
    as_ids,
    as_queries,
    no_results,
    write_atomic,
)

SERVER_KIND = "IVF_SQ8"
"""The index a server's collections get: 8-bit codes, 240 bytes a 256-d face against HNSW's
1,065; at nprobe 256 it kept 0.89 recall@1 of mates (exact search 0.92), HNSW at ef 128 0.77
(docs/benchmarks.md, chosen in docs/decisions.md). Face vectors are nearly isotropic, so it
must probe a quarter of its lists."""
LITE_KIND = "HNSW"
BUILD_PARAMS: dict[str, dict[str, int]] = {
    "HNSW": {"M": 32, "efConstruction": 64},
    "IVF_SQ8": {"nlist": 1024},  # per segment (~500k faces of 256-d at 512 MB segments)
    "DISKANN": {},
    "FLAT": {},
}
DEFAULT_EFFORT = {"HNSW": 128, "IVF_SQ8": 256, "DISKANN": 100, "FLAT": 0}
"""The kind's search knob: HNSW's ef, IVF's nprobe, DiskANN's search_list."""


def _search_params(kind: str, effort: int, k: int) -> dict[str, int]:
    match kind:
        case "HNSW":
            return {"ef": max(effort, k)}
        case "IVF_SQ8":
            return {"nprobe": effort}
        case "DISKANN":
            return {"search_list": max(effort, k)}
        case _:
            return {}


class MilvusIndex:
    """Gallery `gallery`'s faces in `collection`. Milvus owns the storage; `save(path)` writes
    a small JSON descriptor (uri, collection, dim, gallery) that `load(path)` reconnects from.
    `kind` is the index a new collection gets (default: SERVER_KIND, LITE_KIND for lite);
    `effort` its search knob (default: DEFAULT_EFFORT); `consistency` that of searches
    (Strong: they see every acknowledged write, after the server's next time tick)."""

    _batch = 5_000

    def __init__(self, dim: int, uri: str, collection: str = "faces", *, gallery: int = 0,
                 kind: str | None = None, effort: int | None = None,
                 consistency: str = "Strong") -> None:
        from pymilvus import MilvusClient  # why lazy: an optional, heavy dependency

        self._dim, self._uri, self._name, self._gallery = dim, uri, collection, gallery
        self._consistency = consistency  # of searches; counts and lookups are always Strong
        self._lite = uri.endswith(".db")  # pymilvus's own rule for starting milvus-lite
        self._where = f"gallery == {int(gallery)}"
        self._client = MilvusClient(uri)
        self._dirty = False  # rows were deleted since the last save
        if not self._client.has_collection(collection):
            self._create(collection, kind or (LITE_KIND if self._lite else SERVER_KIND))
        self._check_schema()
        self.kind = str(self._client.describe_index(collection, "vector")["index_type"])
        self.effort = effort if effort is not None else DEFAULT_EFFORT.get(self.kind, 0)
        # A server's collection, and a lite file another process wrote, come back released.
        if "NotLoad" in str(self._client.get_load_state(collection)):
            self._client.load_collection(collection)

    def _create(self, name: str, kind: str) -> None:
        from pymilvus import DataType

        schema = self._client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("gallery", DataType.INT64, is_partition_key=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self._dim)
        params = self._client.prepare_index_params()
        params.add_index("vector", index_type=kind, metric_type="IP", params=BUILD_PARAMS[kind])
        try:
            self._client.create_collection(name, schema=schema, index_params=params,
                                           consistency_level="Strong")
        except Exception:
            if not self._client.has_collection(name):  # else another replica made it first
                raise

    def _check_schema(self) -> None:
        fields = {f["name"]: f for f in self._client.describe_collection(self._name)["fields"]}
        if "gallery" not in fields:
            raise ValueError(f"collection {self._name!r} has no gallery field: it is of the "
                             "layout of one collection per gallery; drop it to rebuild")
        stored = int(fields["vector"]["params"]["dim"])
        if stored != self._dim:
            raise ValueError(f"collection {self._name!r} holds {stored}-d vectors")

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def client(self) -> Any:
        """The pymilvus client, for tools that look behind the interface (benchmarks)."""
        return self._client

    @property
    def collection(self) -> str:
        return self._name

    def __len__(self) -> int:
        rows = self._client.query(self._name, filter=self._where, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _present(self, ids: list[int]) -> list[int]:
        """Those of `ids` this gallery holds."""
        found: list[int] = []
        for start in range(0, len(ids), self._batch):
            chunk = ids[start:start + self._batch]
            rows = self._client.query(self._name, filter=f"{self._where} and id in {chunk}",
                                      output_fields=["id"])
            found += [int(r["id"]) for r in rows]
        return found

    def _delete(self, ids: list[int]) -> None:
        for start in range(0, len(ids), self._batch):
            self._client.delete(self._name, ids=ids[start:start + self._batch])
        self._dirty = True

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        ids_, vecs = as_batch(ids, vectors, self._dim)
        # Why delete + insert, not upsert: a 2.3.5 server files an upserted row under the
        # wrong partition, where a search filtered by its gallery never finds it (measured).
        if present := self._present(ids_.tolist()):
            self._delete(present)
        for start in range(0, len(ids_), self._batch):
            chunk = slice(start, start + self._batch)
            rows = [{"id": i, "gallery": self._gallery, "vector": v}
                    for i, v in zip(ids_[chunk].tolist(), vecs[chunk], strict=True)]
            self._client.insert(self._name, rows)

    def remove(self, ids: npt.ArrayLike) -> int:
        present = self._present(np.unique(as_ids(ids)).tolist())
        if present:
            self._delete(present)
        return len(present)

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[Vectors, Ids]:
        q = as_queries(queries, self._dim, k)
        scores, ids = no_results(len(q), k)
        hits = self._client.search(
            self._name, data=list(q), limit=k, filter=self._where, anns_field="vector",
            output_fields=["id"], consistency_level=self._consistency,
            search_params={"metric_type": "IP",
                           "params": _search_params(self.kind, self.effort, k)})
        for row, found in enumerate(hits):
            for col, hit in enumerate(found):
                scores[row, col], ids[row, col] = hit["distance"], hit["id"]
        return scores, ids

    def _rows(self, name: str, fields: list[str], where: str) -> Iterator[list[dict[str, Any]]]:
        it = self._client.query_iterator(name, batch_size=self._batch, filter=where,
                                         output_fields=fields)
        try:
            while batch := it.next():
                yield batch
        finally:
            it.close()

    def ids(self) -> Ids:
        found = [r["id"] for batch in self._rows(self._name, ["id"], self._where) for r in batch]
        return np.asarray(found, np.int64)

    def _rewrite_lite(self) -> None:
        """milvus-lite only (it cannot compact on demand): copy the live rows of every gallery
        into a fresh collection, so the deleted ones leave its files."""
        fresh = f"{self._name}__purge"
        if self._client.has_collection(fresh):
            self._client.drop_collection(fresh)
        self._create(fresh, self.kind)
        for batch in self._rows(self._name, ["id", "gallery", "vector"], ""):
            self._client.insert(fresh, batch)
        self._client.drop_collection(self._name)
        self._client.rename_collection(fresh, self._name)
        self._client.load_collection(self._name)

    def save(self, path: Path) -> None:
        """Durable already on a server (its write-ahead log); after deletes, flush and compact
        there, rewrite in lite."""
        if self._lite:
            if self._dirty:
                self._rewrite_lite()
            self._client.flush(self._name)
        elif self._dirty:
            self._client.flush(self._name)  # deletes in growing segments reach sealed ones
            self._client.compact(self._name)  # asynchronous: Milvus picks the segments
        self._dirty = False
        about = {"uri": self._uri, "collection": self._name, "dim": self._dim,
                 "gallery": self._gallery}
        write_atomic(path, lambda f: f.write(json.dumps(about).encode()))

    @classmethod
    def load(cls, path: Path) -> Self:
        about = json.loads(path.read_text())
        return cls(int(about["dim"]), about["uri"], about["collection"],
                   gallery=int(about.get("gallery", 0)))

    def close(self) -> None:
        self._client.close()
