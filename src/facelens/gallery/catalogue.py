"""Galleries and their subjects as records: create, find, list; a subject's reference vector
for 1:1 checks and its PIN check."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from facelens.face import Reference
from facelens.gallery.errors import GalleryError, GalleryExists, GalleryNotFound
from facelens.gallery.expiry import lapsed
from facelens.gallery.pins import verify_pin
from facelens.gallery.templates import centroid, subject_vectors
from facelens.settings import EMBEDDER_DIMS, NAME_PATTERN, Settings
from facelens.store.database import Store
from facelens.store.tables import Gallery, Subject


class Catalogue:
    """Reads and creates gallery and subject rows; changes to templates go through enrolment
    and retention, which keep the index cache in step."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store = settings, store

    def create_gallery(self, name: str, purpose: str, *, embedder: str | None = None,
                       retention_days: int = 3 * 365) -> Gallery:
        if not re.fullmatch(NAME_PATTERN, name):  # the CLI too: not only the REST model
            raise GalleryError(f"gallery name {name!r}: ASCII letters, digits, _ . - only, "
                               "not starting with a dot, at most 100 characters")
        embedder = embedder or self.settings.embedder
        if embedder not in EMBEDDER_DIMS:
            raise GalleryError(f"unknown embedder {embedder!r}")
        with self.store.sessions.begin() as s:
            if s.scalar(sa.select(Gallery).where(Gallery.name == name)):
                raise GalleryExists(f"gallery {name!r} already exists")
            gallery = Gallery(name=name, purpose=purpose, embedder=embedder,
                              retention_days=retention_days)
            s.add(gallery)
        return gallery

    def gallery(self, name: str) -> Gallery:
        with self.store.sessions() as s:
            found = s.scalar(sa.select(Gallery).where(Gallery.name == name))
        if found is None:
            raise GalleryNotFound(f"no gallery named {name!r}")
        return found

    def list_galleries(self) -> list[tuple[Gallery, int]]:
        with self.store.sessions() as s:
            rows = s.execute(sa.select(Gallery, sa.func.count(Subject.id))
                             .outerjoin(Subject).group_by(Gallery.id).order_by(Gallery.name))
            return [(g, n) for g, n in rows]

    def subjects(self, gallery_name: str) -> list[Subject]:
        gallery = self.gallery(gallery_name)
        with self.store.sessions() as s:
            return list(s.scalars(sa.select(Subject).where(Subject.gallery_id == gallery.id)
                                  .options(selectinload(Subject.consents),
                                           selectinload(Subject.templates))
                                  .order_by(Subject.display_name)))

    def subject(self, subject_id: str) -> Subject:
        """One subject with its gallery, consents and templates."""
        with self.store.sessions() as s:
            found = s.scalar(sa.select(Subject).where(Subject.id == subject_id)
                             .options(selectinload(Subject.consents),
                                      selectinload(Subject.templates),
                                      selectinload(Subject.gallery)))
        if found is None:
            raise GalleryNotFound(f"no subject {subject_id}")
        return found

    def subject_reference(self, subject_id: str) -> Reference:
        """The subject as a 1:1 reference: its search vector (the centroid of its templates of
        the gallery's model). Refused once its consent or watchlist entry lapsed."""
        subject = self.subject(subject_id)
        if why := lapsed(subject, subject.consents):
            raise GalleryError(f"subject {subject_id} may no longer be matched: {why}")
        embedder = subject.gallery.embedder
        vectors = subject_vectors(self.store.master, subject, embedder)
        if not vectors:
            raise GalleryError(f"subject {subject_id} has no {embedder} template: re-enrol")
        return Reference(embedding=centroid(vectors), embedder=embedder, subject_id=subject.id,
                         label=subject.display_name)

    def check_pin(self, subject_id: str, pin: str | None) -> bool | None:
        """True/False if the subject has a PIN and `pin` is/is not it; None if it has none."""
        stored = (self.subject(subject_id).attributes or {}).get("pin")
        if stored is None:
            return None
        return pin is not None and verify_pin(stored, pin)
