"""Galleries end to end, on the real models and the MIT fixture photos (no mocks).

Enrolment rules, encryption at rest (no plaintext vector in any file), crypto-shredding,
kill -9 mid-enrolment, PostgreSQL = SQLite, open-set identify, "not this person", key rotation
(and crashes in the middle of it), the key file's mode, purge, model change, and the index as a
cache of the database.

Most tests work on a private copy of one module-wide data directory (enrolling costs ~0.3-2 s
a face); the "fusion" gallery (the default embedder) and a faster "flip" (sface-flip) gallery
both hold obama (obama.jpg) and biden (biden.jpg).
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

import facelens
from facelens.errors import NoFaceError
from facelens.gallery import index_store
from facelens.gallery.service import (
    DIMS,
    LEGAL_BASES,
    ConsentRecord,
    Galleries,
    GalleryError,
    Identification,
)
from facelens.index.indexes import AutoIndex, ExactIndex
from facelens.matching.open_set import per_comparison_far, threshold_for_far
from facelens.settings import Settings
from facelens.store.crypto import (
    ENV_KEY,
    MasterKey,
    MasterKeyError,
    new_data_key,
    seal,
    unseal,
    write_key_file,
)
from facelens.store.tables import Consent, Subject, Template

CONSENT = ConsentRecord(purpose="staff-door", legal_basis="consent", recorded_by="test-suite")
PEOPLE = {"obama": "obama.jpg", "biden": "biden.jpg"}
GALLERIES = {"fusion": "fusion", "flip": "sface-flip"}


# --------------------------------------------------------------------------- helpers
def open_galleries(data_dir: Path, **settings: object) -> Galleries:
    return Galleries(Settings(data_dir=data_dir, **settings))


@pytest.fixture
def opened() -> Iterator[Callable[..., Galleries]]:
    """opened(data_dir, **settings) -> Galleries; every engine is disposed at teardown."""
    made: list[Galleries] = []

    def open_(data_dir: Path, **settings: object) -> Galleries:
        g = open_galleries(data_dir, **settings)
        made.append(g)
        return g

    yield open_
    for g in made:
        g.engine.dispose()


def subject_count(g: Galleries) -> int:
    with g.sessions() as s:
        return int(s.scalar(sa.select(sa.func.count(Subject.id))) or 0)


def subject_id(g: Galleries, gallery: str, name: str) -> str:
    (found,) = [s.id for s in g.subjects(gallery) if s.display_name == name]
    return found


def db_index_ids(g: Galleries, gallery_name: str) -> set[int]:
    """The ids the gallery's index must hold according to the database: one entry per subject
    with templates of the gallery's model, keyed by its first template id (the index holds one
    centroid per subject)."""
    gallery = g.gallery(gallery_name)
    with g.sessions() as s:
        return set(s.scalars(sa.select(sa.func.min(Template.id)).join(Subject)
                             .where(Subject.gallery_id == gallery.id,
                                    Template.embedder == gallery.embedder)
                             .group_by(Template.subject_id)))


def load_index_file(g: Galleries, gallery_name: str) -> AutoIndex:
    """The gallery's encrypted index file, decrypted and read back from disk."""
    gallery = g.gallery(gallery_name)
    index = index_store.load(g.index_dir, gallery.id, g.master.derive("index"),
                             DIMS[gallery.embedder])
    assert index is not None, f"no readable index file for {gallery_name} in {g.index_dir}"
    return index


def index_file_ids(g: Galleries, gallery_name: str) -> set[int]:
    return set(load_index_file(g, gallery_name).ids().tolist())


def plaintexts(g: Galleries, gallery_name: str) -> dict[str, np.ndarray]:
    """Every plaintext vector the gallery protects: each template (decrypted with the subject's
    unwrapped data key) and each vector of its index (decrypted from the index file)."""
    gallery = g.gallery(gallery_name)
    found = {}
    with g.sessions() as s:
        for subject in s.scalars(sa.select(Subject).where(Subject.gallery_id == gallery.id)):
            data_key = g.master.unwrap(subject.wrapped_key, subject.id)
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


# --------------------------------------------------------------------------- fixtures
@dataclass(frozen=True)
class Enrolled:
    data_dir: Path
    ids: dict[tuple[str, str], str]
    """(gallery, person) -> subject id."""


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Enrolled:
    """obama and biden enrolled into a "fusion" and a "flip" (sface-flip) gallery, once."""
    data_dir = tmp_path_factory.mktemp("enrolled") / "data"
    g = open_galleries(data_dir)
    ids = {}
    try:
        for gallery, embedder in GALLERIES.items():
            g.create_gallery(gallery, "staff-door", embedder=embedder)
            for person, image in PEOPLE.items():
                report = g.enroll(gallery, person, [fixtures_dir / image], consent=CONSENT)
                assert report.templates == 1 and not report.skipped, report
                ids[gallery, person] = report.subject_id
    finally:
        g.engine.dispose()
    return Enrolled(data_dir, ids)


@pytest.fixture
def copy_dir(enrolled: Enrolled, tmp_path: Path) -> Path:
    """A private copy of the enrolled data directory (key file mode preserved)."""
    target = tmp_path / "data"
    shutil.copytree(enrolled.data_dir, target)
    assert stat.S_IMODE((target / "master.key").stat().st_mode) == 0o600
    return target


# --------------------------------------------------------------------------- 1. enrolment rules
@pytest.mark.parametrize("consent, why", [
    (ConsentRecord("staff-door", "because-i-said-so", "test-suite"), "legal basis"),
    (ConsentRecord("staff-door", "", "test-suite"), "legal basis"),
    (ConsentRecord("", "consent", "test-suite"), "purpose"),
    (ConsentRecord("staff-door", "consent", ""), "recorded"),
], ids=["unknown-basis", "no-basis", "no-purpose", "no-recorder"])
def test_enrol_refused_without_lawful_basis_purpose_or_recorder(
        opened: Callable[..., Galleries], tmp_path: Path, fixtures_dir: Path,
        consent: ConsentRecord, why: str) -> None:
    assert consent.legal_basis not in LEGAL_BASES or not consent.purpose or not consent.recorded_by
    g = opened(tmp_path / "data")
    g.create_gallery("door", "staff-door", embedder="sface-flip")
    with pytest.raises(GalleryError, match=why):
        g.enroll("door", "obama", [fixtures_dir / "obama2.jpg"], consent=consent)
    assert subject_count(g) == 0
    with g.sessions() as s:
        assert s.scalar(sa.select(sa.func.count(Consent.id))) == 0


def test_every_legal_basis_is_listed() -> None:
    assert {"consent", "contract", "legal-obligation", "vital-interest", "public-task",
            "legitimate-interest"} == LEGAL_BASES


def test_watchlist_entry_needs_reason_and_expiry(opened: Callable[..., Galleries],
                                                 tmp_path: Path, fixtures_dir: Path) -> None:
    g = opened(tmp_path / "data")
    g.create_gallery("watch", "watchlist-missing-persons", embedder="sface-flip")
    assert g.gallery("watch").is_watchlist
    image = [fixtures_dir / "obama2.jpg"]
    later = datetime.now(UTC) + timedelta(days=30)
    for reason, expires in [(None, None), ("missing person report 42", None), (None, later),
                            ("", later)]:
        with pytest.raises(GalleryError, match="watchlist"):
            g.enroll("watch", "obama", image, consent=CONSENT, watch_reason=reason,
                     watch_expires=expires)
    assert subject_count(g) == 0
    with pytest.raises(GalleryError, match="no gallery"):
        g.enroll("absent", "obama", image, consent=CONSENT)


def test_unusable_images_are_skipped_with_the_reason(opened: Callable[..., Galleries],
                                                      tmp_path: Path, fixtures_dir: Path) -> None:
    # Real photo pixels: the suit below obama's face (no face at all, for either detector) and
    # the man turned away at the back of obama_and_biden.jpg (a face, but yaw ~-55°).
    no_face = tmp_path / "suit.png"
    Image.open(fixtures_dir / "obama.jpg").convert("RGB").crop((0, 650, 910, 1137)).save(no_face)
    turned = tmp_path / "turned_away.png"
    Image.open(fixtures_dir / "obama_and_biden.jpg").convert("RGB").crop(
        (1546, 959, 1858, 1309)).save(turned)
    two = fixtures_dir / "two_people.jpg"
    g = opened(tmp_path / "data")
    g.create_gallery("door", "staff-door", embedder="sface-flip")

    suit_pixels = np.asarray(Image.open(no_face))  # an in-memory image is named by position
    report = g.enroll("door", "obama", [no_face, fixtures_dir / "obama2.jpg", turned, two,
                                        suit_pixels], consent=CONSENT)
    assert report.templates == 1
    reasons = dict(report.skipped)
    assert set(reasons) == {str(no_face), str(turned), str(two), "image 4"}
    assert reasons["image 4"] == "no face found"
    assert reasons[str(no_face)] == "no face found"
    assert reasons[str(turned)].startswith("poor face: ") and "turned away" in reasons[str(turned)]
    assert reasons[str(two)].startswith("2 faces")
    assert subject_count(g) == 1

    with pytest.raises(NoFaceError) as caught:
        g.enroll("door", "nobody", [no_face, turned], consent=CONSENT)
    assert "no face found" in str(caught.value) and "turned away" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert subject_count(g) == 1
    assert [s.display_name for s in g.subjects("door")] == ["obama"]


# --------------------------------------------------------------------------- 2. encryption at rest
def test_no_plaintext_embedding_in_any_file(enrolled: Enrolled, fixtures_dir: Path,
                                            tmp_path: Path) -> None:
    g = open_galleries(enrolled.data_dir)
    try:
        needles: dict[str, np.ndarray] = {}
        for gallery in GALLERIES:
            stored = plaintexts(g, gallery)
            assert len(stored) == 4, stored.keys()  # 2 templates + 2 index vectors
            needles |= stored
        for person, image in PEOPLE.items():  # recomputed independently, as an outsider would
            fresh = only_face(fixtures_dir / image, "fusion")
            needles[f"fusion/{person} recomputed"] = fresh
            (template,) = [v for k, v in needles.items()
                           if k.startswith(f"fusion/{person}/template")]
            np.testing.assert_allclose(fresh, template, atol=1e-6)
        (hit,) = g.identify("fusion", fixtures_dir / "obama.jpg")
        assert names(hit) == ["obama"]
        assert hit.candidates[0].score == pytest.approx(1.0, abs=1e-5)
    finally:
        g.engine.dispose()

    files = data_files(enrolled.data_dir)
    names_on_disk = {str(p.relative_to(enrolled.data_dir)) for p in files}
    assert {"facelens.db", "master.key", "index/gallery-1.idx",
            "index/gallery-2.idx"} <= names_on_disk, names_on_disk
    assert leaks(enrolled.data_dir, needles) == []

    # The search is not vacuous: one 32-byte run at an odd offset is found.
    control = tmp_path / "control"
    control.mkdir()
    vector = next(iter(needles.values()))
    (control / "blob").write_bytes(b"x" * 7 + vector.astype(np.float32).tobytes()[44:76])
    assert leaks(control, {"v": vector})


# --------------------------------------------------------------------------- 3. deletion
def test_delete_subject_leaves_no_trace(opened: Callable[..., Galleries], copy_dir: Path,
                                        fixtures_dir: Path) -> None:
    g = opened(copy_dir)
    obama = {gallery: subject_id(g, gallery, "obama") for gallery in GALLERIES}
    secrets_: list[tuple[str, bytes]] = []
    vectors: dict[str, np.ndarray] = {}
    with g.sessions() as s:
        for gallery, sid in obama.items():
            subject = s.get(Subject, sid)
            assert subject is not None
            secrets_.append((f"{gallery} wrapped key", subject.wrapped_key))
            secrets_ += [(f"{gallery} sealed template {t.id}", t.vector)
                         for t in subject.templates]
            first = min(t.id for t in subject.templates)
            mine = (f"{gallery}/obama/", f"{gallery}/index vector {first}")
            vectors |= {k: v for k, v in plaintexts(g, gallery).items() if k.startswith(mine)}
    assert len(vectors) == 4, vectors.keys()  # per gallery: the template and the index vector
    before = data_files(copy_dir)
    for label, blob in secrets_:  # the control: before the deletion they are on disk
        assert any(blob in data for data in before.values()), label

    for sid in obama.values():
        g.delete_subject(sid)

    assert leaks(copy_dir, vectors) == []
    after = data_files(copy_dir)
    left = [label for label, blob in secrets_ if any(blob in data for data in after.values())]
    assert left == [], f"crypto-shredded bytes still on disk: {left}"
    for gallery in GALLERIES:
        assert [s.display_name for s in g.subjects(gallery)] == ["biden"]
        assert index_file_ids(g, gallery) == db_index_ids(g, gallery)
        assert len(db_index_ids(g, gallery)) == 1
    (face,) = g.identify("flip", fixtures_dir / "obama.jpg")
    assert "obama" not in names(face)
    with pytest.raises(GalleryError, match="no subject"):
        g.delete_subject(obama["flip"])

    again = opened(copy_dir)  # and a fresh process sees the same
    assert index_file_ids(again, "fusion") == db_index_ids(again, "fusion")


# --------------------------------------------------------------------------- 4. kill -9
CHILD = """
import sys
from pathlib import Path
from facelens.gallery.service import ConsentRecord, Galleries, GalleryError
from facelens.settings import Settings

data_dir, round_, images = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
g = Galleries(Settings(data_dir=data_dir))
try:
    g.create_gallery("crash", "staff-door", embedder="sface-flip")
except GalleryError:
    pass
consent = ConsentRecord("staff-door", "consent", "kill-test")
print("ready", flush=True)
for i in range(1000):
    name = f"obama-{round_}-{i}"
    g.enroll("crash", name, images, consent=consent)
    print("committed", name, flush=True)
"""


def _read_until(proc: subprocess.Popen[bytes], want: str, timeout: float,
                stderr: Path) -> list[str]:
    """The child's stdout lines up to the first starting with `want` (unbuffered reads, so no
    line hides in a Python buffer while select() waits)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([proc.stdout], [], [], left)[0]:
            break
        line = proc.stdout.readline().decode()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith(want):
            return lines
    proc.kill()
    proc.wait()
    pytest.fail(f"the child never printed {want!r}: stdout {lines}, "
                f"stderr {stderr.read_text()[-2000:]}")


def test_kill_9_mid_enrolment_leaves_no_half_enrolled_subject(
        opened: Callable[..., Galleries], tmp_path: Path, fixtures_dir: Path) -> None:
    data_dir = tmp_path / "data"
    images = [str(fixtures_dir / "obama2.jpg"), str(fixtures_dir / "obama.jpg")]
    rng = random.Random()
    committed: list[str] = []
    # (line to wait for, kill delay after it): in the first enrolment; at a random moment of
    # the second; right as the third starts.
    moments = [("ready", rng.uniform(0.0, 0.8)), ("committed", rng.uniform(0.0, 1.2)),
               ("committed", rng.uniform(0.0, 0.05))]
    for round_, (marker, delay) in enumerate(moments):
        stderr = tmp_path / f"child-{round_}.err"
        with stderr.open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-u", "-c", CHILD, str(data_dir),
                                     str(round_), *images],
                                    stdout=subprocess.PIPE, stderr=err, bufsize=0)
        seen: list[str] = []
        try:
            seen += _read_until(proc, "ready", 120, stderr)
            if marker != "ready":
                for _ in range(round_):  # round 1 waits for 1 commit, round 2 for 2
                    seen += _read_until(proc, marker, 60, stderr)
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL, stderr.read_text()[-2000:]
        assert proc.stdout is not None
        seen += proc.stdout.read().decode().split("\n")
        proc.stdout.close()
        committed += [line.split()[1] for line in seen if line.startswith("committed")]

        where = f"round {round_}, killed {delay:.3f} s after {marker!r}"
        g = opened(data_dir)
        subjects = g.subjects("crash")
        for s in subjects:  # all or nothing: both images, one consent
            assert len(s.templates) == 2, f"{where}: half-enrolled {s.display_name}"
            assert len(s.consents) == 1, f"{where}: {s.display_name} has no consent"
        enrolled_names = {s.display_name for s in subjects}
        assert set(committed) <= enrolled_names, f"{where}: lost committed subjects"
        (face,) = g.identify("crash", fixtures_dir / "obama2.jpg")
        if subjects:
            assert face.candidates and all(n.startswith("obama-") for n in names(face)), where
        assert index_file_ids(g, "crash") == db_index_ids(g, "crash"), where
        g.engine.dispose()
    assert committed, "no enrolment ever committed: the kill moments were all too early"


# --------------------------------------------------------------------------- 5. PostgreSQL
def test_postgres_and_sqlite_give_the_same_answers(postgres: Any,
                                                   opened: Callable[..., Galleries],
                                                   copy_dir: Path, tmp_path: Path,
                                                   fixtures_dir: Path) -> None:
    pg = opened(tmp_path / "pg-data", database_url=postgres.url)
    assert pg.engine.dialect.name == "postgresql"
    pg.create_gallery("flip", "staff-door", embedder="sface-flip")
    for person, image in PEOPLE.items():
        pg.enroll("flip", person, [fixtures_dir / image], consent=CONSENT)

    # Alembic and SQLAlchemy honour the search_path: every table is in the fresh schema.
    with postgres.admin.connect() as c:
        tables = set(c.execute(sa.text("SELECT table_name FROM information_schema.tables "
                                       "WHERE table_schema = :s"), {"s": postgres.schema})
                     .scalars())
    assert {"alembic_version", "galleries", "subjects", "templates", "consents",
            "negative_examples"} <= tables

    lite = opened(copy_dir)
    assert lite.engine.dialect.name == "sqlite"
    for image in ("obama2.jpg", "two_people.jpg"):
        a = pg.identify("flip", fixtures_dir / image)
        b = lite.identify("flip", fixtures_dir / image)
        assert [names(r) for r in a] == [names(r) for r in b], image
        assert all(names(r) for r in a), f"{image}: everyone should be identified"
        for ra, rb in zip(a, b, strict=True):
            assert ra.decision == rb.decision
            for ca, cb in zip(ra.candidates, rb.candidates, strict=True):
                assert ca.score == pytest.approx(cb.score, abs=1e-5)
    assert [s.display_name for s in pg.subjects("flip")] == ["biden", "obama"]


# --------------------------------------------------------------------------- 6. identify
def test_identify_names_enrolled_people_and_leaves_others_unknown(enrolled: Enrolled,
                                                                  fixtures_dir: Path) -> None:
    g = open_galleries(enrolled.data_dir)
    try:
        (obama2,) = g.identify("fusion", fixtures_dir / "obama2.jpg")
        assert names(obama2) == ["obama"]
        assert obama2.candidates[0].subject_id == enrolled.ids["fusion", "obama"]

        strangers = g.identify("fusion", fixtures_dir / "kit_with_rose.jpg")
        assert len(strangers) == 2
        assert all(r.unknown and r.candidates == [] for r in strangers)
    finally:
        g.engine.dispose()

    threshold = threshold_for_far("fusion", per_comparison_far(1e-3, 2))
    assert obama2.candidates[0].score > threshold.value
    for r in (obama2, *strangers):
        assert "FPIR 0.001" in r.decision, r.decision
        assert re.search(r"\bover 2 (subjects|templates)\b", r.decision), r.decision
        assert f"threshold {threshold.value:.4f}" in r.decision, r.decision
        assert r.decision.startswith("fusion:"), r.decision


# --------------------------------------------------------------------------- 7. not this person
def test_not_this_person_removes_a_false_candidate(opened: Callable[..., Galleries],
                                                   copy_dir: Path, fixtures_dir: Path) -> None:
    g = opened(copy_dir)
    probe = fixtures_dir / "obama2.jpg"
    # At a lax FPIR of 0.5 obama2.jpg also raises biden (sface-flip ~0.27): a false candidate.
    (face,) = g.identify("flip", probe, far=0.5)
    assert names(face) == ["obama", "biden"]
    biden = face.candidates[1].subject_id
    g.not_this_person(biden, face.face)

    (again,) = g.identify("flip", probe, far=0.5)
    assert names(again) == ["obama"]
    # biden's other photos (and obama) still match, and a fresh process remembers the correction.
    assert sorted(names(r)[0] for r in g.identify("flip", fixtures_dir / "two_people.jpg")) == [
        "biden", "obama"]
    (reopened,) = opened(copy_dir).identify("flip", probe, far=0.5)
    assert names(reopened) == ["obama"]
    with pytest.raises(GalleryError, match="no subject"):
        g.not_this_person(str(uuid.uuid4()), face.face)


def test_not_this_person_on_a_true_match_spares_the_subjects_other_photos(
        opened: Callable[..., Galleries], copy_dir: Path, fixtures_dir: Path) -> None:
    g = opened(copy_dir)
    (face,) = g.identify("flip", fixtures_dir / "obama2.jpg")
    assert names(face) == ["obama"]
    g.not_this_person(face.candidates[0].subject_id, face.face)
    (again,) = g.identify("flip", fixtures_dir / "obama2.jpg")
    assert "obama" not in names(again)
    (enrolment_photo,) = g.identify("flip", fixtures_dir / "obama.jpg")
    assert names(enrolment_photo) == ["obama"]


# --------------------------------------------------------------------------- 8. key rotation
def _results(results: list[Identification]) -> list[list[tuple[str, float]]]:
    return [[(c.name, c.score) for c in r.candidates] for r in results]


def test_rotate_master_key(opened: Callable[..., Galleries], copy_dir: Path,
                           fixtures_dir: Path) -> None:
    g = opened(copy_dir)
    probe = fixtures_dir / "two_people.jpg"
    before = _results(g.identify("flip", probe))
    assert sorted(r[0][0] for r in before) == ["biden", "obama"]
    old = g.master
    key_file = copy_dir / "master.key"
    old_text = key_file.read_text()

    new_id = g.rotate_master_key()

    assert new_id == g.master.id != old.id
    assert key_file.read_text() != old_text
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in copy_dir.iterdir() if p.name.startswith("master.key")) == [
        "master.key"]
    assert _results(g.identify("flip", probe)) == before
    with g.sessions() as s:
        subjects = list(s.scalars(sa.select(Subject)))
    assert len(subjects) == 4
    for subject in subjects:
        assert subject.key_id == new_id
        g.master.unwrap(subject.wrapped_key, subject.id)
        with pytest.raises(MasterKeyError):
            old.unwrap(subject.wrapped_key, subject.id)

    reopened = opened(copy_dir)
    assert reopened.master.id == new_id
    # flip's index (in memory at the rotation) was re-sealed under the new key, not rebuilt.
    assert index_file_ids(reopened, "flip") == db_index_ids(reopened, "flip")
    assert _results(reopened.identify("flip", probe)) == before


def test_rotation_leaves_no_index_file_under_the_old_key(opened: Callable[..., Galleries],
                                                         copy_dir: Path) -> None:
    g = opened(copy_dir)  # nothing loaded yet: a fresh process running `facelens keys rotate`
    old = g.master
    g.rotate_master_key()
    readable_with_old = []
    for gallery in GALLERIES:
        gid = g.gallery(gallery).id
        if index_store.load(g.index_dir, gid, old.derive("index"), DIMS[GALLERIES[gallery]]):
            readable_with_old.append(gallery)
    assert readable_with_old == []


def test_crash_before_rewrap_keeps_the_old_key(opened: Callable[..., Galleries], copy_dir: Path,
                                               fixtures_dir: Path) -> None:
    key_file, pending = copy_dir / "master.key", copy_dir / "master.key.next"
    old_text = key_file.read_text()
    write_key_file(pending, new_data_key())  # the rotation died right after writing .next

    g = opened(copy_dir)
    assert not pending.exists()
    assert key_file.read_text() == old_text
    (face,) = g.identify("flip", fixtures_dir / "obama2.jpg")
    assert names(face) == ["obama"]


def test_crash_after_rewrap_adopts_the_new_key(opened: Callable[..., Galleries], copy_dir: Path,
                                               fixtures_dir: Path) -> None:
    key_file, pending = copy_dir / "master.key", copy_dir / "master.key.next"
    g = opened(copy_dir)
    old = g.master
    new = MasterKey(new_data_key(), str(key_file))
    write_key_file(pending, new.key)
    with g.sessions.begin() as s:  # the database was re-wrapped; the rename never happened
        for subject in s.scalars(sa.select(Subject)):
            subject.wrapped_key = new.wrap(old.unwrap(subject.wrapped_key, subject.id),
                                           subject.id)
            subject.key_id = new.id
    g.engine.dispose()

    g = opened(copy_dir)
    assert not pending.exists()
    assert g.master.id == new.id
    assert base64.b64decode(key_file.read_text().strip()) == new.key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    (face,) = g.identify("flip", fixtures_dir / "obama2.jpg")
    assert names(face) == ["obama"]
    assert index_file_ids(g, "flip") == db_index_ids(g, "flip")


def test_wrong_master_key_is_refused_at_open_and_changes_nothing(
        opened: Callable[..., Galleries], copy_dir: Path, fixtures_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(copy_dir)
    monkeypatch.setenv(ENV_KEY, base64.b64encode(new_data_key()).decode())
    with pytest.raises(MasterKeyError) as caught:  # checked at open: nothing can be enrolled
        open_galleries(copy_dir)
    assert "does not match" in str(caught.value) and "\n" not in str(caught.value)
    assert snapshot(copy_dir) == before
    monkeypatch.delenv(ENV_KEY)
    (face,) = opened(copy_dir).identify("flip", fixtures_dir / "obama2.jpg")
    assert names(face) == ["obama"]


def test_missing_key_file_for_existing_data_is_refused(copy_dir: Path) -> None:
    (copy_dir / "master.key").unlink()
    with pytest.raises(MasterKeyError):
        open_galleries(copy_dir).engine.dispose()
    assert not (copy_dir / "master.key").exists()


# --------------------------------------------------------------------------- 9. key file mode
@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_readable_key_file_is_refused(tmp_path: Path, mode: int) -> None:
    data_dir = tmp_path / "data"
    key_file = data_dir / "master.key"
    write_key_file(key_file, new_data_key())
    key_file.chmod(mode)
    with pytest.raises(MasterKeyError) as caught:
        open_galleries(data_dir)
    message = str(caught.value)
    assert "\n" not in message
    assert f"chmod 600 {key_file}" in message and f"{mode:o}" in message
    assert stat.S_IMODE(key_file.stat().st_mode) == mode  # refused, not silently "fixed"


# --------------------------------------------------------------------------- 10. purge
def test_purge_removes_expired_and_stale_subjects_only(opened: Callable[..., Galleries],
                                                       tmp_path: Path, fixtures_dir: Path) -> None:
    g = opened(tmp_path / "data")
    g.create_gallery("door", "staff-door", embedder="sface-flip", retention_days=30)
    g.create_gallery("watch", "watchlist-missing", embedder="sface-flip")
    image = [fixtures_dir / "obama2.jpg"]
    now = datetime.now(UTC)
    ids = {
        "consent-expired": g.enroll("door", "consent-expired", image, consent=ConsentRecord(
            "staff-door", "consent", "test-suite", expires_at=now - timedelta(days=1))),
        "stale": g.enroll("door", "stale", image, consent=CONSENT),
        "valid": g.enroll("door", "valid", image, consent=ConsentRecord(
            "staff-door", "contract", "test-suite", expires_at=now + timedelta(days=365))),
        "watch-expired": g.enroll("watch", "watch-expired", image, consent=CONSENT,
                                  watch_reason="missing person report 41",
                                  watch_expires=now - timedelta(hours=1)),
        "watch-valid": g.enroll("watch", "watch-valid", image, consent=CONSENT,
                                watch_reason="missing person report 42",
                                watch_expires=now + timedelta(days=30)),
    }
    sid = {name: report.subject_id for name, report in ids.items()}
    with g.sessions.begin() as s:
        s.execute(sa.update(Subject).where(Subject.id == sid["stale"])
                  .values(last_seen_at=now - timedelta(days=31)))
        s.execute(sa.update(Subject).where(Subject.id == sid["valid"])
                  .values(last_seen_at=now - timedelta(days=29)))
    with g.sessions() as s:
        doomed_templates = set(s.scalars(sa.select(Template.id).where(Template.subject_id.in_(
            [sid["consent-expired"], sid["stale"], sid["watch-expired"]]))))
    assert len(doomed_templates) == 3

    removed = g.purge()

    assert sorted(removed) == sorted([sid["consent-expired"], sid["stale"], sid["watch-expired"]])
    assert [s.display_name for s in g.subjects("door")] == ["valid"]
    assert [s.display_name for s in g.subjects("watch")] == ["watch-valid"]
    for gallery in ("door", "watch"):
        on_disk = index_file_ids(g, gallery)
        assert on_disk == db_index_ids(g, gallery) and len(on_disk) == 1
        assert not on_disk & doomed_templates
    (face,) = g.identify("door", fixtures_dir / "obama2.jpg")
    assert names(face) == ["valid"]
    assert g.purge() == []


def test_identify_marks_the_subject_seen(opened: Callable[..., Galleries], copy_dir: Path,
                                         fixtures_dir: Path) -> None:
    g = opened(copy_dir)
    obama = subject_id(g, "flip", "obama")
    long_ago = datetime.now(UTC) - timedelta(days=400)
    with g.sessions.begin() as s:
        s.execute(sa.update(Subject).where(Subject.id == obama).values(last_seen_at=long_ago))
    (face,) = g.identify("flip", fixtures_dir / "obama2.jpg")
    assert names(face) == ["obama"]
    with g.sessions() as s:
        seen = s.scalar(sa.select(Subject.last_seen_at).where(Subject.id == obama))
    assert seen is not None and seen.replace(tzinfo=UTC) > long_ago + timedelta(days=1)


# --------------------------------------------------------------------------- 11. model change
def test_change_embedder_asks_everyone_to_re_enrol(opened: Callable[..., Galleries],
                                                   copy_dir: Path, fixtures_dir: Path) -> None:
    g = opened(copy_dir)
    with pytest.raises(GalleryError, match="unknown embedder"):
        g.change_embedder("flip", "arcface")
    stale = g.change_embedder("flip", "sface")
    assert sorted(s.display_name for s in stale) == ["biden", "obama"]
    assert g.gallery("flip").embedder == "sface"
    (face,) = g.identify("flip", fixtures_dir / "obama.jpg")
    assert face.unknown
    assert face.decision.startswith("sface:")
    assert re.search(r"\bover 0 (subjects|templates)\b", face.decision), face.decision
    assert index_file_ids(g, "flip") == db_index_ids(g, "flip") == set()
    # The old templates stay (re-enrolment replaces them); the other gallery is untouched.
    assert all(len(s.templates) == 1 for s in g.subjects("flip"))
    (other,) = g.identify("fusion", fixtures_dir / "obama.jpg")
    assert names(other) == ["obama"]


def test_change_embedder_re_embeds_from_kept_crops(opened: Callable[..., Galleries],
                                                   tmp_path: Path, fixtures_dir: Path) -> None:
    data_dir = tmp_path / "data"
    g = opened(data_dir)
    g.create_gallery("crops", "staff-door", embedder="sface-flip", keep_crops=True)
    obama = g.enroll("crops", "obama", [fixtures_dir / "obama.jpg"], consent=CONSENT).subject_id
    with g.sessions() as s:
        subject = s.get(Subject, obama)
        assert subject is not None
        (template,) = subject.templates
        assert template.crop is not None
        png = unseal(g.master.unwrap(subject.wrapped_key, obama), template.crop,
                     f"crop:{obama}".encode())
    assert png.startswith(b"\x89PNG")
    runs = [png[i:i + 64] for i in range(0, len(png) - 64, 64)]
    files = data_files(data_dir)
    assert not [r for r in runs if any(r in data for data in files.values())], \
        "plaintext crop bytes on disk"

    assert g.change_embedder("crops", "sface") == []
    assert sorted(t.embedder for t in g.subjects("crops")[0].templates) == [
        "sface", "sface-flip"]
    (face,) = g.identify("crops", fixtures_dir / "obama2.jpg")
    assert names(face) == ["obama"] and face.decision.startswith("sface:")
    assert index_file_ids(g, "crops") == db_index_ids(g, "crops")


# --------------------------------------------------------------------------- 12. index cache
def _flip_index(data_dir: Path, g: Galleries) -> Path:
    return data_dir / "index" / f"gallery-{g.gallery('flip').id}.idx"


@pytest.mark.parametrize("damage", ["deleted", "corrupted", "truncated"])
def test_damaged_index_file_is_rebuilt_from_the_database(
        opened: Callable[..., Galleries], copy_dir: Path, fixtures_dir: Path,
        damage: str) -> None:
    path = _flip_index(copy_dir, opened(copy_dir))
    blob = bytearray(path.read_bytes())
    if damage == "deleted":
        path.unlink()
    elif damage == "corrupted":
        blob[len(blob) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))
    else:
        path.write_bytes(bytes(blob[:len(blob) // 3]))

    g = opened(copy_dir)
    (face,) = g.identify("flip", fixtures_dir / "obama2.jpg")
    assert names(face) == ["obama"]
    assert path.is_file()
    assert index_file_ids(g, "flip") == db_index_ids(g, "flip")
    assert len(db_index_ids(g, "flip")) == 2


def test_index_follows_rows_changed_behind_its_back(opened: Callable[..., Galleries],
                                                    copy_dir: Path, fixtures_dir: Path) -> None:
    g = opened(copy_dir)
    obama, biden = subject_id(g, "flip", "obama"), subject_id(g, "flip", "biden")
    before = index_file_ids(g, "flip")
    assert before == db_index_ids(g, "flip") and len(before) == 2
    copy_id = str(uuid.uuid4())
    with g.sessions.begin() as s:  # tamper: a copy of obama appears, biden's template goes
        source = s.get(Subject, obama)
        assert source is not None
        (template,) = source.templates
        plain = unseal(g.master.unwrap(source.wrapped_key, obama), template.vector,
                       f"template:{obama}".encode())
        data_key = new_data_key()
        twin = Subject(id=copy_id, gallery_id=source.gallery_id, display_name="obama-copy",
                       attributes={}, wrapped_key=g.master.wrap(data_key, copy_id),
                       key_id=g.master.id)
        twin.consents.append(Consent(purpose="staff-door", legal_basis="consent",
                                     recorded_by="test-suite"))
        twin.templates.append(Template(embedder="sface-flip", quality=template.quality,
                                       vector=seal(data_key, plain,
                                                   f"template:{copy_id}".encode())))
        s.add(twin)
        s.flush()  # the twin's id is taken before biden's row goes: no id reuse here
        s.execute(sa.delete(Template).where(Template.subject_id == biden))
    g.engine.dispose()

    g = opened(copy_dir)
    truth = db_index_ids(g, "flip")
    assert truth != before and len(truth) == 2
    faces = g.identify("flip", fixtures_dir / "two_people.jpg")
    assert sorted(tuple(sorted(names(r))) for r in faces) == [(), ("obama", "obama-copy")]
    assert index_file_ids(g, "flip") == truth


def test_two_processes_on_one_data_dir_never_confuse_people(
        opened: Callable[..., Galleries], copy_dir: Path, fixtures_dir: Path) -> None:
    server = opened(copy_dir)  # e.g. an API server, index in memory
    two_people = fixtures_dir / "two_people.jpg"
    assert sorted(names(r)[0] for r in server.identify("flip", two_people)) == ["biden", "obama"]
    cli = opened(copy_dir)  # meanwhile `facelens gallery remove` and `facelens enroll`
    biden = subject_id(cli, "flip", "biden")
    with cli.sessions() as s:
        biden_template = s.scalar(sa.select(Template.id).where(Template.subject_id == biden))
    cli.delete_subject(biden)
    carol = cli.enroll("flip", "carol", [fixtures_dir / "obama2.jpg"], consent=CONSENT)
    with cli.sessions() as s:
        reused = s.scalar(sa.select(Template.id).where(Template.subject_id == carol.subject_id))
    assert reused > biden_template  # ids are never reused (AUTOINCREMENT)

    found = {tuple(sorted(names(r))) for r in server.identify("flip", two_people)}
    # biden's face is unknown now; carol was enrolled from an obama photo, so she may
    # only ever stand next to obama, never on biden's face
    assert found == {("carol", "obama"), ()}, found
