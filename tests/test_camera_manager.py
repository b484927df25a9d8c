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
