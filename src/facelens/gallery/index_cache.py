"""Each gallery's vector index, a cache of the database: held in memory, persisted encrypted next
to the database (index_store.py) or kept in Milvus.

A gallery's `version` moves in the transaction of every change to its templates, so checking
an index held in memory costs one primary-key read whatever the gallery's size. Every change
is a delta at its version (index ids added, ids removed): this process's own carry their
vectors; other replicas' arrive as announcements (cluster/announce.py) and their vectors are
read from the database. Deltas are applied in version order; only a gap no announcement fills
within `ANNOUNCE_GRACE_S` (a missed message, another process without NATS) costs more: the
in-memory index is built again from the decrypted templates, a shared (Milvus) collection
has its ids compared with the database's and the difference repaired, one replica at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from facelens.cluster.announce import Announcer, GalleryChange
from facelens.cluster.bus import Bus, BusError
from facelens.cluster.single_flight import NatsLock, PostgresLock, ProcessLock, SingleFlight
from facelens.gallery import index_store
from facelens.gallery.deltas import NO_IDS, SHARED_DONE, CacheStats, Delta, Inbox
from facelens.gallery.templates import centroid, subject_vectors
from facelens.index import AutoIndex, MilvusIndex, VectorIndex
from facelens.settings import EMBEDDER_DIMS, Settings
from facelens.store.crypto import MasterKey
from facelens.store.database import Store
from facelens.store.tables import Gallery, Subject, Template

log = logging.getLogger(__name__)

ANNOUNCE_GRACE_S = 0.5
"""How long a use waits for the announcements of versions the database already shows (they
are published just after the commit) before falling back to the full check."""
SAVE_EVERY_S = 10.0
"""Additions reach the index file at most this often (and at close); removals at once, since
deletion is erasure; on every change without NATS (the CLI exits right after). Rewriting the
file of 1,000 faces per delta tripled a replica's cost of catching up (docs/benchmarks.md)."""


@dataclass
class _Entry:
    name: str
    index: VectorIndex
    version: int
    """The gallery version the index is current at."""
    saved_at: float = field(default_factory=time.monotonic)
    saved: int = -1
    """The version of the index file (in-memory indexes)."""


class IndexCache:
    """The indexes of one process. Hold `lock` while reading an index and its version
    together (the service searches from several threads)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store = settings, store
        self.index_dir = settings.data_dir / "index"
        self.lock = threading.RLock()
        self.stats = CacheStats()
        self._entries: dict[int, _Entry] = {}
        self._inbox = Inbox()
        self._bus = _connect(settings)
        self.announcer = (Announcer(self._bus, settings.nats_prefix, self._received)
                          if self._bus else None)

    def index(self, gallery: Gallery) -> VectorIndex:
        """The gallery's index, current with the database."""
        return self.checked(gallery)[0]

    def checked(self, gallery: Gallery) -> tuple[VectorIndex, int]:
        """The gallery's up-to-date index and the version it is current at."""
        with self.lock:
            current = self._signature(gallery)
            entry = self._entries.get(gallery.id)
            if entry is not None and self._caught_up(gallery, entry, current):
                return entry.index, entry.version
            return self._full_check(gallery)

    def added(self, gallery: Gallery, version: int, ids: np.ndarray, vectors: np.ndarray
              ) -> None:
        """The vectors a transaction of this process committed at `version`."""
        # Noted and announced before taking `lock`: searches holding it, here and on other
        # replicas, may be waiting for this version.
        self._inbox.note(gallery.id, version,
                         SHARED_DONE if self._shared else Delta(ids, NO_IDS, vectors))
        if self.announcer:
            self.announcer.announce(gallery.id, version, added=tuple(ids.tolist()))
        if self._shared:  # the collection is everyone's: written by its writer
            with self._single_flight.hold(gallery.id):  # never during a repair
                index = self._shared_index(gallery)
                index.add(ids, vectors)
                self._save(gallery, index, -1)
        with self.lock:
            self._advance_held(gallery)

    def removed(self, gallery: Gallery, version: int, ids: np.ndarray) -> None:
        """The ids a transaction of this process deleted at `version`."""
        self._inbox.note(gallery.id, version,
                         SHARED_DONE if self._shared else Delta(NO_IDS, ids, None))
        if self.announcer:
            self.announcer.announce(gallery.id, version, removed=tuple(ids.tolist()))
        if self._shared:
            with self._single_flight.hold(gallery.id):
                index = self._shared_index(gallery)
                index.remove(ids)
                self._save(gallery, index, -1)  # Milvus: deleted rows leave its files now
        with self.lock:
            self._advance_held(gallery)

    def drop(self, gallery_id: int) -> None:
        """Forget a removed gallery's index and delete its file."""
        with self.lock:
            index_store.remove(self.index_dir, gallery_id)
            self._entries.pop(gallery_id, None)
            self._inbox.forget(gallery_id)

    def reseal(self, key: MasterKey) -> None:
        """Save every index held in memory again, under `key` (after a key rotation)."""
        with self.lock:
            for gallery_id, entry in self._entries.items():
                if isinstance(entry.index, AutoIndex):
                    index_store.save(self.index_dir, gallery_id, key.derive("index"),
                                     entry.index, entry.version)

    def held(self) -> list[tuple[str, int, int]]:
        """(gallery name, faces, version) of every index held in memory."""
        with self.lock:
            return [(e.name, len(e.index), e.version) for e in self._entries.values()]

    def close(self) -> None:
        """Save the additions not saved yet; stop listening for announcements."""
        with self.lock:
            for gallery_id, entry in self._entries.items():
                if not self._shared and entry.saved != entry.version:
                    self._keep(gallery_id, entry)
        if self.announcer:
            self.announcer.close()

    # ------------------------------------------------------------------ deltas
    def _received(self, change: GalleryChange) -> None:
        """Another replica's change (on the bus's loop: note it, apply at the next use)."""
        delta = Delta(np.array(change.added, np.int64), np.array(change.removed, np.int64),
                      None)
        self._inbox.note(change.gallery_id, change.version, delta)
        self.stats.announced += 1

    def _caught_up(self, gallery: Gallery, entry: _Entry, current: int) -> bool:
        """Apply the deltas up to `current`, waiting a little for announcements in flight;
        False if a gap remains."""
        self._advance(gallery, entry)
        if entry.version >= current:
            return True
        if self.announcer is None:
            return False
        if not self._inbox.wait_for(gallery.id, entry.version, current, ANNOUNCE_GRACE_S):
            self.stats.gaps += 1
            return False
        self._advance(gallery, entry)
        return entry.version >= current

    def _advance_held(self, gallery: Gallery) -> None:
        entry = self._entries.get(gallery.id)
        if entry is not None:
            self._advance(gallery, entry)

    def _advance(self, gallery: Gallery, entry: _Entry) -> None:
        """Apply the pending deltas that follow the entry's version without a gap."""
        chain = self._inbox.chain(gallery.id, entry.version)
        if not chain:
            return
        for delta in chain:
            self._apply(gallery, entry.index, delta)
        entry.version += len(chain)
        self.stats.deltas += len(chain)
        due = time.monotonic() - entry.saved_at >= SAVE_EVERY_S or self.announcer is None
        if not self._shared and (due or any(delta.erases for delta in chain)):
            self._keep(gallery.id, entry)

    def _apply(self, gallery: Gallery, index: VectorIndex, delta: Delta) -> None:
        if self._shared:
            return  # whoever changed the gallery changed the shared collection
        if len(delta.removed):
            index.remove(delta.removed)
        if delta.vectors is not None:
            ids, vectors = delta.added, delta.vectors
        else:  # read after the commit: a later change is already in what is read
            ids, vectors = self._decrypted_centroids(gallery, delta.added)
        if len(ids):
            index.add(ids, vectors)

    # ------------------------------------------------------------------ first use, gaps
    def _full_check(self, gallery: Gallery) -> tuple[VectorIndex, int]:
        """The index current at the database's version, from scratch: the saved file if it
        was saved at that version and holds the database's ids (rows changed behind the
        version's back, e.g. a restored backup, show there), else built (in memory); the
        shared collection repaired (one replica at a time). Deltas from here on are
        collected."""
        self._inbox.collect(gallery.id)
        version = self._signature(gallery)
        index: VectorIndex | None
        if self._shared:
            with self._single_flight.hold(gallery.id):
                index = self._repaired(gallery, self._shared_index(gallery))
        else:  # a held index behind a gap may hold stale centroids under current ids
            index = None if gallery.id in self._entries else self._stored(gallery, version)
            if index is None or set(index.ids().tolist()) != self._truth(gallery):
                index = self._built(gallery, version)
            else:
                self.stats.loads += 1
        entry = self._entries[gallery.id] = _Entry(gallery.name, index, version, saved=version)
        self._advance(gallery, entry)
        return entry.index, entry.version

    @property
    def _shared(self) -> bool:
        """Whether the index is one collection all replicas search (Milvus)."""
        return bool(self.settings.milvus_uri)

    def _shared_index(self, gallery: Gallery) -> VectorIndex:
        entry = self._entries.get(gallery.id)
        index = entry.index if entry else self._stored(gallery, -1)
        assert index is not None  # Milvus always answers with its collection
        return index

    @cached_property
    def _single_flight(self) -> SingleFlight:
        if self.store.database.dialect.name == "postgresql":
            return PostgresLock(self.store.database)
        if self._bus:
            return NatsLock(self._bus, f"{self.settings.nats_prefix}_index_locks")
        return ProcessLock()

    def _stored(self, gallery: Gallery, version: int) -> VectorIndex | None:
        """The index as kept: Milvus's collection, or the encrypted file if it is usable and
        was saved at gallery `version` (else None)."""
        dim = EMBEDDER_DIMS[gallery.embedder]
        if self.settings.milvus_uri:
            return MilvusIndex(dim, self.settings.milvus_uri, _milvus_collection(gallery),
                               gallery=gallery.id,
                               consistency=self.settings.milvus_consistency)
        saved = index_store.load_versioned(self.index_dir, gallery.id,
                                           self.store.master.derive("index"), dim)
        return saved[0] if saved and saved[1] == version else None

    def _built(self, gallery: Gallery, version: int) -> VectorIndex:
        """The index made from all the decrypted templates (read after `version`), saved."""
        self.stats.builds += 1
        ids, vectors = self._decrypted_centroids(gallery)
        index = AutoIndex(EMBEDDER_DIMS[gallery.embedder])
        if len(ids):
            index.add(ids, vectors)
        self._save(gallery, index, version)
        return index

    def _repaired(self, gallery: Gallery, index: VectorIndex) -> VectorIndex:
        """The shared `index` with the ids the database no longer holds removed and those it
        lacks added (decrypting just those subjects). An id present is taken as current: a
        writer that died between its commit and its write to Milvus may leave a subject's
        old centroid (docs/decisions.md)."""
        self.stats.full_checks += 1
        # The collection first: writers commit before they write it (and wait for this
        # repair's lock), so a row read here is in the database read next unless deleted.
        present = set(index.ids().tolist())
        truth = self._truth(gallery)
        extra, missing = present - truth, truth - present
        if extra:
            index.remove(np.array(sorted(extra), np.int64))
        if missing:
            ids, vectors = self._decrypted_centroids(gallery, np.array(sorted(missing)))
            if len(ids):
                index.add(ids, vectors)
        if extra or missing:
            self.stats.repairs += 1
            self._save(gallery, index, -1)
        return index

    def _truth(self, gallery: Gallery) -> set[int]:
        """The index ids the database holds: each subject's first template id."""
        with self.store.sessions() as s:
            return set(s.scalars(sa.select(sa.func.min(Template.id)).join(Subject)
                                 .where(Subject.gallery_id == gallery.id,
                                        Template.embedder == gallery.embedder)
                                 .group_by(Template.subject_id)))

    def _decrypted_centroids(self, gallery: Gallery, only: np.ndarray | None = None
                             ) -> tuple[np.ndarray, np.ndarray]:
        """One vector per subject (the normalised mean of its templates), keyed by the
        subject's first template id; `only`: just the subjects holding these template ids."""
        query = sa.select(Subject).where(Subject.gallery_id == gallery.id)
        if only is not None:
            query = query.where(Subject.id.in_(sa.select(Template.subject_id)
                                               .where(Template.id.in_(only.tolist()))))
        ids, vectors = [], []
        with self.store.sessions() as s:
            for subject in s.scalars(query.options(selectinload(Subject.templates))):
                own = subject_vectors(self.store.master, subject, gallery.embedder)
                if own:
                    ids.append(min(t.id for t in subject.templates
                                   if t.embedder == gallery.embedder))
                    vectors.append(centroid(own))
        dim = EMBEDDER_DIMS[gallery.embedder]
        return (np.array(ids, np.int64),
                np.stack(vectors) if vectors else np.zeros((0, dim), np.float32))

    def _signature(self, gallery: Gallery) -> int:
        """The gallery's version: when any process enrols or deletes, it moves."""
        with self.store.sessions() as s:
            return int(s.scalar(sa.select(Gallery.version).where(Gallery.id == gallery.id))
                       or 0)

    def _keep(self, gallery_id: int, entry: _Entry) -> None:
        """Save a held in-memory index at its version."""
        assert isinstance(entry.index, AutoIndex)
        index_store.save(self.index_dir, gallery_id, self.store.master.derive("index"),
                         entry.index, entry.version)
        entry.saved, entry.saved_at = entry.version, time.monotonic()

    def _save(self, gallery: Gallery, index: VectorIndex, version: int) -> None:
        """Keep `index` (current at gallery `version`; -1: unknown) where it is kept."""
        if isinstance(index, AutoIndex):
            index_store.save(self.index_dir, gallery.id, self.store.master.derive("index"),
                             index, version)
        else:  # Milvus keeps the vectors; saving purges deleted rows from its files
            self.index_dir.mkdir(parents=True, exist_ok=True)
            index.save(self.index_dir / f"gallery-{gallery.id}.milvus.json")


def _connect(settings: Settings) -> Bus | None:
    """The NATS connection announcements travel on, if configured. Unreachable, the process
    runs without: the gallery version still shows other replicas' changes (full checks)."""
    if not settings.nats_url:
        return None
    try:
        return Bus(settings.nats_url, name="facelens-galleries")
    except BusError as e:
        log.warning("gallery changes will not be announced: %s", e)
        return None


def _milvus_collection(gallery: Gallery) -> str:
    """One collection per embedder; the gallery is its partition key (index/milvus.py)."""
    return f"facelens_{gallery.embedder.replace('-', '_')}"
