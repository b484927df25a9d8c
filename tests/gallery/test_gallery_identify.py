"""Identification: open-set search, PostgreSQL = SQLite, "not this person", and the index as a
cache of the database (rebuilt when damaged, following rows changed behind its back, shared by
two processes)."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from gallery_helpers import (
    CONSENT,
    PEOPLE,
    Enrolled,
    db_index_ids,
    index_file_ids,
    names,
    only_face,
    open_galleries,
    subject_id,
)
from PIL import Image

from facelens.face import Reference
from facelens.gallery.errors import GalleryError
from facelens.gallery.service import Galleries
from facelens.matching.calibration import load_calibration
from facelens.matching.decide import decide
from facelens.store.crypto import new_data_key, seal, unseal
from facelens.store.tables import Consent, Subject, Template


# --------------------------------------------------------------------------- PostgreSQL
def test_postgres_and_sqlite_give_the_same_answers(postgres: Any,
                                                   opened: Callable[..., Galleries],
                                                   copy_dir: Path, tmp_path: Path,
                                                   fixtures_dir: Path) -> None:
    pg = opened(tmp_path / "pg-data", database_url=postgres.url)
    assert pg.store.database.dialect.name == "postgresql"
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
    assert lite.store.database.dialect.name == "sqlite"
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


# --------------------------------------------------------------------------- identify
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
        g.store.close()

    threshold = g.engine.calibration.open_set_threshold("fusion", 1e-3, 2)
    assert obama2.candidates[0].score > threshold.value
    for r in (obama2, *strangers):
        assert "FPIR 0.001" in r.decision, r.decision
        assert re.search(r"\bover 2 (subjects|templates)\b", r.decision), r.decision
        assert f"threshold {threshold.value:.4f}" in r.decision, r.decision
        assert r.decision.startswith("fusion:"), r.decision


def test_identify_takes_a_decoded_image_detects_once_and_bands_each_candidate(
        opened: Callable[..., Galleries], copy_dir: Path, fixtures_dir: Path,
        load_rgb: Callable[[str], np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    g = opened(copy_dir)
    detections = []
    detect_rgb = g.engine.detect_rgb
    monkeypatch.setattr(g.engine, "detect_rgb",
                        lambda *a, **k: detections.append(1) or detect_rgb(*a, **k))
    (from_array,) = g.identify("flip", load_rgb("obama2.jpg"))
    assert len(detections) == 1  # one detection (and alignment) per request
    (from_file,) = g.identify("flip", fixtures_dir / "obama2.jpg")
    assert names(from_array) == names(from_file) == ["obama"]
    top = from_array.candidates[0]
    assert top.score == pytest.approx(from_file.candidates[0].score, abs=1e-6)
    assert (top.band, top.fpir) == g.engine.calibration.confidence_band(
        "sface-flip", top.score, 2)  # over the gallery's two subjects
    assert top.band == "high" and top.fpir == 1e-4


def test_decide_keeps_the_results_above_the_threshold_best_first_with_their_band() -> None:
    calibration = load_calibration("onnxruntime")
    ids = np.array([3, -1, 5, 9], np.int64)
    scores = np.array([0.9, 0.95, 0.2, 0.5], np.float32)
    hits = decide(ids, scores, 0.4, calibration, "sface-flip", 1000)
    assert [(h.id, h.score) for h in hits] == [(3, pytest.approx(0.9)), (9, pytest.approx(0.5))]
    for hit in hits:
        assert (hit.band, hit.fpir) == calibration.confidence_band("sface-flip", hit.score, 1000)
    assert decide(ids, scores, 0.95, calibration, "sface-flip", 1000) == []


def test_subject_reference_is_the_subjects_search_vector(opened: Callable[..., Galleries],
                                                         copy_dir: Path,
                                                         fixtures_dir: Path) -> None:
    g = opened(copy_dir)
    obama = subject_id(g, "flip", "obama")
    reference = g.subject_reference(obama)
    assert isinstance(reference, Reference)
    assert (reference.subject_id, reference.label, reference.embedder) == (
        obama, "obama", "sface-flip")
    assert float(np.linalg.norm(reference.embedding)) == pytest.approx(1.0, abs=1e-5)
    enrolment_photo = only_face(fixtures_dir / "obama.jpg", "sface-flip")
    assert float(reference.embedding @ enrolment_photo) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(GalleryError, match="no subject"):
        g.subject_reference(str(uuid.uuid4()))


# --------------------------------------------------------------------------- not this person
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


def test_a_correction_suppresses_near_duplicates_only_and_can_be_undone(
        opened: Callable[..., Galleries], tmp_path: Path, shared_data: Path) -> None:
    """The issue's "Alex" case on lfw-dev: a reviewer wrongly marks a true photo "not this
    person". That photo and altered copies of it stay suppressed; the person's other photos
    still match (the rule before suppressed 44 % of them, docs/decisions.md)."""
    people = [p for p in sorted((shared_data / "lfw-dev" / "images").iterdir())
              if 3 <= len(list(p.iterdir())) <= 5][:8]
    g = opened(tmp_path / "data")
    g.create_gallery("lfw", "staff-door", embedder="sface-flip")
    photos = {p.name: sorted(p.iterdir()) for p in people}
    for name, files in photos.items():
        g.enroll("lfw", name, files[:1], consent=CONSENT)

    def matched() -> set[str]:
        return {f"{name}/{f.name}" for name, files in photos.items() for f in files[2:]
                for r in g.identify("lfw", f) if r.candidates and names(r)[0] == name}

    before = matched()
    assert len(before) >= 10
    corrected = []
    for name, files in photos.items():
        found = [r for r in g.identify("lfw", files[1]) if r.candidates]
        if found and names(found[0])[0] == name:
            corrected.append((name, files[1], g.not_this_person(
                found[0].candidates[0].subject_id, found[0].face)))
    assert len(corrected) >= 5
    assert matched() == before  # no other photo of anyone was lost
    for name, photo, correction in corrected:
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        reencoded = io.BytesIO()
        Image.fromarray(rgb).save(reencoded, "JPEG", quality=40)
        for probe in (photo, reencoded.getvalue()):
            assert name not in [n for r in g.identify("lfw", probe) for n in names(r)]
        assert [c.id for c in g.corrections(correction.subject_id)] == [correction.id]
    name, photo, correction = corrected[0]
    g.undo_correction(correction.subject_id, correction.id)
    assert g.corrections(correction.subject_id) == []
    assert name in [n for r in g.identify("lfw", photo) for n in names(r)]
    with pytest.raises(GalleryError, match="no correction"):
        g.undo_correction(correction.subject_id, correction.id)


# --------------------------------------------------------------------------- index cache
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
    with g.store.sessions.begin() as s:  # tamper: a copy of obama appears, biden's template goes
        source = s.get(Subject, obama)
        assert source is not None
        (template,) = source.templates
        plain = unseal(g.store.master.unwrap(source.wrapped_key, obama), template.vector,
                       f"template:{obama}".encode())
        data_key = new_data_key()
        twin = Subject(id=copy_id, gallery_id=source.gallery_id, display_name="obama-copy",
                       attributes={}, wrapped_key=g.store.master.wrap(data_key, copy_id),
                       key_id=g.store.master.id)
        twin.consents.append(Consent(purpose="staff-door", legal_basis="consent",
                                     recorded_by="test-suite"))
        twin.templates.append(Template(embedder="sface-flip", quality=template.quality,
                                       vector=seal(data_key, plain,
                                                   f"template:{copy_id}".encode())))
        s.add(twin)
        s.flush()  # the twin's id is taken before biden's row goes: no id reuse here
        s.execute(sa.delete(Template).where(Template.subject_id == biden))
    g.store.close()

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
    with cli.store.sessions() as s:
        biden_template = s.scalar(sa.select(Template.id).where(Template.subject_id == biden))
    cli.delete_subject(biden)
    carol = cli.enroll("flip", "carol", [fixtures_dir / "obama2.jpg"], consent=CONSENT)
    with cli.store.sessions() as s:
        reused = s.scalar(sa.select(Template.id).where(Template.subject_id == carol.subject_id))
    assert reused > biden_template  # ids are never reused (AUTOINCREMENT)

    found = {tuple(sorted(names(r))) for r in server.identify("flip", two_people)}
    # biden's face is unknown now; carol was enrolled from an obama photo, so she may
    # only ever stand next to obama, never on biden's face
    assert found == {("carol", "obama"), ()}, found
