"""Galleries and 1:N identification: consented enrolment, encrypted templates, open-set search.

`Galleries` is the one object the service, the CLI and the cameras hold; it composes small
parts, each in its own module:

- catalogue.py   galleries and subjects: create, find, list; a subject's 1:1 reference
- enrol.py       consent check and enrolment
- identify.py    search → candidates (matching/decide.py) → negatives; "not this person"
- retention.py   crypto-shredding, purge, gallery removal
- subjects.py    rename a subject, add photos, list and delete single templates
- index_cache.py each gallery's vector index, a cache of the database
- templates.py   sealed vectors, centroids, the gallery version

The database and the master key belong to the `Store` (facelens.store.database); the engine
that detects and embeds is an `Engine` of the same settings.
"""

from __future__ import annotations

from datetime import datetime

from facelens.api import Engine
from facelens.face import Face, Reference
from facelens.gallery.catalogue import Catalogue
from facelens.gallery.enrol import ConsentRecord, Enrolment, EnrolReport
from facelens.gallery.errors import GalleryError
from facelens.gallery.identify import Correction, Identification, Identifier
from facelens.gallery.index_cache import IndexCache
from facelens.gallery.retention import Retention
from facelens.gallery.subjects import SubjectEditor, TemplateInfo
from facelens.settings import Settings
from facelens.store.database import Store
from facelens.store.tables import Gallery, Subject
from facelens.vision.decode import ImageSource

# What callers import from here: the facade, the records it takes and returns, its error.
__all__ = ["ConsentRecord", "Correction", "EnrolReport", "Galleries", "GalleryError",
           "Identification", "TemplateInfo"]


class Galleries:
    """All galleries of one facelens data directory (or database URL)."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store(settings)
        self.engine = Engine(settings)
        self.catalogue = Catalogue(settings, self.store)
        self.cache = IndexCache(settings, self.store)
        self.enrolment = Enrolment(self.store, self.engine, self.catalogue, self.cache)
        self.identifier = Identifier(self.store, self.engine, self.catalogue, self.cache)
        self.retention = Retention(self.store, self.catalogue, self.cache)
        self.editor = SubjectEditor(self.store, self.enrolment, self.cache)

    # ------------------------------------------------------------------ catalogue
    def create_gallery(self, name: str, purpose: str, *, embedder: str | None = None,
                       retention_days: int = 3 * 365) -> Gallery:
        return self.catalogue.create_gallery(name, purpose, embedder=embedder,
                                             retention_days=retention_days)

    def gallery(self, name: str) -> Gallery:
        return self.catalogue.gallery(name)

    def list_galleries(self) -> list[tuple[Gallery, int]]:
        return self.catalogue.list_galleries()

    def subjects(self, gallery_name: str) -> list[Subject]:
        return self.catalogue.subjects(gallery_name)

    def subject(self, subject_id: str) -> Subject:
        return self.catalogue.subject(subject_id)

    def subject_reference(self, subject_id: str) -> Reference:
        return self.catalogue.subject_reference(subject_id)

    def check_pin(self, subject_id: str, pin: str | None) -> bool | None:
        return self.catalogue.check_pin(subject_id, pin)

    # ------------------------------------------------------------------ enrolment, identify
    def enroll(self, gallery_name: str, name: str, images: list[ImageSource], *,
               consent: ConsentRecord, external_id: str | None = None,
               watch_reason: str | None = None, watch_expires: datetime | None = None,
               labels: list[str] | None = None, pin: str | None = None) -> EnrolReport:
        return self.enrolment.enroll(gallery_name, name, images, consent=consent,
                                     external_id=external_id, watch_reason=watch_reason,
                                     watch_expires=watch_expires, labels=labels, pin=pin)

    def identify(self, gallery_name: str, image: ImageSource, *, far: float = 1e-3,
                 top_k: int = 5) -> list[Identification]:
        return self.identifier.identify(gallery_name, image, far=far, top_k=top_k)

    def match(self, gallery_name: str, faces: list[Face], *, far: float = 1e-3,
              top_k: int = 5, record_seen: bool = True) -> list[Identification]:
        return self.identifier.match(gallery_name, faces, far=far, top_k=top_k,
                                     record_seen=record_seen)

    def not_this_person(self, subject_id: str, face: Face) -> Correction:
        return self.identifier.not_this_person(subject_id, face)

    def corrections(self, subject_id: str) -> list[Correction]:
        return self.identifier.corrections(subject_id)

    def undo_correction(self, subject_id: str, correction_id: int) -> None:
        self.identifier.undo_correction(subject_id, correction_id)

    # ------------------------------------------------------------------ editing subjects
    def rename_subject(self, subject_id: str, name: str) -> None:
        self.editor.rename(subject_id, name)

    def add_photos(self, subject_id: str, images: list[ImageSource],
                   labels: list[str] | None = None) -> EnrolReport:
        return self.editor.add_photos(subject_id, images, labels)

    def reference_picture(self, subject_id: str) -> bytes:
        return self.editor.reference_picture(subject_id)

    def templates(self, subject_id: str) -> list[TemplateInfo]:
        return self.editor.templates(subject_id)

    def delete_template(self, subject_id: str, template_id: int) -> None:
        self.editor.delete_template(subject_id, template_id)

    # ------------------------------------------------------------------ deletion, keys
    def delete_subject(self, subject_id: str, gallery_name: str | None = None) -> None:
        self.retention.delete_subject(subject_id, gallery_name)

    def purge(self, now: datetime | None = None) -> list[str]:
        return self.retention.purge(now)

    def remove_gallery(self, name: str) -> None:
        self.retention.remove_gallery(name)

    def close(self) -> None:
        """Stop listening for other replicas' gallery changes."""
        self.cache.close()

    def rotate_master_key(self) -> str:
        """Re-wrap every subject's data key under a new master key (Store.rotate_master_key)
        and re-seal the index files under it; returns the new key id."""
        with self.cache.lock:
            for gallery, _ in self.list_galleries():  # read every index under the old key
                self.cache.index(gallery)
            new = self.store.rotate_master_key()
            self.cache.reseal(new)
        return new.id
