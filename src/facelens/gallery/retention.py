"""Deletion and retention: crypto-shredding a subject, purging expired and stale subjects,
removing a whole gallery. The index cache follows each deletion in the same step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa

from facelens.errors import ConflictError
from facelens.gallery.catalogue import Catalogue
from facelens.gallery.errors import GalleryNotFound
from facelens.gallery.expiry import lapsed
from facelens.gallery.index_cache import IndexCache
from facelens.gallery.templates import bump_version
from facelens.store.database import Store
from facelens.store.tables import Camera, Consent, Gallery, Subject, aware


class Retention:
    def __init__(self, store: Store, catalogue: Catalogue, cache: IndexCache) -> None:
        self.store, self.catalogue, self.cache = store, catalogue, cache

    def delete_subject(self, subject_id: str, gallery_name: str | None = None) -> None:
        """Crypto-shred: the wrapped key and templates go, the vectors leave the index."""
        with self.store.sessions() as s:
            owner = s.scalar(sa.select(Gallery).join(Subject).where(Subject.id == subject_id))
        if owner is None:
            raise GalleryNotFound(f"no subject {subject_id}{_in(gallery_name)}")
        self.cache.checked(owner)  # held and current before the delete
        with self.store.sessions.begin() as s:
            subject = s.get(Subject, subject_id)
            gallery = s.get(Gallery, subject.gallery_id) if subject else None
            if subject is None or gallery is None or gallery_name not in (None, gallery.name):
                raise GalleryNotFound(f"no subject {subject_id}{_in(gallery_name)}")
            ids = np.array([t.id for t in subject.templates], np.int64)
            s.delete(subject)
            version = bump_version(s, gallery.id)
        self.cache.removed(gallery, version, ids)
        self.store.checkpoint()

    def purge(self, now: datetime | None = None) -> list[str]:
        """Delete subjects whose consent or watchlist entry expired, or who have not been seen
        for their gallery's retention period. Returns the deleted subject ids."""
        now = now or datetime.now(UTC)
        doomed = []
        with self.store.sessions() as s:
            for subject, gallery in s.execute(sa.select(Subject, Gallery).join(Gallery)):
                consents = s.scalars(sa.select(Consent)
                                     .where(Consent.subject_id == subject.id)).all()
                stale = aware(subject.last_seen_at) < now - timedelta(days=gallery.retention_days)
                if stale or lapsed(subject, consents, now):
                    doomed.append(subject.id)
        for subject_id in doomed:
            self.delete_subject(subject_id)
        return doomed

    def remove_gallery(self, name: str) -> None:
        """Delete every subject of the gallery (crypto-shredded), then the gallery and its
        index. Refused while a camera watches it: the camera would stop, and could not be
        changed until its galleries were."""
        gallery = self.catalogue.gallery(name)
        with self.store.sessions() as s:
            watching = sorted(c.name for c in s.scalars(sa.select(Camera)) if name in c.galleries)
        if watching:
            raise ConflictError(f"gallery {name!r} is watched by camera(s) {', '.join(watching)}:"
                                " take it off them first")
        for subject in self.catalogue.subjects(name):
            self.delete_subject(subject.id)
        with self.store.sessions.begin() as s:
            s.execute(sa.delete(Gallery).where(Gallery.id == gallery.id))
        self.cache.drop(gallery.id)
        self.store.checkpoint()


def _in(gallery_name: str | None) -> str:
    return f" in gallery {gallery_name!r}" if gallery_name else ""
