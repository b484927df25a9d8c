"""Deletion and retention: crypto-shredding leaves no trace, purge removes expired and stale
subjects only, and identification counts as being seen."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from gallery_helpers import (
    CONSENT,
    GALLERIES,
    data_files,
    db_index_ids,
    index_file_ids,
    leaks,
    names,
    plaintexts,
    subject_id,
)

from facelens.gallery.enrol import ConsentRecord
from facelens.gallery.errors import GalleryError
from facelens.gallery.service import Galleries
from facelens.store.tables import Consent, Subject, Template


# --------------------------------------------------------------------------- deletion
def test_delete_subject_leaves_no_trace(opened: Callable[..., Galleries], copy_dir: Path,
                                        fixtures_dir: Path) -> None:
    g = opened(copy_dir)
    obama = {gallery: subject_id(g, gallery, "obama") for gallery in GALLERIES}
    secrets_: list[tuple[str, bytes]] = []
    vectors: dict[str, np.ndarray] = {}
    with g.store.sessions() as s:
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


# --------------------------------------------------------------------------- purge
def test_purge_removes_expired_and_stale_subjects_only(opened: Callable[..., Galleries],
                                                       tmp_path: Path, fixtures_dir: Path) -> None:
    g = opened(tmp_path / "data")
    g.create_gallery("door", "staff-door", embedder="sface-flip", retention_days=30)
    g.create_gallery("watch", "watchlist-missing", embedder="sface-flip")
    image = [fixtures_dir / "obama2.jpg"]
    now = datetime.now(UTC)
    soon = now + timedelta(days=1)  # enrolment refuses past dates: they lapse below
    ids = {
        "consent-expired": g.enroll("door", "consent-expired", image, consent=ConsentRecord(
            "staff-door", "consent", "test-suite", expires_at=soon)),
        "stale": g.enroll("door", "stale", image, consent=CONSENT),
        "valid": g.enroll("door", "valid", image, consent=ConsentRecord(
            "staff-door", "contract", "test-suite", expires_at=now + timedelta(days=365))),
        "watch-expired": g.enroll("watch", "watch-expired", image, consent=CONSENT,
                                  watch_reason="missing person report 41",
                                  watch_expires=soon),
        "watch-valid": g.enroll("watch", "watch-valid", image, consent=CONSENT,
                                watch_reason="missing person report 42",
                                watch_expires=now + timedelta(days=30)),
    }
    sid = {name: report.subject_id for name, report in ids.items()}
    with g.store.sessions.begin() as s:
        s.execute(sa.update(Consent).where(Consent.subject_id == sid["consent-expired"])
                  .values(expires_at=now - timedelta(days=1)))
        s.execute(sa.update(Subject).where(Subject.id == sid["watch-expired"])
                  .values(watch_expires=now - timedelta(hours=1)))
        s.execute(sa.update(Subject).where(Subject.id == sid["stale"])
                  .values(last_seen_at=now - timedelta(days=31)))
        s.execute(sa.update(Subject).where(Subject.id == sid["valid"])
                  .values(last_seen_at=now - timedelta(days=29)))
    with g.store.sessions() as s:
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


# --------------------------------------------------------------------------- expiry
def test_past_expiry_dates_are_refused_at_enrolment(opened: Callable[..., Galleries],
                                                    tmp_path: Path, fixtures_dir: Path) -> None:
    g = opened(tmp_path / "data")
    g.create_gallery("watch", "watchlist-missing", embedder="sface-flip")
    image = [fixtures_dir / "obama2.jpg"]
    with pytest.raises(GalleryError, match="watchlist expiry 2020-01-01 is in the past"):
        g.enroll("watch", "late", image, consent=CONSENT, watch_reason="report 7",
                 watch_expires=datetime(2020, 1, 1, tzinfo=UTC))
    with pytest.raises(GalleryError, match="consent expiry 2020-01-01 is in the past"):
        g.enroll("watch", "late", image, watch_reason="report 7",
                 watch_expires=datetime.now(UTC) + timedelta(days=1),
                 consent=ConsentRecord("watch", "consent", "test-suite",
                                       expires_at=datetime(2020, 1, 1, tzinfo=UTC)))
    assert g.subjects("watch") == []


@pytest.mark.parametrize("lapse", ["watchlist", "consent"])
def test_an_entry_that_lapsed_never_matches_before_the_purge(
        opened: Callable[..., Galleries], tmp_path: Path, fixtures_dir: Path, lapse: str) -> None:
    g = opened(tmp_path / "data")
    g.create_gallery("watch", "watchlist-missing", embedder="sface-flip")
    soon = datetime.now(UTC) + timedelta(days=1)
    report = g.enroll("watch", "obama", [fixtures_dir / "obama.jpg"], watch_reason="report 8",
                      watch_expires=soon, consent=ConsentRecord("watch", "consent",
                                                                "test-suite", expires_at=soon))
    (face,) = g.identify("watch", fixtures_dir / "obama2.jpg")
    assert names(face) == ["obama"]
    assert g.subject_reference(report.subject_id).subject_id == report.subject_id

    past = datetime.now(UTC) - timedelta(minutes=1)
    with g.store.sessions.begin() as s:
        if lapse == "watchlist":
            s.execute(sa.update(Subject).where(Subject.id == report.subject_id)
                      .values(watch_expires=past))
        else:
            s.execute(sa.update(Consent).where(Consent.subject_id == report.subject_id)
                      .values(expires_at=past))
    (face,) = g.identify("watch", fixtures_dir / "obama2.jpg")  # the camera path (match) too
    assert face.unknown
    why = "watchlist entry expired" if lapse == "watchlist" else "consent expired"
    with pytest.raises(GalleryError, match=why):
        g.subject_reference(report.subject_id)  # 1:1 verify against the subject
    assert g.purge() == [report.subject_id]


def test_identify_marks_the_subject_seen(opened: Callable[..., Galleries], copy_dir: Path,
                                         fixtures_dir: Path) -> None:
    g = opened(copy_dir)
    obama = subject_id(g, "flip", "obama")
    long_ago = datetime.now(UTC) - timedelta(days=400)
    with g.store.sessions.begin() as s:
        s.execute(sa.update(Subject).where(Subject.id == obama).values(last_seen_at=long_ago))
    (face,) = g.identify("flip", fixtures_dir / "obama2.jpg")
    assert names(face) == ["obama"]
    with g.store.sessions() as s:
        seen = s.scalar(sa.select(Subject.last_seen_at).where(Subject.id == obama))
    assert seen is not None and seen.replace(tzinfo=UTC) > long_ago + timedelta(days=1)
