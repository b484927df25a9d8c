"""Galleries and 1:N identification: consented enrolment, encrypted templates, open-set search.

The database is the source of truth. Each gallery's vector index is a cache held in memory,
persisted encrypted next to the database, and rebuilt from the (decrypted) templates whenever
its ids disagree with the database's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from facelens.errors import ConflictError, FacelensError, NoFaceError, NotFoundError
from facelens.face import Face
from facelens.gallery import index_store
from facelens.geometry import l2_normalize
from facelens.index import AutoIndex, MilvusIndex, VectorIndex
from facelens.matching.open_set import open_set_threshold
from facelens.matching.operating_points import operating_point
from facelens.settings import Settings, get_settings
from facelens.store.crypto import (
    ENV_KEY,
    MasterKey,
    MasterKeyError,
    context,
    load_master_key,
    new_data_key,
    read_key_file,
    seal,
    unseal,
    write_key_file,
)
from facelens.store.db import checkpoint, database_url, open_engine, session_factory
from facelens.store.tables import (
    Consent,
    Gallery,
    NegativeExample,
    Subject,
    Template,
    aware,
    utcnow,
)
from facelens.vision.decode import ImageSource, load_image

LEGAL_BASES = frozenset({"consent", "contract", "legal-obligation", "vital-interest",
                         "public-task", "legitimate-interest"})
DIMS = {"sface": 128, "sface-flip": 128, "dlib": 128, "fusion": 256}


class GalleryError(FacelensError):
    """A gallery request that breaks a rule (no consent, unknown gallery, …); changes nothing."""


class GalleryNotFound(GalleryError, NotFoundError):
    """No such gallery or subject."""


class GalleryExists(GalleryError, ConflictError):
    """A gallery of that name exists."""


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


@dataclass(frozen=True)
class Candidate:
    subject_id: str
    name: str
    score: float


@dataclass
class Identification:
    face: Face
    candidates: list[Candidate]
    """Best first; empty means unknown."""
    decision: str
    """How the threshold was chosen (open-set formula, FPIR, gallery size)."""
    embedder: str = ""
    comparisons: int = 1
    """Gallery size searched: what a confidence band is computed over."""

    @property
    def unknown(self) -> bool:
        return not self.candidates


class Galleries:
    """All galleries of one facelens data directory (or database URL)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        data_dir = self.settings.data_dir
        self.engine = open_engine(database_url(data_dir, self.settings.database_url))
        self.sessions = session_factory(self.engine)
        self.key_file = data_dir / "master.key"
        with self.sessions() as s:
            used = set(s.scalars(sa.select(Subject.key_id).distinct()))
        # A new key only for an empty store: a lost key file must not silently fork the data.
        try:
            self.master: MasterKey = load_master_key(self.key_file, create=not used)
            self._finish_rotation()
            if used and used != {self.master.id}:
                raise MasterKeyError(f"wrong master key: the key from {self.master.source} does "
                                     "not match the one the templates were wrapped with")
        except MasterKeyError:
            self.engine.dispose()
            raise
        self.index_dir = data_dir / "index"
        self._indexes: dict[int, tuple[VectorIndex, int]] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ galleries
    def create_gallery(self, name: str, purpose: str, *, embedder: str | None = None,
                       retention_days: int = 3 * 365, keep_crops: bool = False) -> Gallery:
        embedder = embedder or self.settings.embedder
        if embedder not in DIMS:
            raise GalleryError(f"unknown embedder {embedder!r}")
        with self.sessions.begin() as s:
            if s.scalar(sa.select(Gallery).where(Gallery.name == name)):
                raise GalleryExists(f"gallery {name!r} already exists")
            gallery = Gallery(name=name, purpose=purpose, embedder=embedder,
                              retention_days=retention_days, keep_crops=keep_crops)
            s.add(gallery)
        return gallery

    def gallery(self, name: str, session: Session | None = None) -> Gallery:
        with self.sessions() as own:
            found = (session or own).scalar(sa.select(Gallery).where(Gallery.name == name))
        if found is None:
            raise GalleryNotFound(f"no gallery named {name!r}")
        return found

    def list_galleries(self) -> list[tuple[Gallery, int]]:
        with self.sessions() as s:
            rows = s.execute(sa.select(Gallery, sa.func.count(Subject.id))
                             .outerjoin(Subject).group_by(Gallery.id).order_by(Gallery.name))
            return [(g, n) for g, n in rows]

    def subjects(self, gallery_name: str) -> list[Subject]:
        gallery = self.gallery(gallery_name)
        with self.sessions() as s:
            return list(s.scalars(sa.select(Subject).where(Subject.gallery_id == gallery.id)
                                  .options(selectinload(Subject.consents),
                                           selectinload(Subject.templates))
                                  .order_by(Subject.display_name)))

    def subject(self, subject_id: str) -> Subject:
        """One subject with its gallery, consents and templates."""
        with self.sessions() as s:
            found = s.scalar(sa.select(Subject).where(Subject.id == subject_id)
                             .options(selectinload(Subject.consents),
                                      selectinload(Subject.templates),
                                      selectinload(Subject.gallery)))
        if found is None:
            raise GalleryNotFound(f"no subject {subject_id}")
        return found

    def subject_face(self, subject_id: str) -> Face:
        """The subject as a `Face` for api.verify: its search vector (the centroid of its
        templates of the gallery's model) as the embedding; no box or landmarks."""
        subject = self.subject(subject_id)
        embedder = subject.gallery.embedder
        data_key = self.master.unwrap(subject.wrapped_key, subject.id)
        vectors = [np.frombuffer(unseal(data_key, t.vector, context("template", subject.id)),
                                 np.float32) for t in subject.templates if t.embedder == embedder]
        if not vectors:
            raise GalleryError(f"subject {subject_id} has no {embedder} template: re-enrol")
        return Face(box=np.zeros(4, np.float32), landmarks=np.zeros((5, 2), np.float32),
                    score=1.0, detector="gallery", embedding=_centroid(vectors),
                    embedder=embedder)

    def check_pin(self, subject_id: str, pin: str | None) -> bool | None:
        """True/False if the subject has a PIN and `pin` is/is not it; None if it has none."""
        stored = (self.subject(subject_id).attributes or {}).get("pin")
        if stored is None:
            return None
        return pin is not None and verify_pin(stored, pin)

    def remove_gallery(self, name: str) -> None:
        gallery = self.gallery(name)
        for subject in self.subjects(name):
            self.delete_subject(subject.id)
        with self.sessions.begin() as s:
            s.execute(sa.delete(Gallery).where(Gallery.id == gallery.id))
        index_store.remove(self.index_dir, gallery.id)
        self._indexes.pop(gallery.id, None)
        checkpoint(self.engine)

    # ------------------------------------------------------------------ enrolment
    def enroll(self, gallery_name: str, name: str, images: list[ImageSource], *,
               consent: ConsentRecord, external_id: str | None = None,
               watch_reason: str | None = None, watch_expires: datetime | None = None,
               labels: list[str] | None = None, pin: str | None = None) -> EnrolReport:
        """Enrol one person from one or more images, all in one transaction.

        Refused without a lawful basis; watchlist galleries also need a reason and an expiry.
        Images with no face, several faces or a poor-quality face are skipped with the reason
        (named by `labels`, e.g. upload file names, if given); if none is usable the subject
        is not created. A `pin` (4–12 digits) becomes a second factor for door decisions; only
        its scrypt hash is stored.
        """
        from facelens import api

        gallery = self.gallery(gallery_name)
        consent.check()
        if pin is not None and not (pin.isdigit() and 4 <= len(pin) <= 12):
            raise GalleryError("a PIN is 4 to 12 digits")
        if gallery.is_watchlist and (not watch_reason or watch_expires is None):
            raise GalleryError(f"gallery {gallery_name!r} is a watchlist: every entry needs "
                               "a reason and an expiry")
        vectors, qualities, crops, skipped = [], [], [], []
        for number, image in enumerate(images):
            label = (labels[number] if labels else
                     str(image) if isinstance(image, (str, Path)) else f"image {number}")
            try:
                rgb = load_image(image)
                faces = api.embed(rgb, embedder=gallery.embedder, second_chance=True)
            except FacelensError as e:
                skipped.append((label, str(e)))
                continue
            usable = [f for f in faces if f.quality and f.quality.acceptable]
            if not faces:
                skipped.append((label, "no face found"))
            elif len(faces) > 1 and len(usable) != 1:
                skipped.append((label, f"{len(faces)} faces: enrol from a photo of one person"))
            elif not usable:
                assert faces[0].quality is not None
                skipped.append((label, "poor face: " + ", ".join(faces[0].quality.reasons)))
            else:
                face = usable[0]
                assert face.embedding is not None and face.quality is not None
                vectors.append(face.embedding)
                qualities.append(face.quality.score)
                crops.append(enrolment_crop(rgb, face) if gallery.keep_crops else None)
        if not vectors:
            reasons = "; ".join(f"{img}: {why}" for img, why in skipped) or "no images"
            raise NoFaceError(f"nothing to enrol for {name}: {reasons}")

        with self._lock:
            index = self._index(gallery)  # up to date before the commit, so the add below
            synced = self._indexes[gallery.id][1]  # is all that changes in it
        subject_id = str(uuid.uuid4())
        data_key = new_data_key()
        with self.sessions.begin() as s:
            subject = Subject(id=subject_id, gallery_id=gallery.id, display_name=name,
                              external_id=external_id,
                              attributes={"pin": hash_pin(pin)} if pin else {},
                              wrapped_key=self.master.wrap(data_key, subject_id),
                              key_id=self.master.id, watch_reason=watch_reason,
                              watch_expires=watch_expires)
            subject.consents.append(Consent(
                purpose=consent.purpose, legal_basis=consent.legal_basis,
                recorded_by=consent.recorded_by, expires_at=consent.expires_at,
                granted_at=consent.granted_at or utcnow()))
            for vector, quality, crop in zip(vectors, qualities, crops, strict=True):
                subject.templates.append(Template(
                    embedder=gallery.embedder, quality=quality,
                    vector=seal(data_key, np.asarray(vector, np.float32).tobytes(),
                                context("template", subject_id)),
                    crop=seal(data_key, crop, context("crop", subject_id)) if crop else None))
            s.add(subject)
            version = _bump(s, gallery.id)
            s.flush()
            index_id = min(t.id for t in subject.templates)
        with self._lock:
            index.add(np.array([index_id], np.int64), _centroid(vectors)[None])
            self._save_index(gallery, index)
            self._remember(gallery.id, index, synced, version)
        return EnrolReport(subject_id, name, len(vectors), skipped)

    # ------------------------------------------------------------------ identification
    def identify(self, gallery_name: str, image: ImageSource, *, far: float = 1e-3,
                 top_k: int = 5) -> list[Identification]:
        """Who is each face in `image`? Candidates above the open-set threshold, or unknown.

        `far` is the chance, per face searched, that anyone not enrolled gets a candidate
        (FPIR); the per-comparison threshold follows from it and the gallery size
        (matching/open_set.py)."""
        from facelens import api

        gallery = self.gallery(gallery_name)
        faces = api.embed(load_image(image), embedder=gallery.embedder)
        return self.match(gallery_name, faces, far=far, top_k=top_k)

    def match(self, gallery_name: str, faces: list[Face], *, far: float = 1e-3,
              top_k: int = 5) -> list[Identification]:
        """identify() for faces embedded already (by the gallery's embedder), e.g. the best
        shot of a camera track."""
        gallery = self.gallery(gallery_name)
        if not faces:
            return []
        if any(f.embedding is None or f.embedder != gallery.embedder for f in faces):
            raise GalleryError(f"faces must carry {gallery.embedder} embeddings")
        with self._lock:
            index = self._index(gallery)
            size = len(index)
            threshold = open_set_threshold(gallery.embedder, far, size or 1)
            scores, ids = index.search(np.stack([f.embedding for f in faces]),
                                       min(max(top_k * 4, 16), max(size, 1)))
        results = []
        with self.sessions.begin() as s:
            for face, row_scores, row_ids in zip(faces, scores, ids, strict=True):
                results.append(Identification(
                    face, self._candidates(s, face, row_scores, row_ids, threshold.value,
                                           top_k),
                    threshold.describe(gallery.embedder, size, far), gallery.embedder,
                    max(size, 1)))
            seen = {r.candidates[0].subject_id for r in results if r.candidates}
            if seen:  # retention counts from the last time someone was recognised
                s.execute(sa.update(Subject).where(Subject.id.in_(seen))
                          .values(last_seen_at=utcnow()))
        return results

    def _candidates(self, s: Session, face: Face, scores: np.ndarray, ids: np.ndarray,
                    threshold: float, top_k: int) -> list[Candidate]:
        keep = (ids >= 0) & (scores > threshold)
        if not keep.any():
            return []
        rows = {template_id: subject for template_id, subject in s.execute(
            sa.select(Template.id, Subject).join(Subject, Template.subject_id == Subject.id)
            .where(Template.id.in_(ids[keep].tolist())))}
        best: dict[str, Candidate] = {}
        for score, template_id in zip(scores[keep], ids[keep], strict=True):
            subject = rows.get(int(template_id))
            if subject is None or subject.id in best:
                continue
            if self._rejected(s, subject, face, float(score)):
                continue
            best[subject.id] = Candidate(subject.id, subject.display_name, float(score))
        return sorted(best.values(), key=lambda c: -c.score)[:top_k]

    def _rejected(self, s: Session, subject: Subject, face: Face, score: float) -> bool:
        """True if a reviewer said a face like this one is not `subject`: the probe is the
        same person as a stored negative example (above the FAR 1e-3 threshold) and closer to
        it than to the subject's own templates (`score`)."""
        negatives = s.scalars(sa.select(NegativeExample.vector)
                              .where(NegativeExample.subject_id == subject.id)).all()
        if not negatives:
            return False
        assert face.embedding is not None and face.embedder is not None
        data_key = self.master.unwrap(subject.wrapped_key, subject.id)
        same = operating_point(face.embedder, 1e-3).threshold
        for blob in negatives:
            negative = np.frombuffer(unseal(data_key, blob, context("negative", subject.id)),
                                     np.float32)
            similarity = float(negative @ face.embedding)
            if similarity > same and similarity > score:
                return True
        return False

    def not_this_person(self, subject_id: str, face: Face) -> None:
        """Record that `face` (as returned by identify) is not `subject_id`."""
        if face.embedding is None:
            raise GalleryError("the face carries no embedding")
        with self.sessions.begin() as s:
            subject = s.get(Subject, subject_id)
            if subject is None:
                raise GalleryNotFound(f"no subject {subject_id}")
            data_key = self.master.unwrap(subject.wrapped_key, subject.id)
            s.add(NegativeExample(subject_id=subject_id, embedder=face.embedder or "",
                                  vector=seal(data_key, face.embedding.astype(np.float32)
                                              .tobytes(), context("negative", subject_id))))

    # ------------------------------------------------------------------ deletion, retention
    def delete_subject(self, subject_id: str, gallery_name: str | None = None) -> None:
        """Crypto-shred: the wrapped key and templates go, the vectors leave the index."""
        with self.sessions() as s:
            owner = s.scalar(sa.select(Gallery).join(Subject).where(Subject.id == subject_id))
        synced = -1
        if owner is not None:
            with self._lock:
                self._index(owner)  # up to date before the delete
                synced = self._indexes[owner.id][1]
        with self.sessions.begin() as s:
            subject = s.get(Subject, subject_id)
            gallery = s.get(Gallery, subject.gallery_id) if subject else None
            if subject is None or gallery is None or gallery_name not in (None, gallery.name):
                where = f" in gallery {gallery_name!r}" if gallery_name else ""
                raise GalleryNotFound(f"no subject {subject_id}{where}")
            ids = np.array([t.id for t in subject.templates], np.int64)
            s.delete(subject)
            version = _bump(s, gallery.id)
        with self._lock:
            index = self._indexes[gallery.id][0]
            index.remove(ids)
            self._save_index(gallery, index)
            self._remember(gallery.id, index, synced, version)
        checkpoint(self.engine)

    def purge(self, now: datetime | None = None) -> list[str]:
        """Delete subjects whose consent or watchlist entry expired, or who have not been seen
        for their gallery's retention period. Returns the deleted subject ids."""
        now = now or datetime.now(UTC)
        doomed = []
        with self.sessions() as s:
            for subject, gallery in s.execute(sa.select(Subject, Gallery).join(Gallery)):
                consents = s.scalars(sa.select(Consent).where(Consent.subject_id == subject.id))
                valid = [c for c in consents if c.expires_at is None or aware(c.expires_at) > now]
                stale = aware(subject.last_seen_at) < now - timedelta(days=gallery.retention_days)
                expired = subject.watch_expires is not None and aware(subject.watch_expires) <= now
                if not valid or stale or expired:
                    doomed.append(subject.id)
        for subject_id in doomed:
            self.delete_subject(subject_id)
        return doomed

    # ------------------------------------------------------------------ model change, keys
    def change_embedder(self, gallery_name: str, embedder: str) -> list[Subject]:
        """Switch a gallery's model. Returns the subjects that must re-enrol: those with no
        template of the new model (crops are kept only where the gallery was set to)."""
        if embedder not in DIMS:
            raise GalleryError(f"unknown embedder {embedder!r}")
        gallery = self.gallery(gallery_name)
        with self.sessions.begin() as s:
            s.execute(sa.update(Gallery).where(Gallery.id == gallery.id)
                      .values(embedder=embedder))
            _bump(s, gallery.id)
        with self._lock:
            self._indexes.pop(gallery.id, None)
        stale = [subject for subject in self.subjects(gallery_name)
                 if not any(t.embedder == embedder for t in subject.templates)
                 and not self._reembed_from_crops(subject, embedder)]
        self._index(self.gallery(gallery_name))
        return stale

    def _reembed_from_crops(self, subject: Subject, embedder: str) -> bool:
        """New templates from the subject's kept enrolment crops; False if none worked."""
        from facelens import api

        crops = [t.crop for t in subject.templates if t.crop]
        if not crops:
            return False
        data_key = self.master.unwrap(subject.wrapped_key, subject.id)
        added = []
        for blob in crops:
            crop = unseal(data_key, blob, context("crop", subject.id))
            faces = api.embed(crop, embedder=embedder, second_chance=True)
            if faces:
                face = api.main_face(faces)
                assert face.embedding is not None
                added.append(Template(
                    embedder=embedder, quality=face.quality.score if face.quality else 0.0,
                    vector=seal(data_key, face.embedding.astype(np.float32).tobytes(),
                                context("template", subject.id)), crop=blob))
        if added:
            with self.sessions.begin() as s:
                for template in added:
                    template.subject_id = subject.id
                    s.add(template)
                _bump(s, subject.gallery_id)
        return bool(added)

    def rotate_master_key(self) -> str:
        """Re-wrap every subject's data key under a new master key; returns the new key id.

        Crash-safe: the new key is written beside the old one first, the database is re-wrapped
        in one transaction, then the new key file replaces the old (see _finish_rotation)."""
        if self.master.source == ENV_KEY:
            raise GalleryError(f"the master key comes from {ENV_KEY}: rotate by setting a new "
                               "key file instead (unset the variable), or re-wrap offline")
        with self.sessions() as s:
            galleries = list(s.scalars(sa.select(Gallery)))
        with self._lock:
            for gallery in galleries:  # load every index under the old key before it goes
                self._index(gallery)
        new = MasterKey(new_data_key(), str(self.key_file))
        pending = self.key_file.with_name(self.key_file.name + ".next")
        write_key_file(pending, new.key)
        with self.sessions.begin() as s:
            for subject in s.scalars(sa.select(Subject)):
                data_key = self.master.unwrap(subject.wrapped_key, subject.id)
                subject.wrapped_key = new.wrap(data_key, subject.id)
                subject.key_id = new.id
        os.replace(pending, self.key_file)
        self.master = new
        with self._lock:
            for gallery_id, (index, _) in self._indexes.items():
                if isinstance(index, AutoIndex):
                    index_store.save(self.index_dir, gallery_id, new.derive("index"), index)
        checkpoint(self.engine)
        return new.id

    def _finish_rotation(self) -> None:
        """After a crash mid-rotation: keep whichever key the database is wrapped with."""
        pending = self.key_file.with_name(self.key_file.name + ".next")
        if not pending.exists() or self.master.source == ENV_KEY:
            return
        candidate = MasterKey(read_key_file(pending), str(self.key_file))
        with self.sessions() as s:
            used = s.scalar(sa.select(Subject.key_id).limit(1))
        if used == candidate.id:
            os.replace(pending, self.key_file)
            self.master = candidate
        else:
            pending.unlink()

    # ------------------------------------------------------------------ the index cache
    def _decrypted_centroids(self, gallery: Gallery) -> tuple[np.ndarray, np.ndarray]:
        """One vector per subject (the normalised mean of its templates), keyed by the
        subject's first template id."""
        ids, vectors = [], []
        with self.sessions() as s:
            for subject in s.scalars(sa.select(Subject).where(Subject.gallery_id == gallery.id)
                                     .options(selectinload(Subject.templates))):
                templates = [t for t in subject.templates if t.embedder == gallery.embedder]
                if not templates:
                    continue
                data_key = self.master.unwrap(subject.wrapped_key, subject.id)
                ids.append(min(t.id for t in templates))
                vectors.append(_centroid([np.frombuffer(unseal(
                    data_key, t.vector, context("template", subject.id)), np.float32)
                    for t in templates]))
        dim = DIMS[gallery.embedder]
        return (np.array(ids, np.int64),
                np.stack(vectors) if vectors else np.zeros((0, dim), np.float32))

    def _index(self, gallery: Gallery) -> VectorIndex:
        """The gallery's index: from memory, else from Milvus or its encrypted file, checked
        against the database and rebuilt from the templates when they disagree."""
        signature = self._signature(gallery)
        cached = self._indexes.get(gallery.id)
        if cached and cached[1] == signature:
            return cached[0]
        dim = DIMS[gallery.embedder]
        index: VectorIndex | None
        if self.settings.milvus_uri:
            index = MilvusIndex(dim, self.settings.milvus_uri, _milvus_collection(gallery))
        else:
            index = index_store.load(self.index_dir, gallery.id, self.master.derive("index"), dim)
        with self.sessions() as s:
            truth = set(s.scalars(sa.select(sa.func.min(Template.id)).join(Subject)
                                  .where(Subject.gallery_id == gallery.id,
                                         Template.embedder == gallery.embedder)
                                  .group_by(Template.subject_id)))
        if index is None or set(index.ids().tolist()) != truth:
            ids, vectors = self._decrypted_centroids(gallery)
            if isinstance(index, MilvusIndex):
                index.remove(index.ids())
            else:
                index = AutoIndex(dim)
            if len(ids):
                index.add(ids, vectors)
            self._save_index(gallery, index)
        self._indexes[gallery.id] = (index, signature)
        return index

    def _remember(self, gallery_id: int, index: VectorIndex, synced: int, version: int
                  ) -> None:
        """Keep `index` as current at `version` if our own change is the only one since it
        was checked (at `synced`); else another process changed the gallery in between and
        the next use checks the index against the database again."""
        self._indexes[gallery_id] = (index, version if version == synced + 1 else -1)

    def _signature(self, gallery: Gallery) -> int:
        """The gallery's version (one primary-key read, whatever its size): when any process
        enrols, deletes or switches the model it moves, and the in-memory index is checked
        against the database again."""
        with self.sessions() as s:
            return int(s.scalar(sa.select(Gallery.version).where(Gallery.id == gallery.id))
                       or 0)

    def _save_index(self, gallery: Gallery, index: VectorIndex) -> None:
        if isinstance(index, AutoIndex):
            index_store.save(self.index_dir, gallery.id, self.master.derive("index"), index)
        else:  # Milvus keeps the vectors; saving purges deleted rows from its files
            self.index_dir.mkdir(parents=True, exist_ok=True)
            index.save(self.index_dir / f"gallery-{gallery.id}.milvus.json")


def _bump(s: Session, gallery_id: int) -> int:
    """Move the gallery's version, in the transaction that changes its templates; returns
    the new version."""
    return int(s.scalar(sa.update(Gallery).where(Gallery.id == gallery_id)
                        .values(version=Gallery.version + 1).returning(Gallery.version)) or 0)


def hash_pin(pin: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_pin(stored: str, pin: str) -> bool:
    _, salt, digest = stored.split("$")
    candidate = hashlib.scrypt(pin.encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1)
    return hmac.compare_digest(candidate.hex(), digest)


def enrolment_crop(rgb: np.ndarray, face: Face) -> bytes:
    """The face with a wide margin (so another detector can find it again), at most 320 px,
    as PNG bytes: what a gallery that keeps crops re-embeds from when its model changes."""
    x1, y1, x2, y2 = face.box
    margin = 0.6 * max(x2 - x1, y2 - y1)
    h, w = rgb.shape[:2]
    left, top = int(max(x1 - margin, 0)), int(max(y1 - margin, 0))
    right, bottom = int(min(x2 + margin, w)), int(min(y2 + margin, h))
    crop = rgb[top:bottom, left:right]
    scale = min(1.0, 320 / max(crop.shape[:2]))
    if scale < 1:
        crop = cv2.resize(crop, (round(crop.shape[1] * scale), round(crop.shape[0] * scale)),
                          interpolation=cv2.INTER_AREA)
    ok, png = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    if not ok:
        raise GalleryError("could not encode the enrolment crop")
    return png.tobytes()


def _centroid(vectors: list[np.ndarray]) -> np.ndarray:
    """A subject's search vector: the normalised mean of its templates. Measured on lfw-dev
    (2 templates per person, docs/decisions.md) it beats max-over-templates on FNIR."""
    return l2_normalize(np.mean(np.stack(vectors).astype(np.float32), axis=0))


def _milvus_collection(gallery: Gallery) -> str:
    return f"facelens_g{gallery.id}_{gallery.embedder.replace('-', '_')}"

