"""The retention pass (policy/retention.py) that the service runs every purge_interval_h and
`facelens gallery purge` on demand: the CLI leaves no lapsed hotlist entry, rule or expired
unreviewed alert behind, and ended cool-down windows go while running ones stay."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cluster.alerting import person
from facelens.cli import app
from facelens.events.hotlist_store import HotlistStore
from facelens.events.store import EventStore
from facelens.gallery.service import Galleries
from facelens.policy.retention import apply_retention
from facelens.settings import Settings, get_settings
from facelens.store.audit import AuditLog
from facelens.store.database import Store
from facelens.store.tables import (
    AlertWindow,
    Consent,
    Event,
    SceneAlertWindow,
    SceneRule,
    utcnow,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = request.getfixturevalue("postgres").url if request.param == "postgresql" else None
    return Settings(data_dir=tmp_path / "data", database_url=url)


@pytest.fixture
def cli_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The data directory the in-process CLI opens (its settings are read once and cached)."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("FACELENS_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    try:
        yield data_dir
    finally:
        get_settings.cache_clear()


def test_the_cli_purge_deletes_lapsed_entries_rules_and_expired_alerts(
        cli_data_dir: Path) -> None:
    """With the service stopped, `facelens gallery purge` deletes what the service's purge
    would: a plate entry and a rule past their expiry (with their alerts) and an unreviewed
    alert older than event_retention_days; it audits and prints every count."""
    store = Store(Settings(data_dir=cli_data_dir))
    hotlists, events = HotlistStore(store), EventStore(store)
    later = datetime.now(UTC) + timedelta(days=1)
    lapsing = hotlists.add_plate("AB12O3", "stolen", later, "tester")
    kept = hotlists.add_plate("XY98Z7", "stolen", later, "tester")
    rule = hotlists.add_rule("red car", "search", later, "tester")
    for kind, entry_id in (("plate", lapsing.id), ("rule", rule.id), ("plate", kept.id)):
        assert events.record_scene_alert("gate", kind, entry_id, "0.9")
    old = events.record_scene_alert("lane", "plate", kept.id, "0.9")
    assert old is not None
    past = datetime.now(UTC) - timedelta(minutes=1)  # adding refuses past dates
    with store.sessions.begin() as s:
        s.execute(sa.update(Event).where(Event.id == old.id).values(
            at=datetime.now(UTC) - timedelta(days=31)))  # event_retention_days: 30
        for entry in (lapsing, rule):
            table = type(entry)
            s.execute(sa.update(table).where(table.id == entry.id).values(expires_at=past))
    store.close()

    result = CliRunner().invoke(app, ["gallery", "purge", "--json"])
    assert result.exit_code == 0, result.output
    counts = {"deleted": 0, "expired_events": 1, "expired_counts": 0, "expired_plates": 1,
              "expired_rules": 1, "expired_windows": 0}
    assert json.loads(result.stdout) == {"removed": [], **counts}

    store = Store(Settings(data_dir=cli_data_dir))
    try:
        assert [p.id for p in HotlistStore(store).plates()] == [kept.id]
        with store.sessions() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(SceneRule)) == 0
            assert list(s.execute(sa.select(Event.camera, Event.hotlist_id))) == [
                ("gate", kept.id)]
        audited = AuditLog.of(store).entries(limit=1)[0]
        assert (audited.actor, audited.action, audited.outcome) == ("cli", "purge", "ok")
        assert json.loads(audited.detail) == counts
    finally:
        store.close()


def test_ended_cool_down_windows_go_and_running_ones_stay(settings: Settings) -> None:
    """A window past its `until` suppresses nothing (the next claim overwrites it) and only
    says when and where a person or entry last alerted: the pass deletes it; a running one
    stays and still suppresses the camera's repeat alert."""
    store = Store(settings)
    galleries = Galleries(settings, store)
    try:
        events = EventStore(store)
        entry = HotlistStore(store).add_plate("AB12O3", "stolen",
                                              datetime.now(UTC) + timedelta(days=1), "tester")
        subject = person(store)
        with store.sessions.begin() as s:  # consented: the pass keeps the subject
            s.add(Consent(subject_id=subject, purpose="staff-door", legal_basis="consent",
                          recorded_by="tester"))
        for camera in ("gate", "lane"):
            assert events.record_scene_alert(camera, "plate", entry.id, "0.9", cooldown_s=60)
            assert events.record_alert(camera, subject, "high", cooldown_s=60)
        with store.sessions.begin() as s:  # the gate's 60 s have passed
            for table in (AlertWindow, SceneAlertWindow):
                s.execute(sa.update(table).where(table.camera == "gate")
                          .values(until=utcnow() - timedelta(seconds=1)))

        purged = apply_retention(galleries, settings)
        assert (purged.subjects, purged.expired_windows) == ([], 2)

        with store.sessions() as s:
            for table in (AlertWindow, SceneAlertWindow):
                assert list(s.scalars(sa.select(table.camera))) == ["lane"]
        assert events.record_scene_alert("lane", "plate", entry.id, "0.9", cooldown_s=60) is None
        assert events.record_alert("lane", subject, "high", cooldown_s=60) is None
        assert events.record_scene_alert("gate", "plate", entry.id, "0.9", cooldown_s=60)
        assert events.record_alert("gate", subject, "high", cooldown_s=60)
    finally:
        galleries.close()
        store.close()
