"""Street scenes in the service (#28): the stored plate hotlist and description rules over
REST (scoped, validated, audited, expiring), scene alerts as events of their own kind through
the faces' cool-down and outbox, and a camera with the street layer on that leaves nothing of
passers-by (no row, crop, plate text or log line) and alerts when a rule matches."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from facelens.events.hotlist_store import HotlistStore
from facelens.events.store import EventStore
from facelens.scene.detect import VEHICLES
from facelens.scene.plates import PlateReading
from facelens.service.app import create_app
from facelens.service.state import ServiceState
from facelens.settings import Settings
from facelens.store.tables import (
    Event,
    OutboxEntry,
    PlateHotlistEntry,
    SceneAlertWindow,
    SceneCount,
    SceneRule,
)

COUNTED = {"person", *VEHICLES}


class Client:
    def __init__(self, client: TestClient, state: ServiceState) -> None:
        self.client, self.state = client, state
        self.keys = {s: state.keys.create(f"only-{s}", [s])[1] for s in ("admin", "events")}

    def call(self, method: str, path: str, scope: str = "admin", **kw: Any) -> Any:
        return self.client.request(method, path, headers={
            "Authorization": f"Bearer {self.keys[scope]}"}, **kw)


@contextmanager
def _serve(settings: Settings) -> Iterator[Client]:
    app = create_app(settings)
    with TestClient(app) as client:
        yield Client(client, app.state.facelens)


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    url = request.getfixturevalue("postgres").url if request.param == "postgresql" else None
    with _serve(Settings(data_dir=tmp_path / "data", database_url=url)) as c:
        yield c


def _in(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def _actions(c: Client) -> list[str]:
    return [e["action"] for e in c.call("GET", "/v1/audit").json()]


def test_hotlists_and_rules_are_scoped_validated_audited_and_expire(served: Client) -> None:
    c = served
    plate = {"plate": "ab-12 o3", "reason": "stolen, case 17", "expires_at": _in(1)}
    assert c.call("POST", "/v1/hotlists/plates", "events", json=plate).status_code == 403
    made = c.call("POST", "/v1/hotlists/plates", json=plate)
    assert made.status_code == 201, made.text
    entry = made.json()
    assert (entry["plate"], entry["plate_key"], entry["live"]) == ("AB-12 O3", "AB1203", True)
    assert entry["added_by"].endswith(":only-admin")
    listed = c.call("GET", "/v1/hotlists/plates", "events").json()
    assert [p["id"] for p in listed] == [entry["id"]]
    for bad, status in (({**plate, "reason": ""}, 422), ({"plate": "X1 234"}, 422),
                        ({**plate, "plate": "AB1203"}, 400),  # already listed (same key)
                        ({**plate, "plate": "Q7", "expires_at": _in(-1)}, 400),
                        ({**plate, "plate": "Q7", "expires_at": _in(400)}, 400),
                        ({**plate, "plate": "!!"}, 400)):
        assert c.call("POST", "/v1/hotlists/plates", json=bad).status_code == status, bad

    rule = {"description": "red car", "reason": "hit and run", "expires_at": _in(1),
            "cameras": ["gate"]}
    made_rule = c.call("POST", "/v1/rules", json=rule)
    assert made_rule.status_code == 201, made_rule.text
    assert made_rule.json()["cameras"] == ["gate"]
    for bad_rule in ({**rule, "expires_at": _in(31)}, {**rule, "description": "person"},
                     {**rule, "description": "someone odd"},
                     {**rule, "active_from": _in(0.5), "active_to": _in(0.2)}):
        assert c.call("POST", "/v1/rules", json=bad_rule).status_code == 400, bad_rule
    assert c.call("POST", "/v1/rules", "events", json=rule).status_code == 403

    store = HotlistStore(c.state.store)
    loaded = store.load()
    assert loaded.hotlists.plate_hit("AB1203", datetime.now(UTC)) is not None
    assert [r.wanted for r in loaded.hotlists.rules] == [{"colour": "red"}]
    assert loaded.target("plate:AB12O3") == ("plate", entry["id"])
    with c.state.store.sessions.begin() as s:  # the entry runs out
        s.get(PlateHotlistEntry, entry["id"]).expires_at = datetime.now(UTC) - timedelta(
            minutes=1)
    assert store.load().hotlists.plates == []  # an expired entry never matches
    assert c.call("GET", "/v1/hotlists/plates", "events").json()[0]["live"] is False

    assert c.call("DELETE", f"/v1/hotlists/plates/{entry['id']}", "events").status_code == 403
    assert c.call("DELETE", f"/v1/hotlists/plates/{entry['id']}").status_code == 204
    assert c.call("DELETE", f"/v1/hotlists/plates/{entry['id']}").status_code == 404
    assert c.call("DELETE", f"/v1/rules/{made_rule.json()['id']}").status_code == 204
    assert c.call("GET", "/v1/rules", "events").json() == []
    actions = _actions(c)
    for action in ("hotlist.add", "hotlist.delete", "rule.add", "rule.delete"):
        assert actions.count(action) == 1, (action, actions)
    assert c.call("GET", "/v1/audit/verify").json()["ok"] is True
    # A date alone means the end of that day (UTC), as an enrolment's expiry dates do.
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    dated = c.call("POST", "/v1/hotlists/plates", json={**plate, "plate": "DAY 1",
                                                         "expires_at": tomorrow}).json()
    assert dated["expires_at"].startswith(f"{tomorrow}T23:59:59"), dated
    dated_rule = c.call("POST", "/v1/rules", json={**rule, "expires_at": tomorrow,
                                                   "active_to": tomorrow}).json()
    assert dated_rule["expires_at"].startswith(f"{tomorrow}T23:59:59"), dated_rule
    assert c.call("DELETE", f"/v1/hotlists/plates/{dated['id']}").status_code == 204
    assert c.call("DELETE", f"/v1/rules/{dated_rule['id']}").status_code == 204


def test_scene_alerts_share_cooldown_and_outbox_and_go_with_their_entry(
        served: Client) -> None:
    c, events = served, served.state.events
    entry = HotlistStore(c.state.store).add_plate("AB12O3", "stolen", datetime.now(UTC)
                                                  + timedelta(days=1), "tester")
    crop = b"\xff\xd8\xff crop of the hotlisted car"
    event = events.record_scene_alert("gate", "plate", entry.id, "0.91", cooldown_s=60,
                                      announce={"kind": "plate", "matched": "plate:AB12O3"},
                                      snapshot_jpeg=crop, plate={"text": "AB12O3"})
    assert event is not None and event.kind == "plate" and event.subject_id is None
    assert events.record_scene_alert("gate", "plate", entry.id, "0.9", cooldown_s=60) is None
    assert events.record_scene_alert("lane", "plate", entry.id, "0.9", cooldown_s=60)
    with c.state.store.sessions() as s:
        payloads = [o.payload for o in s.scalars(sa.select(OutboxEntry))]
        assert s.scalar(sa.select(sa.func.count()).select_from(SceneAlertWindow)) == 2
        stored = s.get(Event, event.id)
        assert stored is not None and crop not in (stored.snapshot or b"")  # sealed
    assert payloads == [{"kind": "plate", "matched": "plate:AB12O3", "event_id": event.id,
                         "at": event.at.isoformat(), "status": "unconfirmed"}]
    assert events.image(event.id) == crop

    found = c.call("GET", "/v1/events?kind=plate&plate=ab12o3", "events").json()
    assert [e["id"] for e in found] == [event.id + 1, event.id]
    assert found[1]["hotlist_id"] == entry.id and found[1]["subject_name"] == "AB12O3"
    assert c.call("GET", "/v1/events?kind=face", "events").json() == []
    assert c.call("GET", "/v1/events?plate=ZZ999", "events").json() == []
    assert c.call("POST", f"/v1/events/{event.id}/confirm", "events").json()["status"] \
        == "confirmed"  # reviewed like a face alert
    assert c.call("DELETE", f"/v1/hotlists/plates/{entry.id}").status_code == 204
    assert c.call("GET", f"/v1/events/{event.id}", "events").status_code == 404
    with c.state.store.sessions() as s:  # nor when it last alerted where
        assert s.scalar(sa.select(sa.func.count()).select_from(SceneAlertWindow)) == 0


def test_the_purge_deletes_lapsed_entries_with_their_alerts(tmp_path: Path) -> None:
    """A plate entry and a rule past their expiry go, with their alerts and crops, at the
    service's purge (as an expired watchlist subject does); a live entry and its alert stay;
    the purge's audit record counts them."""
    settings = Settings(data_dir=tmp_path / "data")
    state = ServiceState.open(settings)
    hotlists, later = HotlistStore(state.store), datetime.now(UTC) + timedelta(days=1)
    lapsing = hotlists.add_plate("AB12O3", "stolen", later, "tester")
    kept = hotlists.add_plate("XY98Z7", "stolen", later, "tester")
    rule = hotlists.add_rule("red car", "search", later, "tester")
    for kind, entry_id in (("plate", lapsing.id), ("plate", kept.id), ("rule", rule.id)):
        assert state.events.record_scene_alert("gate", kind, entry_id, "0.9", cooldown_s=60,
                                               snapshot_jpeg=b"crop")
    past = datetime.now(UTC) - timedelta(minutes=1)  # adding refuses past dates
    with state.store.sessions.begin() as s:
        for table, entry_id in ((PlateHotlistEntry, lapsing.id), (SceneRule, rule.id)):
            s.execute(sa.update(table).where(table.id == entry_id).values(expires_at=past))
    state.close()
    with _serve(settings) as c:
        _wait(lambda: "purge" in _actions(c), 30)  # it runs in the background at start
        (purge,) = [e for e in c.call("GET", "/v1/audit").json() if e["action"] == "purge"]
        assert (purge["detail"]["expired_plates"], purge["detail"]["expired_rules"]) == (1, 1)
        assert [p["id"] for p in c.call("GET", "/v1/hotlists/plates").json()] == [kept.id]
        assert c.call("GET", "/v1/rules").json() == []
        alerts = c.call("GET", "/v1/events", "events").json()
        assert [(e["kind"], e["hotlist_id"]) for e in alerts] == [("plate", kept.id)]
        with c.state.store.sessions() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Event)) == 1
            assert list(s.scalars(sa.select(SceneAlertWindow.target))) == [f"plate:{kept.id}"]


def _wait(done: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.5)


@pytest.mark.slow
def test_a_scene_camera_leaves_nothing_of_passers_by_and_alerts_on_a_rule(
        tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The street clip through a camera with the street layer on: with a plate entry that
    matches no car there and a rule for another camera, no event, window or outbox row, no
    file holding a plate text read or a picture, no log line, only counts (aggregates per
    camera, class and minute); with a rule for any vehicle, rule events with sealed crops."""
    from facelens.video import scene_watch

    read: list[PlateReading] = []
    real_read = scene_watch.read_plate

    def reading(*args: Any, **kw: Any) -> PlateReading | None:
        found = real_read(*args, **kw)
        if found is not None:
            read.append(found)
        return found

    monkeypatch.setattr(scene_watch, "read_plate", reading)
    caplog.set_level(logging.DEBUG)
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, media_dir=shared_data / "street")
    camera = {"name": "street", "source": "intel_car-detection.mp4", "fps": 3, "scene": True,
              "motion": True}
    with _serve(settings) as c:
        for path, body in (("/v1/hotlists/plates", {"plate": "ZZ9Q999", "reason": "elsewhere"}),
                           ("/v1/rules", {"description": "vehicle", "reason": "another search",
                                          "cameras": ["elsewhere"]})):
            assert c.call("POST", path, json={**body, "expires_at": _in(1)}).status_code == 201

        def status() -> str:
            return str(c.call("GET", "/v1/cameras").json()[0]["status"])

        assert c.call("POST", "/v1/cameras", json=camera).status_code == 201
        _wait(lambda: status() == "ended", 180)
        with c.state.store.sessions() as s:
            for table in (Event, OutboxEntry, SceneAlertWindow):
                assert s.scalar(sa.select(sa.func.count()).select_from(table)) == 0, table
            # The one trace: counts. The table has no column for anything about a track...
            columns = sa.inspect(s.get_bind()).get_columns("scene_counts")
            assert {col["name"] for col in columns} == {"camera", "minute", "kind", "tracks"}
            rows = s.execute(sa.select(SceneCount)).scalars().all()
        # ...and its rows are numbers per camera, class and whole minute.
        assert rows and all(r.camera == "street" and r.kind in COUNTED and r.tracks > 0
                            and r.minute.second == r.minute.microsecond == 0 for r in rows)
        counted = c.call("GET", "/v1/cameras/street/counts", "events").json()["totals"]
        assert sum(counted.values()) == sum(r.tracks for r in rows) >= 2, counted
        c.state.store.database.dispose()  # fold nothing away: read the files as they are
        texts = {r.text.encode() for r in read}
        print(f"plates read and forgotten: {sorted(texts)}")
        for path in data_dir.rglob("*"):
            if path.is_file():
                blob = path.read_bytes()
                assert not [t for t in texts if t in blob], path
                assert b"\xff\xd8\xff\xe0" not in blob, path  # no JPEG (JFIF) anywhere
        assert [r for r in caplog.records if r.name.startswith("facelens")] == []

        assert c.call("POST", "/v1/rules", json={
            "description": "vehicle", "reason": "search", "expires_at": _in(1)}).status_code \
            == 201
        assert c.call("DELETE", "/v1/cameras/street").status_code == 204
        assert c.call("POST", "/v1/cameras", json=camera).status_code == 201

        def rule_events() -> list[dict[str, Any]]:
            return list(c.call("GET", "/v1/events?kind=rule", "events").json())

        _wait(lambda: bool(rule_events()) or status() == "ended", 180)
        found = rule_events()
        assert found, "the vehicle rule raised nothing"
        event = found[0]
        assert event["camera"] == "street" and event["rule_id"] and event["has_snapshot"]
        assert event["details"]["class"] in ("car", "bus", "truck", "motorcycle")
        jpeg = c.call("GET", f"/v1/events/{event['id']}/snapshot", "events").content
        assert jpeg[:3] == b"\xff\xd8\xff"
        assert np.frombuffer(jpeg, np.uint8).size > 500


def _plate_video(shared_data: Path, path: Path, images: int = 3, repeats: int = 5) -> Path:
    """A 5 fps 720p clip of still car photos (each held `repeats` frames) from the openalpr
    US set, written for the test: plates large enough to read."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (1280, 720))
    for photo in sorted((shared_data / "plates" / "us").glob("*.jpg"))[:images]:
        frame = cv2.resize(cv2.imread(str(photo)), (1280, 720), interpolation=cv2.INTER_AREA)
        for _ in range(repeats):
            writer.write(frame)
    writer.release()
    return path


@pytest.mark.slow
def test_a_camera_reads_plates_keeps_none_and_alerts_on_a_hotlisted_one(
        tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Plates the camera reads are forgotten (no row, no text in any file, no log line) until
    one is on the hotlist: then a plate event, its payload handed to the sinks."""
    from facelens.gallery.service import Galleries
    from facelens.settings import CameraConfig
    from facelens.video import scene_watch
    from facelens.video.camera import CameraRunner

    read: list[str] = []
    real_read = scene_watch.read_plate

    def reading(*args: Any, **kw: Any) -> PlateReading | None:
        found = real_read(*args, **kw)
        if found is not None:
            read.append(found.text)
        return found

    monkeypatch.setattr(scene_watch, "read_plate", reading)
    caplog.set_level(logging.DEBUG)
    clip = _plate_video(shared_data, tmp_path / "plates.mp4")
    data_dir = tmp_path / "data"
    galleries = Galleries(Settings(data_dir=data_dir))
    events = EventStore(galleries.store)
    hotlists = HotlistStore(galleries.store)
    hotlists.add_plate("ZZ9Q999", "not in these photos", datetime.now(UTC) + timedelta(days=1),
                       "tester")
    sent: list[dict[str, Any]] = []

    class Collect:
        def send(self, payload: dict[str, Any]) -> None:
            sent.append(payload)

        def close(self) -> None:
            pass

    def run() -> CameraRunner:
        config = CameraConfig(name="lane", source=str(clip), fps=5, scene=True)
        runner = CameraRunner(config, galleries, events, Collect())
        runner.start()
        _wait(lambda: not runner.alive, 120)
        assert runner.status == "ended", runner.status
        return runner

    try:
        run()
        assert read, "no plate was read: the no-trace check below would prove nothing"
        assert events.list() == [] and sent == []
        galleries.store.database.dispose()
        for path in data_dir.rglob("*"):
            if path.is_file():
                blob = path.read_bytes()
                assert not [t for t in set(read) if t.encode() in blob], path
        assert [r for r in caplog.records if r.name.startswith("facelens")] == []

        wanted = max(set(read), key=read.count)
        entry = hotlists.add_plate(wanted, "stolen", datetime.now(UTC) + timedelta(days=1),
                                   "tester")
        assert run().alerts >= 1
        (event,) = events.list(kind="plate")
        assert event.hotlist_id == entry.id and event.details["plate"]["text"] == wanted
        assert events.image(event.id)[:3] == b"\xff\xd8\xff"
        assert [(p["event_id"], p["kind"], p["hotlist_id"]) for p in sent] == [
            (event.id, "plate", entry.id)]
    finally:
        galleries.close()


def test_key_rotation_rewraps_hotlist_and_rule_keys(tmp_path: Path) -> None:
    """A scene alert's crop stays readable after the master key is rotated."""
    from facelens.store.database import Store

    store = Store(Settings(data_dir=tmp_path / "data"))
    try:
        later = datetime.now(UTC) + timedelta(days=1)
        entry = HotlistStore(store).add_plate("AB12O3", "stolen", later, "tester")
        rule = HotlistStore(store).add_rule("red car", "search", later, "tester")
        events = EventStore(store)
        shots = [events.record_scene_alert("gate", kind, entry_id, "0.9",
                                           snapshot_jpeg=f"crop {kind}".encode())
                 for kind, entry_id in (("plate", entry.id), ("rule", rule.id))]
        old = store.master.id
        assert store.rotate_master_key().id != old
        assert [events.image(e.id) for e in shots if e] == [b"crop plate", b"crop rule"]
    finally:
        store.close()


def test_migration_0010_keeps_pending_alerts_through_sqlite_rebuilding_events(
        tmp_path: Path) -> None:
    """SQLite rebuilds `events` to make subject_id nullable: an alert not yet handed on (its
    outbox row) survives the upgrade and the downgrade."""
    from alembic import command
    from alembic.config import Config

    from facelens.store.db import MIGRATIONS, _sqlite_pragmas

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    sa.event.listen(engine, "connect", _sqlite_pragmas)

    def migrate(step: Callable[[Config, str], None], revision: str) -> list[Any]:
        with engine.begin() as c:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = c
            step(config, revision)
            return list(c.exec_driver_sql("SELECT id, event_id FROM outbox").all())

    migrate(command.upgrade, "0009")
    with engine.begin() as c:
        for row in ("galleries(id, name, purpose, embedder, retention_days, created_at, version)"
                    " VALUES (1, 'g', 'p', 'e', 1, '2026-01-01', 0)",
                    "subjects(id, gallery_id, display_name, attributes, wrapped_key, key_id,"
                    " created_at, last_seen_at) VALUES ('s', 1, 'n', '{}', x'00', 'k',"
                    " '2026-01-01', '2026-01-01')",
                    "events(id, camera, at, gallery, subject_id, subject_name, confidence,"
                    " status, details) VALUES (7, 'c', '2026-01-01', 'g', 's', 'n', 'high',"
                    " 'unconfirmed', '{}')",
                    "outbox(id, event_id, camera, payload, created_at)"
                    " VALUES (3, 7, 'c', '{}', '2026-01-01')"):
            c.exec_driver_sql(f"INSERT INTO {row}")
    try:
        assert migrate(command.upgrade, "0010") == [(3, 7)]
        assert migrate(command.downgrade, "0009") == [(3, 7)]
    finally:
        engine.dispose()
