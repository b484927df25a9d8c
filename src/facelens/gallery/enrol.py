"""Consented enrolment: the lawful basis is checked first, each image is decoded and embedded
once, and the subject with its consent and sealed templates is written in one transaction."""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from facelens.api import Engine
from facelens.errors import BadImageError, FacelensError, ModelMissingError, NoFaceError
from facelens.gallery.catalogue import Catalogue
from facelens.gallery.errors import GalleryError
from facelens.gallery.expiry import refuse_past
from facelens.gallery.index_cache import IndexCache
from facelens.gallery.pins import check_format, hash_pin
from facelens.gallery.templates import bump_version, centroid, seal_reference, seal_vector
from facelens.store.crypto import new_data_key
from facelens.store.database import Store
from facelens.store.tables import Consent, Gallery, Subject, Template, utcnow
from facelens.vision.decode import ImageSource, encode_jpeg, load_image

SAME_PERSON_FAR = 1e-2
"""Photos of one enrolment must match each other at this FAR (`_Usable.keep_one_person`)."""
LEGAL_BASES = frozenset({"consent", "contract", "legal-obligation", "vital-interest",
                         "public-task", "legitimate-interest"})


@dataclass(frozen=True)
class ConsentRecord:
    purpose: str
    legal_basis: str
    recorded_by: str
    expires_at: datetime | None = None
    granted_at: datetime | None = None

    def check(self) -> None:
        """Refuse (GalleryError) a record that could not justify an enrolment."""
        if self.legal_basis not in LEGAL_BASES:
            raise GalleryError(f"legal basis {self.legal_basis!r} is not one of "
                               f"{', '.join(sorted(LEGAL_BASES))}")
        if not self.purpose or not self.recorded_by:
            raise GalleryError("a consent record needs a purpose and who recorded it")


@dataclass
class EnrolReport:
    subject_id: str
    name: str
    templates: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(image, reason) for every image that gave no template."""


@dataclass
class _Usable:
    """What the images of one enrolment gave: a template per usable image, a reason per other."""

    vectors: list[np.ndarray] = field(default_factory=list)
    qualities: list[float] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chips: list[np.ndarray] = field(default_factory=list)
    """Each usable face's aligned chip (the best one becomes the subject's reference)."""
    labels: list[str] = field(default_factory=list)
    """Each usable face's image, named as in `skipped`."""
    unreadable: bool = False
    """Some image was bad input (missing, not an image…), not merely without a good face."""

    def keep_one_person(self, threshold: float, known: np.ndarray | None = None) -> None:
        """Skip the faces that are not the subject's person: those under `threshold` against
        `known` (the subject's centroid, adding photos), else against the face that matches
        most of the others (ties: the best quality). One subject holding two people's faces
        would name either as the other (`facelens enroll G X a.jpg b.jpg`)."""
        if not self.vectors or (known is None and len(self.vectors) == 1):
            return
        vectors = np.stack(self.vectors)
        if known is None:
            pairs = vectors @ vectors.T
            np.fill_diagonal(pairs, np.inf)
            agreeing = (pairs > threshold).sum(axis=1)
            anchor = max(range(len(vectors)), key=lambda i: (agreeing[i], self.qualities[i]))
            scores = pairs[anchor]
        else:
            scores = vectors @ known
        kept = [i for i, score in enumerate(scores) if score > threshold]
        self.skipped += [(self.labels[i], f"not the person of the other photos (similarity "
                                          f"{scores[i]:.3f}, under {threshold:.3f})")
                         for i in range(len(vectors)) if i not in kept]
        for name in ("vectors", "qualities", "chips", "labels"):
            setattr(self, name, [getattr(self, name)[i] for i in kept])

    def reference(self) -> bytes | None:
        """The best face's chip as JPEG, or None without a usable face."""
        if not self.chips:
            return None
        return encode_jpeg(self.chips[int(np.argmax(self.qualities))])


JOINERS = {"\u200c", "\u200d"}
"""Zero-width (non-)joiners: invisible, but part of how Persian, Indic and emoji names are
spelt."""


def subject_name(name: str) -> str:
    """A person's name as stored: trimmed, 1 to 200 characters, and no control or invisible
    formatting character (a right-to-left override or a zero-width space makes a name read as
    another's in the console and on alerts), joiners aside."""
    name = name.strip()
    if not name or len(name) > 200:
        raise GalleryError("a person's name has 1 to 200 characters")
    hidden = sorted({f"U+{ord(c):04X}" for c in name
                     if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c not in JOINERS})
    if hidden:
        raise GalleryError(f"a person's name cannot hold control or invisible formatting "
                           f"characters ({', '.join(hidden)})")
    return name


class Enrolment:
    def __init__(self, store: Store, engine: Engine, catalogue: Catalogue,
                 cache: IndexCache) -> None:
        self.store, self.engine, self.catalogue, self.cache = store, engine, catalogue, cache

    def enroll(self, gallery_name: str, name: str, images: list[ImageSource], *,
               consent: ConsentRecord, external_id: str | None = None,
               watch_reason: str | None = None, watch_expires: datetime | None = None,
               labels: list[str] | None = None, pin: str | None = None) -> EnrolReport:
        """Enrol one person from one or more images, all in one transaction.

        Refused without a lawful basis; watchlist galleries also need a reason and an expiry.
        Expiry dates (consent, watchlist) must be in the future.
        Images with no face, several faces or a poor-quality face are skipped with the reason
        (named by `labels`, e.g. upload file names, if given); if none is usable the subject
        is not created. A `pin` (4–12 digits) becomes a second factor for door decisions; only
        its scrypt hash is stored.
        """
        name = subject_name(name)
        gallery = self.catalogue.gallery(gallery_name)
        consent.check()
        if pin is not None:
            check_format(pin)
        if gallery.is_watchlist and (not watch_reason or watch_expires is None):
            raise GalleryError(f"gallery {gallery_name!r} is a watchlist: every entry needs "
                               "a reason and an expiry")
        refuse_past("the consent expiry", consent.expires_at)
        refuse_past("the watchlist expiry", watch_expires)
        usable = self.embed_images(gallery, images, labels)
        usable.keep_one_person(self.same_person(gallery))
        if not usable.vectors:
            reasons = "; ".join(f"{img}: {why}" for img, why in usable.skipped) or "no images"
            # No image or an unreadable one is the caller's to fix (exit 2), as the service's
            # upload check (any bad file refuses them all) already answers it.
            refusal = BadImageError if usable.unreadable or not images else NoFaceError
            raise refusal(f"nothing to enrol for {name}: {reasons}")

        # The index is held and current before the commit, so the add below is a delta to it.
        self.cache.checked(gallery)
        subject_id = str(uuid.uuid4())
        data_key = new_data_key()
        master = self.store.master
        with self.store.sessions.begin() as s:
            subject = Subject(id=subject_id, gallery_id=gallery.id, display_name=name,
                              external_id=external_id,
                              attributes={"pin": hash_pin(pin)} if pin else {},
                              wrapped_key=master.wrap(data_key, subject_id),
                              reference=seal_reference(data_key, usable.reference(), subject_id),
                              key_id=master.id, watch_reason=watch_reason,
                              watch_expires=watch_expires)
            subject.consents.append(Consent(
                purpose=consent.purpose, legal_basis=consent.legal_basis,
                recorded_by=consent.recorded_by, expires_at=consent.expires_at,
                granted_at=consent.granted_at or utcnow()))
            for vector, quality in zip(usable.vectors, usable.qualities, strict=True):
                subject.templates.append(Template(
                    embedder=gallery.embedder, quality=quality,
                    vector=seal_vector(data_key, vector, "template", subject_id)))
            s.add(subject)
            version = bump_version(s, gallery.id)
            s.flush()
            index_id = min(t.id for t in subject.templates)
        self.cache.added(gallery, version, np.array([index_id], np.int64),
                         centroid(usable.vectors)[None])
        return EnrolReport(subject_id, name, len(usable.vectors), usable.skipped)

    def same_person(self, gallery: Gallery) -> float:
        """The score over which two photos of one enrolment are one person: the gallery
        embedder's clean threshold at FAR SAME_PERSON_FAR, lenient, so a genuine photo is
        rarely skipped."""
        return self.engine.calibration.operating_point(gallery.embedder,
                                                       SAME_PERSON_FAR).threshold

    def embed_images(self, gallery: Gallery, images: list[ImageSource],
                     labels: list[str] | None) -> _Usable:
        """One template per image that shows one good face, by the gallery's embedder."""
        usable = _Usable()
        for number, image in enumerate(images):
            label = (labels[number] if labels else
                     str(image) if isinstance(image, (str, Path)) else f"image {number}")
            try:
                rgb = load_image(image)
                faces, chips = self.engine.detect_rgb(rgb, second_chance=True)
                if faces:
                    self.engine.embed_rgb(rgb, faces, embedder=gallery.embedder, chips=chips)
            except ModelMissingError:
                raise  # not this photo's fault: every photo would fail alike (exit 3, not 1)
            except FacelensError as e:
                usable.skipped.append((label, str(e)))
                usable.unreadable |= isinstance(e, BadImageError)
                continue
            good = [f for f in faces if f.quality and f.quality.acceptable]
            if not faces:
                usable.skipped.append((label, "no face found"))
            elif len(faces) > 1 and len(good) != 1:
                usable.skipped.append((label,
                                       f"{len(faces)} faces: enrol from a photo of one person"))
            elif not good:
                assert faces[0].quality is not None
                usable.skipped.append((label,
                                       "poor face: " + ", ".join(faces[0].quality.reasons)))
            else:
                face = good[0]
                assert face.embedding is not None and face.quality is not None
                assert chips is not None  # quality was judged on them
                usable.vectors.append(face.embedding)
                usable.qualities.append(face.quality.score)
                usable.labels.append(label)
                # by identity: faces.index() compares Face records, arrays and all (ValueError)
                usable.chips.append(chips[next(i for i, f in enumerate(faces) if f is face)])
        return usable
