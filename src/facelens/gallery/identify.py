"""1:N identification: search a gallery's index, keep the results above the open-set threshold
of the probe's quality band with their confidence band (matching/decide.py), drop those a
reviewer marked "not this person", and record corrections."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from facelens.api import Engine
from facelens.face import Face
from facelens.gallery.catalogue import Catalogue
from facelens.gallery.errors import GalleryError, GalleryNotFound
from facelens.gallery.expiry import lapsed
from facelens.gallery.index_cache import IndexCache
from facelens.gallery.templates import seal_vector, unseal_vector
from facelens.matching.calibration import probe_in_band
from facelens.matching.decide import Hit, decide
from facelens.store.database import Store
from facelens.store.tables import NegativeExample, Subject, Template, utcnow
from facelens.vision.decode import ImageSource, load_image

NEAR_DUPLICATE = {"fusion": 0.95}
"""Similarity above which a probe is the corrected picture again (re-encoded, re-cropped, the
next frame of the same shot), not merely the same person; cosine 0.9 for the other models.
On lfw-dev (120 people with 3+ photos) ~95 % of altered copies of a photo score above it and
one wrong correction suppresses 0.24 % (fusion) and 0 % (sface-flip) of the person's other
true matches (docs/decisions.md)."""


@dataclass(frozen=True)
class Correction:
    """A reviewer's "not this person" for one subject."""

    id: int
    subject_id: str
    created_at: datetime


@dataclass(frozen=True)
class Candidate:
    subject_id: str
    name: str
    score: float
    band: str
    """Confidence band of the score over the gallery size: high, medium, low or none."""
    fpir: float | None
    """The band's FPIR (None for "none")."""


@dataclass
class Identification:
    face: Face
    candidates: list[Candidate]
    """Best first; empty means unknown."""
    decision: str
    """How the threshold was chosen (open-set formula, FPIR, gallery size, quality cell)."""
    threshold: float
    """The open-set threshold the candidates cleared (the probe's quality cell's)."""

    @property
    def unknown(self) -> bool:
        return not self.candidates


class Identifier:
    def __init__(self, store: Store, engine: Engine, catalogue: Catalogue,
                 cache: IndexCache) -> None:
        self.store, self.engine, self.catalogue, self.cache = store, engine, catalogue, cache

    def identify(self, gallery_name: str, image: ImageSource, *, far: float = 1e-3,
                 top_k: int = 5) -> list[Identification]:
        """Who is each face in `image` (a decoded RGB array or anything `load_image` reads)?
        Candidates above the open-set threshold, or unknown.

        `far` is the chance, per face searched, that anyone not enrolled gets a candidate
        (FPIR); the per-comparison threshold follows from it and the gallery size
        (matching/open_set.py)."""
        gallery = self.catalogue.gallery(gallery_name)
        rgb = load_image(image)
        faces, chips = self.engine.detect_rgb(rgb)
        if faces:
            self.engine.embed_rgb(rgb, faces, embedder=gallery.embedder, chips=chips)
        return self.match(gallery_name, faces, far=far, top_k=top_k)

    def match(self, gallery_name: str, faces: list[Face], *, far: float = 1e-3,
              top_k: int = 5, record_seen: bool = True) -> list[Identification]:
        """identify() for faces embedded already (by the gallery's embedder), e.g. the best
        shot of a camera track. `record_seen=False` for a look that names nobody (a camera's
        near-miss check): the candidates' retention clock is left alone."""
        gallery = self.catalogue.gallery(gallery_name)
        if not faces:
            return []
        if any(f.embedding is None or f.embedder != gallery.embedder for f in faces):
            raise GalleryError(f"faces must carry {gallery.embedder} embeddings")
        # each probe searches with its quality band's weight and open-set thresholds
        probes = [probe_in_band(self.engine.calibration, f.embedding, gallery.embedder,
                                None if f.quality is None else
                                (f.quality.interocular_px, f.quality.sharpness),
                                self.engine.fusion_weight()) for f in faces]
        with self.cache.lock:
            index = self.cache.index(gallery)
            size = len(index)
            scores, ids = index.search(np.stack([vector for _, _, vector in probes]),
                                       min(max(top_k * 4, 16), max(size, 1)))
        results = []
        with self.store.sessions.begin() as s:
            for face, (band, banded, _), row_scores, row_ids in zip(faces, probes, scores, ids,
                                                                   strict=True):
                threshold = banded.open_set_threshold(gallery.embedder, far, size or 1)
                hits = decide(row_ids, row_scores, threshold.value, banded, gallery.embedder,
                              max(size, 1))
                decision = threshold.describe(gallery.embedder, size, far)
                results.append(Identification(
                    face, self._candidates(s, face, hits, top_k),
                    decision + (f"; {band} quality band" if band else ""), threshold.value))
            seen = {r.candidates[0].subject_id for r in results if r.candidates}
            # retention counts from the last time someone was recognised
            if seen and record_seen:
                s.execute(sa.update(Subject).where(Subject.id.in_(seen))
                          .values(last_seen_at=utcnow()))
        return results

    def _candidates(self, s: Session, face: Face, hits: list[Hit], top_k: int
                    ) -> list[Candidate]:
        """The hits as subjects, one candidate each, without those a reviewer rejected or
        whose consent or watchlist entry lapsed."""
        if not hits:
            return []
        rows = {template_id: subject for template_id, subject in s.execute(
            sa.select(Template.id, Subject).join(Subject, Template.subject_id == Subject.id)
            .where(Template.id.in_([h.id for h in hits])))}
        best: dict[str, Candidate] = {}
        for hit in hits:
            subject = rows.get(hit.id)
            if subject is None or subject.id in best or lapsed(subject, subject.consents):
                continue
            if self._rejected(s, subject, face):
                continue
            best[subject.id] = Candidate(subject.id, subject.display_name, hit.score,
                                         hit.band, hit.fpir)
        return list(best.values())[:top_k]

    def _rejected(self, s: Session, subject: Subject, face: Face) -> bool:
        """True if a reviewer said this picture is not `subject`: the probe is a near-duplicate
        of a stored correction. Other photos of the same person are not suppressed, so a
        correction made in error costs one picture, not the person."""
        negatives = s.scalars(sa.select(NegativeExample.vector)
                              .where(NegativeExample.subject_id == subject.id)).all()
        if not negatives:
            return False
        assert face.embedding is not None
        data_key = self.store.master.unwrap(subject.wrapped_key, subject.id)
        bound = NEAR_DUPLICATE.get(face.embedder or "", 0.9)
        return any(float(unseal_vector(data_key, blob, "negative", subject.id) @ face.embedding)
                   > bound for blob in negatives)

    def not_this_person(self, subject_id: str, face: Face) -> Correction:
        """Record that `face` (as returned by identify) is not `subject_id`."""
        if face.embedding is None:
            raise GalleryError("the face carries no embedding")
        with self.store.sessions.begin() as s:
            subject = s.get(Subject, subject_id)
            if subject is None:
                raise GalleryNotFound(f"no subject {subject_id}")
            data_key = self.store.master.unwrap(subject.wrapped_key, subject.id)
            negative = NegativeExample(subject_id=subject_id, embedder=face.embedder or "",
                                       vector=seal_vector(data_key, face.embedding,
                                                          "negative", subject_id))
            s.add(negative)
            s.flush()
            return Correction(negative.id, subject_id, negative.created_at)

    def corrections(self, subject_id: str) -> list[Correction]:
        """The subject's corrections, oldest first."""
        self.catalogue.subject(subject_id)  # GalleryNotFound for an unknown subject
        with self.store.sessions() as s:
            return [Correction(n.id, n.subject_id, n.created_at) for n in s.scalars(
                sa.select(NegativeExample).where(NegativeExample.subject_id == subject_id)
                .order_by(NegativeExample.id))]

    def undo_correction(self, subject_id: str, correction_id: int) -> None:
        """Forget one correction: the picture may match the subject again."""
        with self.store.sessions.begin() as s:
            gone = s.execute(sa.delete(NegativeExample).where(
                NegativeExample.id == correction_id,
                NegativeExample.subject_id == subject_id)).rowcount
        if not gone:
            raise GalleryNotFound(f"no correction {correction_id} of subject {subject_id}")
