"""The service's camera manager at start: one camera's bad settings stop that camera only."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from facelens.events.store import EventStore
from facelens.gallery.service import Galleries
from facelens.settings import CameraConfig, Settings
from facelens.video.manager import CameraManager


def test_a_camera_naming_a_gallery_not_created_yet_does_not_stop_the_start(
        tmp_path: Path) -> None:
    """A settings file's camera may name a gallery created later: the manager starts, that
    camera reports the missing gallery as its error."""
    settings = Settings(data_dir=tmp_path / "data", media_dir=tmp_path, cameras=[
        CameraConfig(name="door", source="door.mp4", galleries=["staff"])])
    galleries = Galleries(settings)
    manager = CameraManager(settings, galleries.store, galleries, EventStore(galleries.store))
    try:
        manager.start()  # raised GalleryNotFound before, so the service never came up
        deadline = time.monotonic() + 30
        while (status := manager.describe("door")[0]["status"]) in ("starting", "running") \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status.startswith("error") and "staff" in status, status
    finally:
        manager.close()
        galleries.close()


@pytest.mark.parametrize("cooldown", [math.inf, 1e308, 86_401.0])
def test_a_cooldown_beyond_a_day_is_refused(cooldown: float) -> None:
    """The window's end is stored as a date: an endless cool-down stopped the camera on its
    first alert ("date value out of range", "cannot convert float infinity to integer")."""
    with pytest.raises(ValidationError, match="cooldown_s"):
        CameraConfig(name="door", source="door.mp4", cooldown_s=cooldown)
    assert CameraConfig(name="door", source="door.mp4", cooldown_s=86_400).cooldown_s == 86_400


@pytest.mark.slow
def test_a_street_camera_that_fails_keeps_what_it_counted(
        tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that breaks after 13 s of cars (bytes overwritten mid-file) stops the camera with
    an error; the cars its street layer counted before are stored all the same (they stayed in
    memory until the next once-a-minute flush, lost with the camera)."""
    import sqlalchemy as sa

    from facelens.store.tables import SceneCount
    from facelens.video import scene_camera
    from facelens.video.camera import CameraRunner

    monkeypatch.setattr(scene_camera, "FLUSH_S", math.inf)  # only close() stores the counts
    clip = bytearray((shared_data / "street" / "intel_car-detection.mp4").read_bytes())
    middle = len(clip) // 2
    clip[middle:middle + 20_000] = b"\xff" * 20_000
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(clip))
    galleries = Galleries(Settings(data_dir=tmp_path / "data", media_dir=tmp_path))
    runner = CameraRunner(CameraConfig(name="lane", source=str(broken), fps=5, scene=True),
                          galleries, EventStore(galleries.store), None)
    try:
        runner.start()
        deadline = time.monotonic() + 300  # the file ends it, never stop()
        while runner.alive and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runner.status.startswith("error") and "Invalid data" in runner.status, \
            runner.status
        with galleries.store.sessions() as s:
            stored = s.scalar(sa.select(sa.func.sum(SceneCount.tracks)))
        assert stored and stored >= 1, "the counts went with the failed camera"
    finally:
        galleries.close()
