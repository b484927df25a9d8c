"""Helpers of the gallery tests: opening galleries, what the database and the index files hold,
and searches of every file for plaintext vectors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa

import facelens
from facelens.gallery import index_store
from facelens.gallery.enrol import ConsentRecord
from facelens.gallery.identify import Identification
from facelens.gallery.service import Galleries
from facelens.index import AutoIndex, ExactIndex
from facelens.settings import EMBEDDER_DIMS, Settings
from facelens.store.crypto import unseal
from facelens.store.tables import Subject, Template

CONSENT = ConsentRecord(purpose="staff-door", legal_basis="consent", recorded_by="test-suite")
PEOPLE = {"obama": "obama.jpg", "biden": "biden.jpg"}
GALLERIES = {"fusion": "fusion", "flip": "sface-flip"}


@dataclass(frozen=True)
class Enrolled:
    data_dir: Path
    ids: dict[tuple[str, str], str]
    """(gallery, person) -> subject id."""


def open_galleries(data_dir: Path, **settings: object) -> Galleries:
    return Galleries(Settings(data_dir=data_dir, **settings))


def subject_count(g: Galleries) -> int:
    with g.store.sessions() as s:
        return int(s.scalar(sa.select(sa.func.count(Subject.id))) or 0)


def subject_id(g: Galleries, gallery: str, name: str) -> str:
    (found,) = [s.id for s in g.subjects(gallery) if s.display_name == name]
    return found


def db_index_ids(g: Galleries, gallery_name: str) -> set[int]:
    """The ids the gallery's index must hold according to the database: one entry per subject
    with templates of the gallery's model, keyed by its first template id (the index holds one
    centroid per subject)."""
    gallery = g.gallery(gallery_name)
    with g.store.sessions() as s:
        return set(s.scalars(sa.select(sa.func.min(Template.id)).join(Subject)
                             .where(Subject.gallery_id == gallery.id,
                                    Template.embedder == gallery.embedder)
                             .group_by(Template.subject_id)))


def load_index_file(g: Galleries, gallery_name: str) -> AutoIndex:
    """The gallery's encrypted index file, decrypted and read back from disk."""
    gallery = g.gallery(gallery_name)
    index = index_store.load(g.cache.index_dir, gallery.id, g.store.master.derive("index"),
                             EMBEDDER_DIMS[gallery.embedder])
    assert index is not None, f"no readable index file for {gallery_name} in {g.cache.index_dir}"
    return index


def index_file_ids(g: Galleries, gallery_name: str) -> set[int]:
    return set(load_index_file(g, gallery_name).ids().tolist())


def plaintexts(g: Galleries, gallery_name: str) -> dict[str, np.ndarray]:
    """Every plaintext vector the gallery protects: each template (decrypted with the subject's
    unwrapped data key) and each vector of its index (decrypted from the index file)."""
    gallery = g.gallery(gallery_name)
    found = {}
    with g.store.sessions() as s:
        for subject in s.scalars(sa.select(Subject).where(Subject.gallery_id == gallery.id)):
            data_key = g.store.master.unwrap(subject.wrapped_key, subject.id)
            for t in subject.templates:  # sealed with the context "template:<subject id>"
                plain = unseal(data_key, t.vector, f"template:{subject.id}".encode())
                found[f"{gallery_name}/{subject.display_name}/template {t.id}"] = np.frombuffer(
                    plain, np.float32)
    index = load_index_file(g, gallery_name)
    assert isinstance(index.inner, ExactIndex)  # small galleries: exact, float32
    for i, vector in zip(index.ids().tolist(), index.inner.vectors(), strict=True):
        found[f"{gallery_name}/index vector {i}"] = vector
    return found


def names(result: Identification) -> list[str]:
    return [c.name for c in result.candidates]


def only_face(image: Path, embedder: str) -> np.ndarray:
    faces = facelens.embed(image, embedder=embedder)
    assert len(faces) == 1, f"{image.name}: {len(faces)} faces"
    assert faces[0].embedding is not None
    return faces[0].embedding


def data_files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def leaks(root: Path, vectors: dict[str, np.ndarray]) -> list[str]:
    """Where the plaintext of any vector sits in any file under `root`: the whole vector as
    float32 or float16, or any 32-byte run of either (8 floats / 16 halves), at any offset."""
    files = data_files(root)
    windows = {p: {data[i:i + 32] for i in range(len(data) - 31)} for p, data in files.items()}
    found = []
    for label, vector in vectors.items():
        for dtype in (np.float32, np.float16):
            raw = np.ascontiguousarray(vector, dtype).tobytes()
            step = np.dtype(dtype).itemsize
            runs = {raw[i:i + 32] for i in range(0, len(raw) - 31, step)}
            for path, data in files.items():
                if raw in data or not runs.isdisjoint(windows[path]):
                    found.append(f"{label} ({np.dtype(dtype).name}) in {path.relative_to(root)}")
    return found


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root but SQLite's -shm (a shared-memory index, no data)."""
    return {str(p.relative_to(root)): hashlib.sha256(data).hexdigest()
            for p, data in data_files(root).items() if not p.name.endswith("-shm")}
