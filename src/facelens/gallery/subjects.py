"""Changing an enrolled subject: rename, add photos, list and delete single templates; the
subject's sealed reference picture.

A subject is searched by the centroid of its templates, indexed under its smallest template id;
a change of templates re-indexes it (the old entry out, the new one in, at two consecutive
gallery versions of the one transaction), so replicas apply it like any other delta.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy.orm import Session

from facelens.errors import NoFaceError
from facelens.gallery.enrol import Enrolment, EnrolReport, subject_name
from facelens.gallery.errors import GalleryError, GalleryNotFound
from facelens.gallery.index_cache import IndexCache
from facelens.gallery.templates import (
    bump_version,
    centroid,
    seal_reference,
    seal_vector,
    subject_vectors,
    unseal_reference,
    unseal_vector,
)
from facelens.store.database import Store
from facelens.store.tables import Gallery, Subject, Template
from facelens.vision.decode import ImageSource


@dataclass(frozen=True)
class TemplateInfo:
    """What may be shown of a template: never its vector."""

    id: int
    embedder: str
    quality: float
    created_at: datetime


@dataclass(frozen=True)
class _Reindex:
    gallery: Gallery
    removed: int
    removed_at: int
    added: int
    added_at: int
    vector: np.ndarray


class SubjectEditor:
    def __init__(self, store: Store, enrolment: Enrolment, cache: IndexCache) -> None:
        self.store, self.enrolment, self.cache = store, enrolment, cache

    def rename(self, subject_id: str, name: str) -> None:
        name = subject_name(name)
        with self.store.sessions.begin() as s:
            self._subject(s, subject_id).display_name = name

    def reference_picture(self, subject_id: str) -> bytes:
        """The subject's reference picture (JPEG), for reviewers of their alerts."""
        with self.store.sessions() as s:
            subject = self._subject(s, subject_id)
            if subject.reference is None:
                raise GalleryNotFound(f"subject {subject_id} has no reference picture "
                                      "(enrolled before they were kept: add a photo)")
            data_key = self.store.master.unwrap(subject.wrapped_key, subject.id)
            return unseal_reference(data_key, subject.reference, subject.id)

    def templates(self, subject_id: str) -> list[TemplateInfo]:
        with self.store.sessions() as s:
            subject = self._subject(s, subject_id)
            return [TemplateInfo(t.id, t.embedder, t.quality, t.created_at)
                    for t in sorted(subject.templates, key=lambda t: t.id)]

    def add_photos(self, subject_id: str, images: list[ImageSource],
                   labels: list[str] | None = None) -> EnrolReport:
        """One more template per usable photo (the same checks as enrolment: one good face);
        refused, changing nothing, if none is usable."""
        with self.store.sessions() as s:
            subject = self._subject(s, subject_id)
            gallery, name = subject.gallery, subject.display_name
            stored = subject_vectors(self.store.master, subject, gallery.embedder)
        usable = self.enrolment.embed_images(gallery, images, labels)
        usable.keep_one_person(self.enrolment.same_person(gallery),
                               centroid(stored) if stored else None)
        if not usable.vectors:
            reasons = "; ".join(f"{i}: {why}" for i, why in usable.skipped) or "no images"
            raise NoFaceError(f"nothing to add for {name}: {reasons}")
        self.cache.checked(gallery)  # held and current before the change
        with self.store.sessions.begin() as s:
            subject = self._subject(s, subject_id)
            data_key = self.store.master.unwrap(subject.wrapped_key, subject.id)
            old = min(t.id for t in subject.templates)
            if subject.reference is None:  # enrolled before references were kept
                subject.reference = seal_reference(data_key, usable.reference(), subject.id)
            for vector, quality in zip(usable.vectors, usable.qualities, strict=True):
                subject.templates.append(Template(
                    embedder=gallery.embedder, quality=quality,
                    vector=seal_vector(data_key, vector, "template", subject.id)))
            s.flush()
            change = self._reindex(s, subject, data_key, old)
        self._apply(change)
        return EnrolReport(subject_id, name, len(usable.vectors), usable.skipped)

    def delete_template(self, subject_id: str, template_id: int) -> None:
        """Delete one template; the last one cannot go (delete the subject instead)."""
        with self.store.sessions() as s:
            gallery = self._subject(s, subject_id).gallery
        self.cache.checked(gallery)
        with self.store.sessions.begin() as s:
            subject = self._subject(s, subject_id)
            template = next((t for t in subject.templates if t.id == template_id), None)
            if template is None:
                raise GalleryNotFound(f"subject {subject_id} has no template {template_id}")
            if len(subject.templates) == 1:
                raise GalleryError("this is the subject's only template: delete the subject")
            old = min(t.id for t in subject.templates)
            subject.templates.remove(template)
            s.flush()
            data_key = self.store.master.unwrap(subject.wrapped_key, subject.id)
            change = self._reindex(s, subject, data_key, old)
        self._apply(change)

    @staticmethod
    def _subject(s: Session, subject_id: str) -> Subject:
        subject = s.get(Subject, subject_id)
        if subject is None:
            raise GalleryNotFound(f"no subject {subject_id}")
        return subject

    @staticmethod
    def _reindex(s: Session, subject: Subject, data_key: bytes, old: int) -> _Reindex:
        """The subject's new index entry, at two new versions: its old entry out, then the
        centroid of its templates (of the gallery's embedder) in under its smallest id."""
        gallery = subject.gallery
        kept = [t for t in subject.templates if t.embedder == gallery.embedder]
        ids = [t.id for t in subject.templates]
        vector = centroid([unseal_vector(data_key, t.vector, "template", subject.id)
                           for t in kept])
        removed_at = bump_version(s, gallery.id)
        added_at = bump_version(s, gallery.id)
        return _Reindex(gallery, old, removed_at, min(ids), added_at, vector)

    def _apply(self, change: _Reindex) -> None:
        self.cache.removed(change.gallery, change.removed_at,
                           np.array([change.removed], np.int64))
        self.cache.added(change.gallery, change.added_at, np.array([change.added], np.int64),
                         change.vector[None])
