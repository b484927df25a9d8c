"""Enrolment: the rules (lawful basis, watchlists, unusable images), encryption at rest (no
plaintext vector in any file) and kill -9 mid-enrolment, on the real models and the MIT fixture
photos (no mocks)."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from gallery_helpers import (
    CONSENT,
    GALLERIES,
    PEOPLE,
    Enrolled,
    data_files,
    db_index_ids,
    index_file_ids,
    leaks,
    names,
    only_face,
    open_galleries,
    plaintexts,
    subject_count,
)
from PIL import Image

from facelens.errors import NoFaceError
from facelens.gallery.enrol import LEGAL_BASES, ConsentRecord
from facelens.gallery.errors import GalleryError
from facelens.gallery.service import Galleries
from facelens.store.tables import Consent


# --------------------------------------------------------------------------- enrolment rules
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
    with g.store.sessions() as s:
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


def test_a_name_hiding_characters_is_refused(opened: Callable[..., Galleries],
                                             tmp_path: Path, fixtures_dir: Path) -> None:
    """A right-to-left override or a zero-width space made a name read as someone else's in
    the console and on alerts ("\u202enamaboa" shows as "aobaman"); Persian and emoji names
    keep their joiners. Renaming is held to the same rule."""
    g = opened(tmp_path / "data")
    g.create_gallery("staff", "door-access", embedder="sface-flip")
    photo = [fixtures_dir / "obama2.jpg"]
    for name in ("\u202ekcab", "ob\u200bama", "ob\x07ama", "a\u2028b", "\u2066x\u2069"):
        with pytest.raises(GalleryError, match="control or invisible"):
            g.enroll("staff", name, photo, consent=CONSENT)
    assert subject_count(g) == 0
    made = g.enroll("staff", " \u0645\u06cc\u200c\u0631\u0627 ", photo, consent=CONSENT)
    assert made.name == "\u0645\u06cc\u200c\u0631\u0627"  # trimmed, its ZWNJ kept
    with pytest.raises(GalleryError, match="U\\+202E"):
        g.rename_subject(made.subject_id, "\u202eamabo")


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


@pytest.mark.parametrize("embedder", ["fusion", "sface-flip"])
def test_one_subject_holds_one_person(opened: Callable[..., Galleries], tmp_path: Path,
                                      fixtures_dir: Path, embedder: str) -> None:
    """Photos of two people given as one subject: the one that does not match the others is
    skipped with the reason, at enrolment and when photos are added; before, the subject held
    both faces and named Biden as Obama."""
    g = opened(tmp_path / "data")
    g.create_gallery("door", "staff-door", embedder=embedder)
    obama, obama2, biden = (fixtures_dir / f for f in ("obama.jpg", "obama2.jpg", "biden.jpg"))
    report = g.enroll("door", "obama", [obama, biden, obama2], consent=CONSENT)
    assert report.templates == 2
    assert [label for label, _ in report.skipped] == [str(biden)]
    assert report.skipped[0][1].startswith("not the person of the other photos")
    assert g.identify("door", biden)[0].unknown
    assert not g.identify("door", obama2)[0].unknown
    with pytest.raises(NoFaceError, match="not the person"):
        g.add_photos(report.subject_id, [biden])
    assert g.add_photos(report.subject_id, [obama]).templates == 1
    pair = g.enroll("door", "pair", [obama2, biden], consent=CONSENT)  # who is it? the best
    assert pair.templates == 1 and len(pair.skipped) == 1


def test_a_missing_model_is_not_a_skipped_photo(opened: Callable[..., Galleries],
                                                tmp_path: Path, fixtures_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every photo would fail alike: the model's error (exit 3, naming what to install)
    reaches the caller instead of "nothing to enrol" (exit 1)."""
    from facelens.errors import ModelMissingError

    g = opened(tmp_path / "data")
    g.create_gallery("door", "staff-door", embedder="sface-flip")

    def missing(*args: object, **kwargs: object) -> None:
        raise ModelMissingError("yunet.onnx is missing: run make setup")

    monkeypatch.setattr(g.engine, "detect_rgb", missing)
    with pytest.raises(ModelMissingError, match="make setup"):
        g.enroll("door", "obama", [fixtures_dir / "obama2.jpg"], consent=CONSENT)
    assert subject_count(g) == 0


# --------------------------------------------------------------------------- encryption at rest
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
        g.store.close()

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


# --------------------------------------------------------------------------- kill -9
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
        g.store.close()
    assert committed, "no enrolment ever committed: the kill moments were all too early"
