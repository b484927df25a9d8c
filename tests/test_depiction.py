"""Depictions are not people: an enrolled person's face re-shown on a phone held in front of
street footage raises no normal alert (stored as a depiction), while the real people of the
Hamilton clip are never flagged (tests/test_video.py asserts their alerts are unflagged).
The bezel cue: real faces of the shared clips (a crowd walking under an arcade past a lit
doorway, a stage, an office) are not framed; a face on a made-up monitor or phone is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facelens.eval.depiction_eval import load, recapture
from facelens.events.store import EventStore
from facelens.gallery.service import ConsentRecord, Galleries
from facelens.geometry import inside_share
from facelens.scene.detect import DEPICTING, detect_objects, detect_street
from facelens.settings import Settings
from facelens.store.tables import Event
from facelens.video.bezel import bezel
from facelens.video.camera import alert_recorder
from facelens.video.depiction import (
    INSIDE,
    LARGE_THRESHOLD,
    MAX_FRAME_SHARE,
    SCREEN_MEMORY_S,
    SCREEN_SCAN_S,
    ScreenMemory,
    encloses,
    enclosing_object,
    find_depiction,
    screens,
)
from facelens.video.rigid_region import RegionFollower
from facelens.video.source import Frame
from facelens.video.tracker import IouTracker
from facelens.video.watch import Watcher, _Shot, _TrackState
from facelens.vision.decode import load_image


def test_inside_share() -> None:
    face = np.array([10, 10, 20, 20], np.float32)
    assert inside_share(face, np.array([0, 0, 100, 100], np.float32)) == 1.0
    assert inside_share(face, np.array([15, 0, 100, 100], np.float32)) == pytest.approx(0.5)
    assert inside_share(face, np.array([30, 30, 40, 40], np.float32)) == 0.0


@pytest.mark.shared_data
def test_real_faces_are_not_framed(shared_data: Path, engine: Any) -> None:
    clips = {"street/facenet_video.mp4": 9, "video/short_hamilton_clip.mp4": 25,
             "street/intel_one-by-one-person-detection.mp4": 150}
    faces = 0
    for clip, step in clips.items():
        for frame in load(shared_data / clip, step):
            for face in engine.detect_rgb(frame.rgb)[0]:
                faces += 1
                assert not bezel(frame.rgb, face.box), (clip, frame.index, face.box)
                assert find_depiction(frame.rgb, face.box) is None, (clip, frame.index)
    assert faces >= 30


@pytest.mark.shared_data
@pytest.mark.parametrize("kind", ["monitor", "phone"])
def test_a_face_on_a_made_up_screen_is_framed(shared_data: Path, engine: Any,
                                              kind: str) -> None:
    """A head-pose clip re-shown on a hand-held screen (bezel, perspective, glare) in an
    office: the bezel closes around the face in every frame."""
    shown = [f.rgb for f in load(shared_data / "liveness/intel_head-pose-female.gif", 10)]
    office = [f.rgb for f in load(
        shared_data / "street/intel_one-by-one-person-detection.mp4", 10, limit=len(shown))]
    made = recapture(shown, office, kind, seed=0)
    found = [bezel(rgb, face.box) for rgb in made for face in engine.detect_rgb(rgb)[0]]
    assert len(found) >= len(made) - 1 and all(found)


@pytest.mark.shared_data
@pytest.mark.parametrize("background", ["street/intel_one-by-one-person-detection.mp4",
                                        "street/facenet_video.mp4"])
def test_a_monitor_filling_most_of_the_view_is_an_object(shared_data: Path, engine: Any,
                                                        background: str) -> None:
    """A monitor 75% of the frame wide: NanoDet's box holding the face covers more than
    MAX_FRAME_SHARE of the frame, and at its score (0.4-0.5) it counts."""
    shown = [f.rgb for f in load(shared_data / "liveness/intel_head-pose-female.gif", 10)]
    street = [f.rgb for f in load(shared_data / background, 10, limit=len(shown))]
    found = []
    for rgb in recapture(shown, street, "monitor", seed=0, width=0.75):
        for face in engine.detect_rgb(rgb)[0]:
            objects = detect_objects(rgb, LARGE_THRESHOLD).of("tv")
            shares = [(b[2] - b[0]) * (b[3] - b[1]) / (rgb.shape[0] * rgb.shape[1])
                      for b in objects.boxes if inside_share(face.box, b) >= INSIDE]
            found.append((enclosing_object(rgb, face.box), max(shares, default=0.0)))
    assert len(found) == len(shown)
    assert all(name == "tv" and share > MAX_FRAME_SHARE for name, share in found), found


@pytest.mark.shared_data
def test_a_screen_seen_a_moment_ago_still_holds_the_face(shared_data: Path, engine: Any) -> None:
    """A monitor over the facenet crowd, looked for twice a second: a face shown on it is
    held by a screen found earlier, for SCREEN_MEMORY_S and not after, nor after a cut; a
    box hugging the head (NanoDet taking a head for a phone) is not remembered as a screen."""
    shown = [f.rgb for f in load(shared_data / "video/short_hamilton_clip.mp4", 3, limit=40)]
    crowd = [f.rgb for f in load(shared_data / "street/facenet_video.mp4", 3, limit=40)]
    made = recapture(shown, crowd, "monitor", seed=2, width=0.35)
    memory = ScreenMemory()
    for i, rgb in enumerate(made):
        memory.observe(i * SCREEN_SCAN_S / 2, rgb)  # every other frame is due
    assert memory.scans == len(made) // 2
    assert memory.seen and {name for _, _, name in memory.seen} <= set(DEPICTING)
    end = (len(made) - 1) * SCREEN_SCAN_S / 2
    faces = [f.box for f in engine.detect_rgb(made[-1])[0]]
    held = [memory.holding(box, end) for box in faces]
    assert any(held), faces
    assert not any(memory.holding(box, end + SCREEN_MEMORY_S + 1) for box in faces)
    hugging = np.array([100, 100, 166, 225], np.float32)  # 1.8x the face below
    face = np.array([105, 110, 158, 199], np.float32)
    assert encloses(hugging, face) and not encloses(hugging, face, 3.0)
    memory.remember(end, [(hugging, "cell phone")])
    assert memory.holding(face, end) is None
    memory.forget()
    assert not any(memory.holding(box, end) for box in faces)


@pytest.mark.shared_data
def test_the_street_layers_detections_stand_in_for_the_memorys_own_pass(
        shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A camera with the street layer on hands its NanoDet objects to the face watcher: the
    memory then keeps the very screens its own pass would find (same network, same score
    floor), on every frame they come, and runs no pass of its own."""
    shown = [f.rgb for f in load(shared_data / "video/short_hamilton_clip.mp4", 3, limit=12)]
    crowd = [f.rgb for f in load(shared_data / "street/facenet_video.mp4", 3, limit=12)]
    made = recapture(shown, crowd, "monitor", seed=2, width=0.35)
    own, fed = ScreenMemory(), ScreenMemory()
    for i, rgb in enumerate(made):
        own.observe(i * SCREEN_SCAN_S, rgb)  # every frame is due
    detected = [detect_street(rgb) for rgb in made]
    passes = []
    monkeypatch.setattr("facelens.video.depiction.detect_objects",
                        lambda *a, **k: passes.append(1))
    for i, (rgb, objects) in enumerate(zip(made, detected, strict=True)):
        fed.observe(i * SCREEN_SCAN_S / 4, rgb, objects)  # within SCREEN_SCAN_S: taken still
    assert own.seen, "NanoDet found no screen: the check below would prove nothing"
    assert fed.scans == 0 and not passes
    assert [(name, box.round(1).tolist()) for _, box, name in fed.seen] == \
        [(name, box.round(1).tolist()) for _, box, name in own.seen]


@pytest.mark.shared_data
def test_screens_the_object_cue_finds_are_remembered(shared_data: Path, engine: Any) -> None:
    """The object cue's looks at a track's kept frames feed the camera's memory: every screen
    they see (the frame's, then the mirror's when the frame's holds no face), as of the
    frame's time, so another track's face inside one is held by it."""
    shown = [f.rgb for f in load(shared_data / "video/short_hamilton_clip.mp4", 3, limit=16)]
    crowd = [f.rgb for f in load(shared_data / "street/facenet_video.mp4", 3, limit=16)]
    memory, looked = ScreenMemory(), 0
    for i, rgb in enumerate(recapture(shown, crowd, "monitor", seed=2, width=0.35)):
        faces = engine.detect_rgb(rgb)[0]
        if not faces:
            continue
        looked += 1
        found = find_depiction(rgb, faces[0].box, memory, float(i))
        seen = [(name, box.round(1).tolist()) for t, box, name in memory.seen if t == i]
        plain = [(name, box.round(1).tolist()) for box, name in screens(rgb)]
        assert seen[:len(plain)] == plain
        if found is None or found[0] != "object" or len(seen) > len(plain):
            mirrored = [(name, box.round(1).tolist()) for box, name in screens(rgb,
                                                                             mirrored=True)]
            assert seen[len(plain):] == mirrored
    assert looked >= 8 and memory.seen and memory.scans == 0
    at, box, name = memory.seen[0]
    inside = np.array([box[0], box[1], box[0] + (box[2] - box[0]) / 3,
                       box[1] + (box[3] - box[1]) / 3])  # a ninth of the screen
    assert memory.holding(inside, at + SCREEN_MEMORY_S / 2) == name


@pytest.mark.shared_data
def test_a_frame_the_memory_scanned_is_not_scanned_again(shared_data: Path, engine: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The object cue on a kept frame the camera's memory already searched for screens takes
    the memory's screens for its plain look (only the mirror look runs NanoDet), and finds
    what it finds without the memory."""
    shown = [f.rgb for f in load(shared_data / "video/short_hamilton_clip.mp4", 3, limit=16)]
    crowd = [f.rgb for f in load(shared_data / "street/facenet_video.mp4", 3, limit=16)]
    made = recapture(shown, crowd, "phone", seed=0)
    faced = [(i, rgb, faces[0].box) for i, rgb in enumerate(made)
             if (faces := engine.detect_rgb(rgb)[0])]
    alone = [enclosing_object(rgb, box) for _, rgb, box in faced]
    assert any(alone), "no face found inside a screen: the check below would prove nothing"
    memory, passes = ScreenMemory(), []
    for i, rgb, _ in faced:
        memory.observe(i * SCREEN_SCAN_S, rgb)  # every frame is due, all kept
    real = detect_objects
    monkeypatch.setattr("facelens.video.depiction.detect_objects",
                        lambda rgb, *a: passes.append(rgb) or real(rgb, *a))
    assert [enclosing_object(rgb, box, memory, i * SCREEN_SCAN_S)
            for i, rgb, box in faced] == alone
    assert 0 < len(passes) <= len(faced)  # one look at most per frame: the mirror's
    assert all(any(np.array_equal(p, rgb[:, ::-1]) for _, rgb, _ in faced) for p in passes)


def test_a_screen_one_kept_frame_shows_holds_the_face_in_another(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A track about to alert: the object cue's look at its best shot finds a TV that does
    not hold that shot's face but holds where the face was in the next kept frame, so the
    alert is a depiction (the memory is asked again after each look, not only before)."""
    galleries = Galleries(Settings(data_dir=tmp_path / "data"))
    galleries.create_gallery("watch", "watchlist-stage")
    watcher = Watcher("street", galleries, ["watch"])
    frame = np.zeros((720, 1280, 3), np.uint8)
    faces = [np.array([100, 100, 160, 170], np.float32),  # walked out of the screen's view…
             np.array([700, 300, 760, 370], np.float32)]  # …from inside it
    state = _TrackState()
    state.best, state.pending = (_Shot(1.0, 0, box, frame, None, frame, frame, [], 0.0)
                                 for box in faces)  # type: ignore[arg-type]
    tv = np.array([600, 200, 1000, 500], np.float32)
    looked = []

    def look(rgb: np.ndarray, box: np.ndarray, memory: ScreenMemory, time: float) -> None:
        looked.append(box)
        memory.remember(time, [(tv, "tv")])  # what the real cue does with the screens it sees

    monkeypatch.setattr("facelens.video.watch.find_depiction", look)
    assert watcher._depiction(state, 1.0) == ("object", "depiction: tv")
    assert len(looked) == 1  # the second shot needed no NanoDet pass of its own


@pytest.mark.shared_data
def test_real_faces_are_not_held_by_a_remembered_screen(shared_data: Path, engine: Any) -> None:
    """Every frame of a stretch of the stage, the crowd and the office clip searched for
    screens: no real face lies in one seen within SCREEN_MEMORY_S."""
    clips = {"video/short_hamilton_clip.mp4": 3, "street/facenet_video.mp4": 9,
             "street/intel_one-by-one-person-detection.mp4": 20}
    faces = 0
    for clip, step in clips.items():
        memory = ScreenMemory()
        for i, frame in enumerate(load(shared_data / clip, step, limit=40)):
            memory.observe(i * SCREEN_SCAN_S, frame.rgb)
            for face in engine.detect_rgb(frame.rgb)[0]:
                faces += 1
                assert memory.holding(face.box, i * SCREEN_SCAN_S) is None, (clip, i)
    assert faces >= 100


def _followed(engine: Any, frames: list[np.ndarray]) -> RegionFollower:
    """Every face track of `frames` followed by the rigid-region cue, as the pipeline does."""
    tracker, follower = IouTracker(), RegionFollower()
    for tick, rgb in enumerate(frames):
        seen = tracker.update(engine.detect_rgb(rgb)[0], tick)[0]
        follower.observe(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), [(t.id, t.box) for t in seen])
    return follower


def test_a_photo_on_a_moving_phone_is_glued_to_it(engine: Any, fixtures_dir: Path) -> None:
    """A photo of two people shown on a phone swaying in front of a still scene: both faces
    move with the screen around them, against the scene (the rigid-region cue)."""
    photo = load_image(fixtures_dir / "obama_and_biden.jpg")
    scene = cv2.resize(load_image(fixtures_dir / "kit_with_rose.jpg"), (960, 540))
    follower = _followed(engine, recapture([photo] * 30, [scene], "phone", seed=0))
    assert sum(region.rigid for region in follower.regions.values()) >= 2


@pytest.mark.shared_data
def test_real_faces_are_not_glued_to_a_moving_region(shared_data: Path, engine: Any) -> None:
    """The stage (camera moves, people walk and turn) and the office clip's walk to the
    camera: faces move against what surrounds them, so no track is glued, although the cue
    had moving rings to judge (a ring that moved with the body was flagged before the region
    was limited to above and beside the head)."""
    clips = {"video/short_hamilton_clip.mp4": slice(None),
             "street/intel_one-by-one-person-detection.mp4": slice(245, 285)}
    judged = 0
    for clip, window in clips.items():
        frames = [f.rgb for f in load(shared_data / clip, 3)[window]]
        for track_id, region in _followed(engine, frames).regions.items():
            assert not region.rigid, (clip, track_id, region.fits)
            judged += bool(region.fits)
    assert judged >= 3


@pytest.mark.shared_data
@pytest.mark.slow
def test_a_face_on_a_phone_raises_no_normal_alert(shared_data: Path, tmp_path: Path) -> None:
    """The Hamilton clip's first seconds shown on a phone held sideways (bezel, hand-held
    perspective, glare) over the facenet street clip, with both people enrolled: the same
    pipeline without the cue raises a normal alert; with it every alert is a depiction."""
    video, street = shared_data / "video", shared_data / "street" / "facenet_video.mp4"
    if not street.is_file():
        pytest.skip(f"../shared/data is absent: {street} not found")
    galleries = Galleries(Settings(data_dir=tmp_path / "data"))
    galleries.create_gallery("watch", "watchlist-stage")
    for name in ("lin-manuel-miranda", "alex-lacamoire"):
        galleries.enroll("watch", name, [video / f"{name}.png"],
                         consent=ConsentRecord("test", "legitimate-interest", "test"),
                         watch_reason="test", watch_expires=datetime.now(UTC) + timedelta(days=1))
    shown = load(video / "short_hamilton_clip.mp4", 3, limit=30)
    made = recapture([f.rgb for f in shown], [f.rgb for f in load(street, 3, limit=30)],
                     "phone", seed=0)
    frames = [Frame(f.index, f.time, rgb) for f, rgb in zip(shown, made, strict=True)]

    events, delivered = EventStore(galleries.store), []

    class Collect:
        def send(self, payload: dict[str, Any]) -> None:
            delivered.append(payload)

        def close(self) -> None: ...

    def run(depictions: bool) -> list:
        watcher = Watcher("street", galleries, ["watch"], depictions=depictions,
                          on_alert=alert_recorder(events, Collect()) if depictions else None)
        return [a for f in frames for a in watcher.process(f)] + watcher.finish(frames[-1].time)

    assert any(a.flagged is None for a in run(depictions=False))
    alerts = run(depictions=True)
    assert alerts and all(str(a.flagged).startswith("depiction: ") for a in alerts)
    # Stored as depictions (not posters), naming the cue; never handed on to a sink.
    stored = events.list()
    assert len(stored) == len(alerts) and not delivered
    assert all(e.status == "depiction" and e.details["cue"] in ("object", "bezel", "rigid")
               for e in stored)
    assert events.list(status="suppressed") == []
    # Nobody reviewed them: they go after the retention period like unconfirmed alerts.
    with galleries.store.sessions.begin() as s:
        for event in stored:
            s.get(Event, event.id).at = datetime.now(UTC) - timedelta(days=40)
    assert events.expire_unconfirmed(30) == len(stored) and not events.list()
    galleries.store.close()


def test_migration_0012_moves_stored_depictions_out_of_suppressed(tmp_path: Path) -> None:
    """Depictions stored as "suppressed" before 0012 become "depiction" with their cue; a
    poster stays suppressed; downgrading makes them all suppressed again."""
    import json

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from facelens.store.db import MIGRATIONS, _sqlite_pragmas

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    sa.event.listen(engine, "connect", _sqlite_pragmas)

    def migrate(step: Any, revision: str) -> dict[int, tuple[str, str | None]]:
        with engine.begin() as c:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = c
            step(config, revision)
            return {i: (status, json.loads(details).get("cue")) for i, status, details in
                    c.exec_driver_sql("SELECT id, status, details FROM events").all()}

    migrate(command.upgrade, "0011")
    with engine.begin() as c:
        c.exec_driver_sql("INSERT INTO galleries(id, name, purpose, embedder, retention_days,"
                          " created_at, version) VALUES (1, 'g', 'p', 'e', 1, '2026-01-01', 0)")
        c.exec_driver_sql("INSERT INTO subjects(id, gallery_id, display_name, attributes,"
                          " wrapped_key, key_id, created_at, last_seen_at) VALUES ('s', 1, 'n',"
                          " '{}', x'00', 'k', '2026-01-01', '2026-01-01')")
        for event_id, flagged in ((1, "poster"), (2, "depiction: tv"), (3, "depiction: framed")):
            c.exec_driver_sql(
                "INSERT INTO events(id, camera, at, gallery, subject_id, subject_name,"
                " confidence, status, details) VALUES (?, 'c', '2026-01-01', 'g', 's', 'n',"
                " 'high', 'suppressed', ?)", (event_id, json.dumps({"flagged": flagged})))
    try:
        assert migrate(command.upgrade, "0012") == {
            1: ("suppressed", None), 2: ("depiction", "object"), 3: ("depiction", "bezel")}
        downgraded = migrate(command.downgrade, "0011")
        assert {status for status, _ in downgraded.values()} == {"suppressed"}
    finally:
        engine.dispose()
