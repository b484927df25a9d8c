"""Enrol many people at once: one folder per person, from a directory or a zip archive.

The person's name is the folder's name and also the subject's external id, so a second run
(after a crash, or with more people) enrols only who is missing, or with `update` re-enrols
everyone, each new subject created before the old one is deleted (a crash leaves two, never
none). One person who cannot be enrolled does not stop the others.
"""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from facelens.errors import BadImageError, FacelensError, ImageTooLargeError, ModelMissingError
from facelens.gallery.service import ConsentRecord, Galleries
from facelens.vision.decode import ImageSource

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
ZIP_MAX_FILES = 20_000
"""Entries a zip may hold (a zip of tiny entries costs time per entry, not bytes)."""
ZIP_MAX_IMAGE_BYTES = 20_000_000
"""Largest photo inside a zip, as stored after inflating (a phone photo is a few MB)."""
ZIP_MAX_TOTAL_BYTES = 2_000_000_000
"""All photos of a zip after inflating, as its directory declares them: refused before any is
inflated, and no more can come out (zipfile stops each entry at its declared size)."""

Audit = Callable[..., None]
"""`audit(action, outcome, **fields)`: one row in the audit chain per person."""


@dataclass
class Person:
    name: str
    images: list[Any]
    """Paths, bytes or anything `decode` (given to enrol_people) turns into an image."""
    labels: list[str]


@dataclass
class Outcome:
    """What happened to one person: "enrolled", "kept" (already enrolled; `update` re-enrols)
    or "refused" (with the reason)."""

    name: str
    status: str
    subject_id: str | None = None
    templates: int = 0
    reason: str | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


def people_in_folder(folder: Path) -> list[Person]:
    """Every sub-folder of `folder` as one person, with its image files (sorted)."""
    if not folder.is_dir():
        return []
    people = []
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        images = sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        people.append(Person(person.name, list(images), [str(p) for p in images]))
    return people


class ZipPhoto:
    """One photo inside a zip, inflated only when read (a person at a time), within the
    per-photo and per-archive limits."""

    def __init__(self, archive: ZipArchive, entry: zipfile.ZipInfo) -> None:
        self.archive, self.entry = archive, entry

    def read(self) -> bytes:
        return self.archive.read(self.entry)


class ZipArchive:
    def __init__(self, source: bytes | BinaryIO, *, max_image_bytes: int = ZIP_MAX_IMAGE_BYTES,
                 max_total_bytes: int = ZIP_MAX_TOTAL_BYTES) -> None:
        try:
            self.zip = zipfile.ZipFile(BytesIO(source) if isinstance(source, bytes) else source)
            self.entries = self.zip.infolist()
        except (zipfile.BadZipFile, ValueError, OSError) as e:
            raise BadImageError(f"not a readable zip archive: {e}") from e
        if len(self.entries) > ZIP_MAX_FILES:
            raise ImageTooLargeError(f"the zip holds {len(self.entries)} entries, over "
                                     f"{ZIP_MAX_FILES}")
        self.max_image_bytes, self.max_total_bytes = max_image_bytes, max_total_bytes
        self._lock = threading.Lock()

    def read(self, entry: zipfile.ZipInfo) -> bytes:
        try:
            with self._lock, self.zip.open(entry) as member:
                blob = member.read(self.max_image_bytes + 1)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, RuntimeError) as e:
            raise BadImageError(f"{entry.filename}: unreadable in the zip ({e})") from e
        if len(blob) > self.max_image_bytes:
            raise ImageTooLargeError(f"{entry.filename} inflates to over "
                                     f"{self.max_image_bytes} bytes")
        return blob

    def people(self) -> list[Person]:
        """One person per top folder (or per folder under the zip's one root folder), with
        its photos (ZipPhoto, read on use); hidden files and deeper folders are ignored.
        Photos declared to inflate to over `max_total_bytes` in all refuse the whole zip."""
        paths = [(PurePosixPath(e.filename), e) for e in self.entries if not e.is_dir()]
        paths = [(p, e) for p, e in paths if p.suffix.lower() in IMAGE_SUFFIXES
                 and not any(part.startswith((".", "__MACOSX")) for part in p.parts)]
        roots = {p.parts[0] for p, _ in paths}
        depth = 1 if len(roots) == 1 and all(len(p.parts) > 2 for p, _ in paths) else 0
        grouped: dict[str, list[tuple[PurePosixPath, zipfile.ZipInfo]]] = {}
        for path, entry in paths:
            if len(path.parts) == depth + 2:  # <root/>person/photo
                grouped.setdefault(path.parts[depth], []).append((path, entry))
        declared = sum(e.file_size for photos in grouped.values() for _, e in photos)
        if declared > self.max_total_bytes:  # before any person is enrolled (a 413, not a
            # stream that refuses everyone after the limit)
            raise ImageTooLargeError(f"the zip's photos inflate to {declared:,} bytes, over "
                                     f"{self.max_total_bytes:,}")
        people = []
        for name in sorted(grouped):
            photos = sorted(grouped[name], key=lambda item: str(item[0]))
            people.append(Person(name, [ZipPhoto(self, e) for _, e in photos],
                                 [str(p) for p, _ in photos]))
        if not people:
            raise BadImageError("the zip holds no folder of photos (one folder per person)")
        return people


def enrol_people(galleries: Galleries, gallery: str, people: list[Person],
                 consent: ConsentRecord, *, audit: Audit, update: bool = False,
                 watch_reason: str | None = None, watch_expires: datetime | None = None,
                 decode: Callable[[Any], ImageSource] | None = None
                 ) -> Iterator[Outcome]:
    """Enrol `people` into `gallery` one by one, yielding each one's outcome as it is known.
    The consent record is checked once, before any work. `decode` (e.g. the service's
    bounded decoder) turns each image (a ZipPhoto: its bytes) into what enrol takes as its
    person comes up."""
    consent.check()
    earlier: dict[str, list[str]] = {}
    for subject in galleries.subjects(gallery):
        if subject.external_id:
            earlier.setdefault(subject.external_id, []).append(subject.id)
    for person in people:
        before = earlier.get(person.name, [])
        if before and not update:
            yield Outcome(person.name, "kept", subject_id=before[0])
            continue
        try:
            images = [decode(i) for i in person.images] if decode else person.images
            report = galleries.enroll(gallery, person.name, images, consent=consent,
                                      external_id=person.name, labels=person.labels,
                                      watch_reason=watch_reason, watch_expires=watch_expires)
        except ModelMissingError:
            raise  # every person would be refused alike: stop, naming what to install
        except FacelensError as e:  # one bad person must not stop the rest
            audit("enrol", "refused", reason=str(e)[:200], gallery=gallery,
                  external_id=person.name)
            yield Outcome(person.name, "refused", reason=str(e))
            continue
        audit("enrol", "ok", gallery=gallery, subject=report.subject_id,
              templates=report.templates, legal_basis=consent.legal_basis,
              external_id=person.name)
        for old in before:  # after the new one exists: a crash leaves two, never none
            galleries.delete_subject(old, gallery)
            audit("subject.delete", "ok", gallery=gallery, subject=old,
                  replaced_by=report.subject_id)
        yield Outcome(person.name, "enrolled", subject_id=report.subject_id,
                      templates=report.templates,
                      skipped=[{"image": i, "reason": r} for i, r in report.skipped])
