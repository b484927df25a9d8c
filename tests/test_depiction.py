"""Depictions are not people: an enrolled person's face re-shown on a phone held in front of
street footage raises no normal alert (stored as a depiction), while the real people of the
Hamilton clip are never flagged (tests/test_video.py asserts their alerts are unflagged).
The bezel cue: real faces of the shared clips (a crowd walking under an arcade past a lit
doorway, a stage, an office) are not framed; a face on a made-up monitor or phone is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facelens.eval.depiction_eval import load, recapture
from facelens.gallery.service import ConsentRecord, Galleries
from facelens.settings import Settings
from facelens.video.depiction import bezel, depicting_object, inside_share
from facelens.video.source import Frame
from facelens.video.watch import Watcher


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
                assert depicting_object(frame.rgb, face.box) is None, (clip, frame.index)
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

    def run(depictions: bool) -> list:
        watcher = Watcher("street", galleries, ["watch"], depictions=depictions)
        return [a for f in frames for a in watcher.process(f)] + watcher.finish(frames[-1].time)

    assert any(a.flagged is None for a in run(depictions=False))
    alerts = run(depictions=True)
    assert alerts and all(str(a.flagged).startswith("depiction: ") for a in alerts)
    galleries.store.close()
