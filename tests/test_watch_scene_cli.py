"""`facelens watch SOURCE --scene`: the street layer beside the faces, from the CLI as users
run it (a subprocess), in the same frames and the same annotated video."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2

from facelens.gallery.service import ConsentRecord, Galleries
from facelens.settings import Settings

CLI = Path(sys.executable).with_name("facelens")
STAGE = ("lin-manuel-miranda", "alex-lacamoire")


def _facelens(*args: object, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FACELENS_DATA_DIR=str(data_dir))
    run = subprocess.run([str(CLI), *map(str, args)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert "Traceback" not in run.stderr, run.stderr
    return run


def test_watch_needs_a_gallery_or_scene(tmp_path: Path, shared_data: Path) -> None:
    run = _facelens("watch", shared_data / "video" / "short_hamilton_clip.mp4",
                    data_dir=tmp_path / "data")
    assert run.returncode == 2
    assert "--gallery" in run.stderr


def test_watch_scene_names_the_enrolled_and_describes_the_people(tmp_path: Path,
                                                                 shared_data: Path) -> None:
    data_dir = tmp_path / "data"
    galleries = Galleries(Settings(data_dir=data_dir))
    galleries.create_gallery("watch", "watchlist-stage")
    for name in STAGE:
        galleries.enroll("watch", name, [shared_data / "video" / f"{name}.png"],
                         consent=ConsentRecord("stage security", "legitimate-interest", "test"),
                         watch_reason="test", watch_expires=datetime.now(UTC) + timedelta(days=1))
    galleries.store.close()
    out = tmp_path / "annotated.mp4"
    run = _facelens("watch", shared_data / "video" / "short_hamilton_clip.mp4", "--gallery",
                    "watch", "--scene", "--fps", 5, "--out", out, data_dir=data_dir)
    assert run.returncode == 0, run.stderr
    assert all(name in run.stdout for name in STAGE), run.stdout
    street = next(line for line in run.stderr.splitlines() if line.startswith("street tracks"))
    assert "person" in street, street  # the two on stage are people as well as faces
    video = cv2.VideoCapture(str(out))
    assert video.isOpened() and video.get(cv2.CAP_PROP_FRAME_COUNT) > 10
    video.release()
