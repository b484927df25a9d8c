"""A subject's biometric data at rest: vectors sealed under the subject's data key, the
centroid that searches for the subject, and the gallery version that moves with every change.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from facelens.store.crypto import MasterKey, context, seal, unseal
from facelens.store.tables import Gallery, Subject


def seal_vector(data_key: bytes, vector: np.ndarray, kind: str, subject_id: str) -> bytes:
    """A float32 vector sealed for one subject; `kind` ("template", "negative") is bound in."""
    return seal(data_key, np.asarray(vector, np.float32).tobytes(), context(kind, subject_id))


def unseal_vector(data_key: bytes, blob: bytes, kind: str, subject_id: str) -> np.ndarray:
    return np.frombuffer(unseal(data_key, blob, context(kind, subject_id)), np.float32)


def seal_reference(data_key: bytes, jpeg: bytes | None, subject_id: str) -> bytes | None:
    """The subject's reference picture sealed like its templates (None stays None)."""
    return seal(data_key, jpeg, context("reference", subject_id)) if jpeg else None


def unseal_reference(data_key: bytes, blob: bytes, subject_id: str) -> bytes:
    return unseal(data_key, blob, context("reference", subject_id))


def subject_vectors(master: MasterKey, subject: Subject, embedder: str) -> list[np.ndarray]:
    """The subject's templates made by `embedder`, decrypted (its templates must be loaded)."""
    templates = [t for t in subject.templates if t.embedder == embedder]
    if not templates:
        return []
    data_key = master.unwrap(subject.wrapped_key, subject.id)
    return [unseal_vector(data_key, t.vector, "template", subject.id) for t in templates]


def centroid(vectors: list[np.ndarray]) -> np.ndarray:
    """A subject's search vector: the plain mean of its (unit) templates, not renormalised, so
    its inner product with a probe is the mean template score. Renormalising raised impostor
    scores above what the open-set thresholds (fitted on single photos) expect: with 2 photos
    per person measured FPIR 0.30% at asked 0.1%; the plain mean measures 0.03% at FNIR 0.058
    (docs/decisions.md). One template: the template itself."""
    return np.mean(np.stack(vectors).astype(np.float32), axis=0)


def bump_version(s: Session, gallery_id: int) -> int:
    """Move the gallery's version, in the transaction that changes its templates; returns
    the new version."""
    return int(s.scalar(sa.update(Gallery).where(Gallery.id == gallery_id)
                        .values(version=Gallery.version + 1).returning(Gallery.version)) or 0)
