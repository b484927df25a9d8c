"""Camera zones and masks: what lies outside every zone or inside a mask is blanked before
detection, so nobody there is tracked, matched or kept; set over the API, stored, applied by
the camera's runner (and seen as grey in its preview)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelens.gallery.service import ConsentRecord, Galleries
from facelens.settings import CameraConfig, Settings
from facelens.video.masks import BLANK, FrameMask

WHOLE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
LEFT = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]
CORNER = [[0.0, 0.0], [0.1, 0.0], [0.1, 0.1], [0.0, 0.1]]


def test_zones_keep_and_masks_blank_their_polygons() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (100, 200, 3), np.uint8)
    assert FrameMask([], []).apply(rgb) is rgb  # nothing set: the frame untouched
    zone = FrameMask([LEFT], []).apply(rgb)
    assert (zone[:, 110:] == BLANK).all() and (zone[:, :90] == rgb[:, :90]).all()
    masked = FrameMask([], [LEFT]).apply(rgb)
    assert (masked[:, :90] == BLANK).all() and (masked[:, 110:] == rgb[:, 110:]).all()
    both = FrameMask([LEFT], [CORNER]).apply(rgb)  # a mask wins inside a zone
    assert (both[:5, :15] == BLANK).all() and (both[50:, 30:90] == rgb[50:, 30:90]).all()
    assert (rgb != BLANK).any()  # the input is not changed in place
    with pytest.raises(ValueError):
        CameraConfig(name="c", source="x", zones=[[[0, 0], [1.5, 0], [1, 1]]])
    with pytest.raises(ValueError):
        CameraConfig(name="c", source="x", masks=[[[0, 0], [1, 0]]])  # not a polygon


def _wait_for(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


@pytest.mark.slow
def test_a_camera_watches_only_its_zones(tmp_path: Path, shared_data: Path) -> None:
    from fastapi.testclient import TestClient

    from facelens.service.app import create_app

    data_dir = tmp_path / "data"
    galleries = Galleries(Settings(data_dir=data_dir))
    galleries.create_gallery("watch", "watchlist-stage")
    for name in ("lin-manuel-miranda", "alex-lacamoire"):
        galleries.enroll("watch", name, [shared_data / "video" / f"{name}.png"],
                         consent=ConsentRecord("stage security", "legitimate-interest", "t"),
                         watch_reason="test", watch_expires=datetime.now(UTC) + timedelta(days=1))
    galleries.store.close()
    app = create_app(Settings(data_dir=data_dir, media_dir=shared_data / "video"))
    with TestClient(app) as c:
        auth = {"Authorization": f"Bearer {app.state.facelens.keys.create('o', ['admin'])[1]}"}

        def run(**regions: list[list[list[float]]]) -> int:
            """Alerts of one pass of the clip with these zones/masks."""
            c.delete("/v1/cameras/stage", headers=auth)
            made = c.post("/v1/cameras", headers=auth, json={
                "name": "stage", "source": "short_hamilton_clip.mp4", "galleries": ["watch"],
                "fps": 10, **regions})
            assert made.status_code == 201, made.text
            assert {k: made.json()[k] for k in regions} == regions
            _wait_for(lambda: stage()["status"] == "ended", timeout=180)
            return int(stage()["alerts"])

        def stage() -> dict[str, object]:
            (camera,) = [x for x in c.get("/v1/cameras", headers=auth).json()
                         if x["name"] == "stage"]
            return dict(camera)

        assert run(masks=[WHOLE]) == 0
        preview = c.get("/v1/cameras/stage/preview.jpg", headers=auth).content
        grey = cv2.imdecode(np.frombuffer(preview, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert abs(float(np.median(grey)) - BLANK) <= 2  # the operator sees what is ignored
        assert run(zones=[CORNER]) == 0  # nobody stands in the top-left corner
        assert run(zones=[WHOLE]) == 2  # both people, as without a zone
        changed = c.patch("/v1/cameras/stage", headers=auth, json={"masks": [LEFT, CORNER]})
        assert changed.status_code == 200 and changed.json()["masks"] == [LEFT, CORNER]
        bad = c.patch("/v1/cameras/stage", headers=auth, json={"zones": [[[0, 0], [2, 0], [1, 1]]]})
        assert bad.status_code == 422
        audit = [e for e in c.get("/v1/audit", headers=auth).json()
                 if e["action"] == "camera.change"]
        assert audit and "masks" in str(audit[0])
