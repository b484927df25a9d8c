"""`MilvusIndex`: the `VectorIndex` interface over a Milvus server or a milvus-lite file, for
galleries that outgrow one machine."""

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
        ids_, vecs = as_batch(ids, vectors, self._dim)
        if self._client.get(self._name, ids=ids_.tolist(), output_fields=["id"]):
            self._dirty = True  # an upsert deletes the old row
        for start in range(0, len(ids_), self._batch):
            chunk = slice(start, start + self._batch)
            rows = [{"id": i, "vector": v} for i, v in zip(ids_[chunk].tolist(), vecs[chunk],
                                                           strict=True)]
            self._client.upsert(self._name, rows)

    def remove(self, ids: npt.ArrayLike) -> int:
        wanted = np.unique(as_ids(ids)).tolist()
        if not wanted:
            return 0
        present = [r["id"] for r in self._client.get(self._name, ids=wanted, output_fields=["id"])]
        if present:
            self._client.delete(self._name, ids=present)
            self._dirty = True
        return len(present)

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[Vectors, Ids]:
        q = as_queries(queries, self._dim, k)
        scores, ids = no_results(len(q), k)
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
        write_atomic(path, lambda f: f.write(json.dumps(about).encode()))

    @classmethod
    def load(cls, path: Path) -> Self:
        about = json.loads(path.read_text())
        return cls(int(about["dim"]), about["uri"], about["collection"])

    def close(self) -> None:
        self._client.close()
