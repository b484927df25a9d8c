"""Street layer QA (#28), as a demanding user drives it: descriptions and plate texts that
must be understood exactly or refused (a rule or entry that silently matches everyone, no one
or another plate is worse than an error), from the store, the REST routes and the CLI."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from facelens.errors import FacelensError
from facelens.events.hotlist_store import HotlistStore, check_description
from facelens.events.hotlists import Hotlists, PlateEntry, parse_description
from facelens.service.app import create_app
from facelens.settings import Settings
from facelens.store.database import Store
from facelens.store.tables import PlateHotlistEntry, SceneRule, utcnow
from facelens.video.scene_watch import SceneWatch
from facelens.video.source import Frame, VideoSource

CLI = Path(sys.executable).with_name("facelens")


@pytest.fixture
def hotlists(tmp_path: Path) -> Iterator[HotlistStore]:
    store = Store(Settings(data_dir=tmp_path / "data"))
    try:
        yield HotlistStore(store)
    finally:
        store.close()


def _later(days: float = 1) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def test_every_word_of_a_description_is_understood_or_it_is_refused() -> None:
    """"car red" was parsed as "car" (every car alerted), "pink car" and "fast car" asked for
    colours never named (no car ever alerted), "man, woman" and "red car blue car" quietly
    kept one of two contradicting values, "car truck" made "car" a colour."""
    assert parse_description("gray car") == ("car", {"colour": "grey"})
    assert check_description("woman in a red coat, blue trousers") == (
        "person", {"sex": "female", "upper": "red", "lower": "blue"})
    assert check_description("child with red top") == (
        "person", {"age_group": "child", "upper": "red"})
    for text, said in (("car red", "'red' must come right before"),
                       ("pink car", "'pink' is not a colour"),
                       ("fast car", "'fast' is not a colour"),
                       ("unknown car", "'unknown' is not a colour"),
                       ("man, woman", "sex male and female"),
                       ("child adult", "age_group child and adult"),
                       ("red car blue car", "colour red and blue"),
                       ("car truck", "more than one kind"),
                       ("child, red car", "more than one kind"),
                       ("red top hat", "'hat' is not understood"),
                       ("purple unicorn", "'unicorn' is not understood"),  # not the colour
                       ("top", "'top' needs a colour"),
                       (" , ", "names no class")):
        with pytest.raises(FacelensError, match=said):
            check_description(text)


def test_a_rule_stored_before_words_were_checked_matches_nothing(
        hotlists: HotlistStore) -> None:
    """A row holding "car red" (stored by the lax parser) is left out of the snapshot rather
    than alerting on every car; a valid rule beside it still loads."""
    hotlists.add_rule("red car", "search", _later(), "tester")
    now = datetime.now(UTC)
    with hotlists.sessions.begin() as s:
        s.add(SceneRule(description="car red", cameras=[], active_from=now, active_to=None,
                        reason="old", expires_at=_later(), added_by="tester", created_at=now,
                        wrapped_key=b""))
    rules = hotlists.load().hotlists.rules
    assert [(r.kind, dict(r.wanted)) for r in rules] == [("car", {"colour": "red"})]


def test_a_plate_stored_before_texts_were_checked_matches_nothing(
        hotlists: HotlistStore) -> None:
    """A row holding "ABС123" (Cyrillic С, stored when the check let it through as AB123)
    alerted on the car AB123; it is left out of the snapshot, a valid entry beside it not."""
    hotlists.add_plate("XYZ 789", "stolen", _later(), "tester")
    now = datetime.now(UTC)
    with hotlists.sessions.begin() as s:
        for text, key in (("ABС123", "AB123"), ("Q7", "Q7")):
            s.add(PlateHotlistEntry(plate_key=key, plate=text, reason="old", expires_at=_later(),
                                    added_by="tester", created_at=now, wrapped_key=b""))
    loaded = hotlists.load()
    assert [p.plate for p in loaded.hotlists.plates] == ["XYZ 789"]
    assert loaded.hotlists.plate_hit("AB123", now) is None


def test_rules_that_could_never_be_live_or_name_no_camera_are_refused(
        hotlists: HotlistStore) -> None:
    with pytest.raises(FacelensError, match="active_from must be before expires_at"):
        hotlists.add_rule("red car", "search", _later(1), "tester", active_from=_later(2))
    for camera in ("", "gate/1", "x" * 101):
        with pytest.raises(FacelensError, match="is not a camera name"):
            hotlists.add_rule("red car", "search", _later(), "tester", cameras=[camera])
    # Overlapping windows of two rules for one description are two searches: both kept.
    first = hotlists.add_rule("red car", "a", _later(), "tester", active_to=_later(0.5))
    second = hotlists.add_rule("red car", "b", _later(), "tester", active_from=_later(0.25))
    assert [r.id for r in hotlists.rules()] == [first.id, second.id]


def test_plate_texts_with_look_alikes_or_control_characters_are_refused(
        hotlists: HotlistStore) -> None:
    """A Cyrillic С in "ABС123" was dropped from the key: the entry listed AB123, another
    car's plate, and never ABC123. Full-width forms fold to the plate they show."""
    for text in ("ABС123", "АВС123", "ΑΒ-123", "STRAßE1", "XY\x00 12"):
        with pytest.raises(FacelensError, match="a plate is Latin letters"):
            hotlists.add_plate(text, "stolen", _later(), "tester")
    # The reader reads 4-10 letters and digits: "Q7" or 12 characters would never match.
    for text in ("Q7", "AB-1", "A" * 11, "A" * 12, "A" * 40, "", "-"):
        with pytest.raises(FacelensError, match="is not a plate"):
            hotlists.add_plate(text, "stolen", _later(), "tester")
    wide = hotlists.add_plate("ａｂｃ １２３", "stolen", _later(), "tester")
    assert (wide.plate, wide.plate_key) == ("ABC 123", "ABC123")
    spaced = hotlists.add_plate(" xy\t-\n 99 ", "stolen", _later(), "tester")
    assert (spaced.plate, spaced.plate_key) == ("XY - 99", "XY99")
    loaded = hotlists.load()
    now = datetime.now(UTC)
    assert loaded.hotlists.plate_hit("ABC123", now) is not None
    assert loaded.hotlists.plate_hit("XY99", now) is not None
    with hotlists.sessions() as s:
        assert s.query(PlateHotlistEntry).count() == 2


def _watch_street(*args: object, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FACELENS_DATA_DIR=str(tmp_path / "data"))
    run = subprocess.run([str(CLI), "watch-street", *map(str, args)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert "Traceback" not in run.stderr, run.stderr
    return run


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--rule", "", "names no class"),
    ("--rule", "car red", "'red' must come right before"),
    ("--rule", "man, woman", "sex male and female"),
    ("--plate", "ABС123", "a plate is Latin letters"),
    ("--plate", "-", "is not a plate"),
])
def test_watch_street_refuses_what_the_stored_lists_refuse(
        tmp_path: Path, option: str, value: str, said: str) -> None:
    """--rule "" matched every passer-by (the run alerted on each person), and "car red"
    every car: the command line's lists are parsed as the stored ones, before any frame is
    read."""
    clip = tmp_path / "never-read.mp4"
    clip.write_bytes(b"")
    run = _watch_street(clip, option, value, tmp_path=tmp_path)
    assert run.returncode == 2, run.stderr
    assert said in run.stderr and "never-read" not in run.stderr, run.stderr


def test_the_annotated_video_draws_no_ghost_boxes(shared_data: Path) -> None:
    """Every labelled box of a detected frame is one of that frame's detections: a track the
    detector missed was drawn where its car had been (on the motorway clip, boxes on empty
    lanes in most frames)."""
    scene = SceneWatch("qa", gate=False)
    frames = VideoSource(str(shared_data / "street" / "bgslibrary_video02.avi"), fps=5).frames()
    drawn = 0
    for frame in itertools.islice(frames, 40):
        labels = scene.process(frame)
        assert scene.latest is not None
        detected = [tuple(box) for box in scene.latest.boxes.tolist()]
        for box, text, _alerted in labels:
            assert tuple(box.tolist()) in detected, (frame.index, text)
        drawn += len(labels)
    assert drawn > 40  # the motorway's cars are drawn


def test_watch_street_on_a_cut_off_file_reports_what_it_read(shared_data: Path,
                                                            tmp_path: Path) -> None:
    """A recording cut off mid-file: the counts and annotated video of the frames before the
    cut, then the decoder's error and exit 2. Everything read was thrown away with the error;
    a file that is no video at all still fails at once."""
    whole = (shared_data / "street" / "intel_car-detection.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[:len(whole) // 6])
    out = tmp_path / "annotated.mp4"
    run = _watch_street(cut, "--fps", 5, "--out", out, tmp_path=tmp_path)
    assert run.returncode == 2, run.stderr
    summary = json.loads(run.stdout)
    assert summary["frames"] > 5 and summary["error"], summary
    assert summary["error"] in " ".join(run.stderr.split()), run.stderr
    video = cv2.VideoCapture(str(out))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == summary["frames"]
    video.release()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    run = _watch_street(empty, tmp_path=tmp_path)
    assert (run.returncode, run.stdout) == (2, ""), run.stderr


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """The service on SQLite or PostgreSQL and a key with the admin and events scopes."""
    url = request.getfixturevalue("postgres").url if request.param == "postgresql" else None
    app = create_app(Settings(data_dir=tmp_path / "data", database_url=url))
    with TestClient(app, raise_server_exceptions=False) as client:
        key = app.state.facelens.keys.create("qa", ["admin", "events"])[1]
        yield client, f"Bearer {key}"


def test_street_routes_answer_odd_input_with_4xx(served: tuple[TestClient, str]) -> None:
    """Camera names no camera can have (a NUL: PostgreSQL refused the string, a 500) and
    times past the calendar are refused where they are parsed, naming what is wrong."""
    client, key = served
    for name in ("%00", "x%0Ay", "a" * 101, "%C3%A9"):
        got = client.get(f"/v1/cameras/{name}/counts", headers={"Authorization": key})
        assert got.status_code == 422 and "name" in got.text, (name, got.text)
    for query in ("since=0001-01-01T00:00:00%2B05:00", "until=9999-12-31T23:59:59-12:00"):
        got = client.get(f"/v1/counts?{query}", headers={"Authorization": key})
        assert got.status_code == 422 and ("since" in got.text or "until" in got.text), got.text
    rule = {"description": "red car", "reason": "search", "expires_at": _later().isoformat(),
            "active_from": "9999-12-31T23:59:59-12:00"}
    got = client.post("/v1/rules", json=rule, headers={"Authorization": key})
    assert got.status_code == 422 and "active_from" in got.text, got.text
    assert client.get("/v1/cameras/gate-1.a_b/counts",
                      headers={"Authorization": key}).status_code == 404  # a name, no camera


def test_counts_of_a_camera_never_seen_answer_404(served: tuple[TestClient, str]) -> None:
    """A typo in a camera's name answered 200 with no counts, like a quiet street. A camera
    that exists, or one removed whose counts are still kept, answers its counts."""
    from facelens.events.counts import SceneCounts

    client, key = served
    headers = {"Authorization": key}
    got = client.get("/v1/cameras/gate-6/counts", headers=headers)
    assert got.status_code == 404 and "gate-6" in got.json()["error"]["message"], got.text
    SceneCounts(client.app.state.facelens.store).add({("gate-6", "car", utcnow()): 2})
    got = client.get("/v1/cameras/gate-6/counts", headers=headers)
    assert got.status_code == 200 and got.json()["totals"] == {"car": 2}, got.text
    made = client.post("/v1/cameras", headers=headers, json={"name": "gate-7", "source":
                       "rtsp://cam.example/stream", "enabled": False})
    assert made.status_code in (200, 201), made.text
    assert client.get("/v1/cameras/gate-7/counts", headers=headers).status_code == 200


def test_an_unreadable_parked_car_neither_keeps_the_reader_nor_is_read_for_ever(
        shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A car seen from above (its plate out of sight) beside a hotlisted car, both standing:
    the plate reader's one read per frame went to the larger car with no reading, on every
    frame, so the hotlisted plate next to it was never read and never alerted."""
    from facelens.eval.plates import load_labels
    from facelens.video import scene_watch

    read_boxes: list[float] = []
    real_read = scene_watch.read_plate

    def counted(rgb: np.ndarray, box: np.ndarray, *args: Any, **kw: Any) -> Any:
        read_boxes.append(float(box[0]))
        return real_read(rgb, box, *args, **kw)

    monkeypatch.setattr(scene_watch, "read_plate", counted)  # counts the calls, reads as is
    parked = next(itertools.islice(VideoSource(
        str(shared_data / "street" / "intel_car-detection.mp4"), fps=5).frames(), 30, 31)).rgb
    label = load_labels(shared_data / "plates" / "us")[0]
    photo = cv2.cvtColor(cv2.imread(str(label.image)), cv2.COLOR_BGR2RGB)
    height = parked.shape[0]
    photo = cv2.resize(photo, (photo.shape[1] * height // photo.shape[0], height))
    frame = np.ascontiguousarray(np.concatenate([parked, photo], axis=1))
    alerts: list[dict[str, Any]] = []
    later = datetime.now(UTC) + timedelta(days=1)
    scene = SceneWatch("qa", Hotlists([PlateEntry(label.text, "stolen", "qa", later)]),
                       on_alert=alerts.append, gate=False)
    frames = 2 * scene_watch.PLATE_TRIES
    for i in range(frames):
        scene.process(Frame(i, i / 5, frame))
    assert [a["matched"] for a in alerts] == [f"plate:{label.text}"]
    on_parked = [x for x in read_boxes if x < parked.shape[1]]
    assert 0 < len(on_parked) <= scene_watch.PLATE_TRIES  # then left alone
    assert len(read_boxes) < frames


@pytest.mark.parametrize("shape", [(2, 4096, 3), (4096, 2, 3), (1, 1, 3), (16, 16, 3)])
def test_frames_of_any_shape_a_video_can_have_are_looked_at(shape: tuple[int, int, int]) -> None:
    """A 4096×2 video (FFmpeg decodes one) stopped watch-street with OpenCV's assertion and
    a traceback: the letterbox scaled its short side to 0 pixels."""
    scene = SceneWatch("qa")
    rng = np.random.default_rng(0)
    for i in range(3):
        assert scene.process(Frame(i, i / 5, rng.integers(0, 255, shape, np.uint8))) == []
    assert scene.frames == 3


def test_a_street_camera_rides_out_a_database_it_cannot_read(
        shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hotlists are reloaded every few seconds; a database that could not be read then
    (moved away here; a PostgreSQL restart in the field) raised out of the camera's loop and
    stopped it, faces and all. The last entries are kept until it reads again."""
    from facelens.events.store import EventStore
    from facelens.video import scene_camera

    monkeypatch.setattr(scene_camera, "REFRESH_S", 0.0)  # reload on every frame
    data = tmp_path / "data"
    store = Store(Settings(data_dir=data))
    try:
        rule = HotlistStore(store).add_rule("red car", "search", _later(), "tester")
        camera = scene_camera.SceneCamera("gate", EventStore(store), None, cooldown_s=60)
        frames = VideoSource(str(shared_data / "street" / "intel_car-detection.mp4"),
                             fps=5).frames()
        camera.process(next(frames))
        assert [r.name for r in camera.loaded.hotlists.rules] == [str(rule.id)]
        store.database.dispose()
        (data / "facelens.db").rename(tmp_path / "away.db")
        for frame in itertools.islice(frames, 3):
            camera.process(frame)
        assert [r.name for r in camera.watch.hotlists.rules] == [str(rule.id)]
        store.database.dispose()
        (tmp_path / "away.db").replace(data / "facelens.db")
        HotlistStore(store).delete("rule", rule.id)
        camera.process(next(frames))
        assert camera.watch.hotlists.rules == []  # read again once it can be
    finally:
        store.close()


def test_a_vehicle_boxed_as_two_classes_is_one_track(shared_data: Path) -> None:
    """NanoDet boxes many motorway vehicles as a car and a truck (or bus) at once, and NMS is
    per class: each became two tracks, drawn twice and counted twice."""
    from facelens.geometry import iou
    from facelens.scene.detect import VEHICLE_NMS_IOU

    scene = SceneWatch("qa", gate=False)
    frames = VideoSource(str(shared_data / "street" / "bgslibrary_video02.avi"), fps=5).frames()
    seen = 0
    for frame in itertools.islice(frames, 40):
        boxes = np.array([box for box, text, _ in scene.process(frame)
                          if not text.startswith("person")]).reshape(-1, 4)
        overlaps = iou(boxes, boxes)[np.triu_indices(len(boxes), 1)]
        assert (overlaps <= VEHICLE_NMS_IOU).all(), frame.index
        seen += len(boxes)
    assert seen > 40


def test_a_street_alert_waits_for_a_database_it_cannot_write(
        shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule alert raised while the database cannot be written went out of the camera's
    loop, stopping it, and was lost; it waits in memory and is stored with its crop once
    the database reads again."""
    from facelens.events.store import EventStore
    from facelens.store.tables import Event
    from facelens.video import scene_camera

    monkeypatch.setattr(scene_camera, "REFRESH_S", 0.0)  # reload (and retry) on every frame
    data = tmp_path / "data"
    store = Store(Settings(data_dir=data))
    try:
        rule = HotlistStore(store).add_rule("vehicle", "search", _later(), "tester")
        events = EventStore(store)
        camera = scene_camera.SceneCamera("lot", events, None, cooldown_s=60, gate=False)
        frames = itertools.islice(VideoSource(
            str(shared_data / "street" / "intel_car-detection.mp4"), fps=5).frames(), 25, None)
        camera.process(next(frames))
        store.database.dispose()
        (data / "facelens.db").rename(tmp_path / "away.db")
        for frame in itertools.islice(frames, 6):  # the parked car's track alerts
            camera.process(frame)
        assert camera.alerts == 0
        store.database.dispose()
        (tmp_path / "away.db").replace(data / "facelens.db")
        camera.process(next(frames))
        assert camera.alerts == 1
        with store.sessions() as s:
            (event,) = s.query(Event).all()
            assert (event.kind, event.rule_id, event.camera) == ("rule", rule.id, "lot")
        assert events.image(event.id)[:3] == b"\xff\xd8\xff"  # the crop, sealed and back
    finally:
        store.close()


def test_a_stream_that_changes_shape_is_watched_on(shared_data: Path) -> None:
    """A camera's stream back at another aspect ratio (reconfigured, or a reconnect to its
    substream): the motion gate compared the new thumbnail with the old background and the
    camera stopped on a numpy broadcast error."""
    scene = SceneWatch("qa")
    street = shared_data / "street"
    wide = VideoSource(str(street / "intel_car-detection.mp4"), fps=5).frames()
    square = VideoSource(str(street / "bgslibrary_video02.avi"), fps=5).frames()
    for i, frame in enumerate([*itertools.islice(wide, 3), *itertools.islice(square, 3)]):
        scene.process(Frame(i, i / 5, frame.rgb))
    assert scene.frames == 6 and scene.latest is not None  # the new shape is looked at


def test_a_new_scene_ends_the_tracks_before_it(shared_data: Path) -> None:
    """Parked cars one after another (cuts between photos, as a PTZ camera's presets): the
    first car's track went on in the second car where their boxes overlapped, its plate
    already read three times, so the second car's hotlisted plate was never read."""
    from facelens.eval.plates import load_labels

    labels = load_labels(shared_data / "plates" / "us")[:3]
    later = datetime.now(UTC) + timedelta(days=1)
    alerts: list[dict[str, Any]] = []
    scene = SceneWatch("qa", Hotlists([PlateEntry(labels[1].text, "stolen", "qa", later)]),
                       on_alert=alerts.append, gate=False)
    index = 0
    for label in labels:
        photo = cv2.cvtColor(cv2.imread(str(label.image)), cv2.COLOR_BGR2RGB)
        rgb = cv2.resize(photo, (1280, 720), interpolation=cv2.INTER_AREA)
        for _ in range(8):
            scene.process(Frame(index, index / 5, rgb))
            index += 1
    assert [a["matched"] for a in alerts] == [f"plate:{labels[1].text}"]


def test_a_rule_past_its_active_to_is_listed_as_ended(served: tuple[TestClient, str]) -> None:
    """A rule whose window (active_to) has passed never matches again, but was listed "live"
    until its expiry days later, and the console showed it live."""
    client, key = served
    rule = {"description": "red car", "reason": "search", "expires_at": _later(20).isoformat(),
            "active_to": _later(1).isoformat()}
    made = client.post("/v1/rules", json=rule, headers={"Authorization": key}).json()
    later = client.post("/v1/rules", json={**rule, "active_from": _later(2).isoformat(),
                                           "active_to": _later(3).isoformat()},
                        headers={"Authorization": key}).json()
    assert made["live"] and later["live"]  # a window still to come is not over
    state = client.app.state.facelens  # type: ignore[attr-defined]
    with state.store.sessions.begin() as s:
        s.get(SceneRule, made["id"]).active_to = datetime.now(UTC) - timedelta(minutes=1)
    listed = client.get("/v1/rules", headers={"Authorization": key}).json()
    assert [(r["id"], r["live"]) for r in listed] == [(made["id"], False), (later["id"], True)]
