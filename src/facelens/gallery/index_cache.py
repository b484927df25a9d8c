"""Each gallery's vector index, a cache of the database: held in memory, persisted encrypted next
to the database (index_store.py) or kept in Milvus, and rebuilt from the decrypted templates
whenever its ids disagree with the database's.

A gallery's `version` moves in the transaction of every change to its templates, so checking
an index held in memory costs one primary-key read whatever the gallery's size.
"""

from __future__ import annotations

import threading

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from facelens.gallery import index_store
from facelens.gallery.templates import centroid, subject_vectors
from facelens.index import AutoIndex, MilvusIndex, VectorIndex
from facelens.settings import EMBEDDER_DIMS, Settings
from facelens.store.crypto import MasterKey
from facelens.store.database import Store
from facelens.store.tables import Gallery, Subject, Template


class IndexCache:
    """The indexes of one process. Hold `lock` while reading an index and its version
    together (the service searches from several threads)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store = settings, store
        self.index_dir = settings.data_dir / "index"
        self.lock = threading.RLock()
        self._indexes: dict[int, tuple[VectorIndex, int]] = {}
        """gallery id → (index, the gallery version it is current at; -1: check again)."""

    def index(self, gallery: Gallery) -> VectorIndex:
        """The gallery's index: from memory, else from Milvus or its encrypted file, checked
        against the database and rebuilt from the templates when they disagree."""
        return self.checked(gallery)[0]

    def checked(self, gallery: Gallery) -> tuple[VectorIndex, int]:
        """The gallery's up-to-date index and the version it is current at: a change made
        next passes that version to `added`/`removed`."""
        with self.lock:
            signature = self._signature(gallery)
            cached = self._indexes.get(gallery.id)
            if cached and cached[1] == signature:
                return cached
            index = self._stored(gallery)
            with self.store.sessions() as s:
                truth = set(s.scalars(sa.select(sa.func.min(Template.id)).join(Subject)
                                      .where(Subject.gallery_id == gallery.id,
                                             Template.embedder == gallery.embedder)
                                      .group_by(Template.subject_id)))
            if index is None or set(index.ids().tolist()) != truth:
                index = self._rebuilt(gallery, index)
            self._indexes[gallery.id] = (index, signature)
            return index, signature

    def added(self, gallery: Gallery, index: VectorIndex, synced: int, version: int,
              ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add the vectors a transaction committed at `version` (checked at `synced`)."""
        with self.lock:
            index.add(ids, vectors)
            self._save(gallery, index)
            self._remember(gallery.id, index, synced, version)

    def removed(self, gallery: Gallery, index: VectorIndex, synced: int, version: int,
                ids: np.ndarray) -> None:
        """Remove the ids a transaction deleted at `version` (checked at `synced`)."""
        with self.lock:
            index.remove(ids)
            self._save(gallery, index)
            self._remember(gallery.id, index, synced, version)

    def drop(self, gallery_id: int) -> None:
        """Forget a removed gallery's index and delete its file."""
        with self.lock:
            index_store.remove(self.index_dir, gallery_id)
            self._indexes.pop(gallery_id, None)

    def reseal(self, key: MasterKey) -> None:
        """Save every index held in memory again, under `key` (after a key rotation)."""
        with self.lock:
            for gallery_id, (index, _) in self._indexes.items():
                if isinstance(index, AutoIndex):
                    index_store.save(self.index_dir, gallery_id, key.derive("index"), index)

    def _stored(self, gallery: Gallery) -> VectorIndex | None:
        """The index as kept: Milvus's collection, or the encrypted file (None if unusable)."""
        dim = EMBEDDER_DIMS[gallery.embedder]
        if self.settings.milvus_uri:
            return MilvusIndex(dim, self.settings.milvus_uri, _milvus_collection(gallery))
        return index_store.load(self.index_dir, gallery.id, self.store.master.derive("index"),
                                dim)

    def _rebuilt(self, gallery: Gallery, stale: VectorIndex | None) -> VectorIndex:
        """The index made again from the decrypted templates, and saved."""
        ids, vectors = self._decrypted_centroids(gallery)
        index: VectorIndex
        if isinstance(stale, MilvusIndex):
            stale.remove(stale.ids())
            index = stale
        else:
            index = AutoIndex(EMBEDDER_DIMS[gallery.embedder])
        if len(ids):
            index.add(ids, vectors)
        self._save(gallery, index)
        return index

    def _decrypted_centroids(self, gallery: Gallery) -> tuple[np.ndarray, np.ndarray]:
        """One vector per subject (the normalised mean of its templates), keyed by the
        subject's first template id."""
        ids, vectors = [], []
        with self.store.sessions() as s:
            for subject in s.scalars(sa.select(Subject).where(Subject.gallery_id == gallery.id)
                                     .options(selectinload(Subject.templates))):
                own = subject_vectors(self.store.master, subject, gallery.embedder)
                if own:
                    ids.append(min(t.id for t in subject.templates
                                   if t.embedder == gallery.embedder))
                    vectors.append(centroid(own))
        dim = EMBEDDER_DIMS[gallery.embedder]
        return (np.array(ids, np.int64),
                np.stack(vectors) if vectors else np.zeros((0, dim), np.float32))

    def _remember(self, gallery_id: int, index: VectorIndex, synced: int, version: int
                  ) -> None:
        """Keep `index` as current at `version` if our own change is the only one since it
        was checked (at `synced`); else another process changed the gallery in between and
        the next use checks the index against the database again."""
        self._indexes[gallery_id] = (index, version if version == synced + 1 else -1)

    def _signature(self, gallery: Gallery) -> int:
        """The gallery's version: when any process enrols or deletes, it moves, and the
        in-memory index is checked against the database again."""
        with self.store.sessions() as s:
            return int(s.scalar(sa.select(Gallery.version).where(Gallery.id == gallery.id))
                       or 0)

    def _save(self, gallery: Gallery, index: VectorIndex) -> None:
        if isinstance(index, AutoIndex):
            index_store.save(self.index_dir, gallery.id, self.store.master.derive("index"),
                             index)
        else:  # Milvus keeps the vectors; saving purges deleted rows from its files
            self.index_dir.mkdir(parents=True, exist_ok=True)
            index.save(self.index_dir / f"gallery-{gallery.id}.milvus.json")


def _milvus_collection(gallery: Gallery) -> str:
    return f"facelens_g{gallery.id}_{gallery.embedder.replace('-', '_')}"
