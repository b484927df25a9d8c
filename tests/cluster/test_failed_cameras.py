"""A camera whose thread died on an error (the database away as it alerted, a gallery named
before it was made) is started again, in `serve` without workers as under a worker
(test_workers.py): it stayed dead until the service was restarted."""

from __future__ import annotations

import time
from pathlib import Path

from facelens.events.store import EventStore
from facelens.gallery.service import Galleries
from facelens.settings import CameraConfig, Settings
from facelens.video.manager import CameraManager


def test_a_failed_camera_of_the_service_is_started_again(tmp_path: Path,
                                                        shared_data: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", media_dir=shared_data / "video",
                        camera_rescan_s=0.5, cameras=[CameraConfig(
                            name="door", source="short_hamilton_clip.mp4", fps=1.0,
                            galleries=["staff"])])
    galleries = Galleries(settings)
    manager = CameraManager(settings, galleries.store, galleries, EventStore(galleries.store))
    try:
        manager.start()

        def status_within(done: tuple[str, ...], timeout: float = 60.0) -> str:
            deadline = time.monotonic() + timeout
            while (status := manager.describe("door")[0]["status"]) not in done:
                assert time.monotonic() < deadline, status
                time.sleep(0.1)
            return status

        status_within(("error: no gallery named 'staff'",))
        galleries.create_gallery("staff", "staff-door")
        status_within(("ended",))  # the whole clip read: it ran
        # The settings file's source is the media folder's file, as the API stores one: it
        # was opened relative to the directory the service started in, and failed for ever.
        assert manager.describe("door")[0]["source"] == str(
            (shared_data / "video" / "short_hamilton_clip.mp4").resolve())
    finally:
        manager.close()
        galleries.close()
