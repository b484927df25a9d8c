"""The console's cameras page against a real `facelens serve`: a camera on the Hamilton clip
(../shared/data/video) added, previewed live, its alerts (snapshot and blurred frame) listed,
disabled, reassigned, enabled and removed. Screenshots go to out/console/.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from console_support import (
    CLIP,
    VIDEO,
    Server,
    accept_next_dialog,
    api_call,
    needs_chromium,
    serve,
    sign_in,
)
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, needs_chromium]

STAGE_CAST = ("lin-manuel-miranda", "alex-lacamoire")

# The camera test's data dir, before its server starts: a watchlist of the two people in the
# clip, a second (empty) gallery to reassign the camera to, one "suppressed" event (a face
# flagged as a poster on another camera) with a snapshot and a frame, and one "depiction" (a
# face inside a TV there).
PREPARE_CAMERAS = """
import io, json, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from PIL import Image
from facelens.events.store import EventStore
from facelens.gallery.service import ConsentRecord, Galleries
from facelens.settings import get_settings
from facelens.store.database import Store

video = Path(sys.argv[1])
settings = get_settings()
store = Store(settings)
galleries = Galleries(settings, store)
galleries.create_gallery("watch", "watchlist-stage")
galleries.create_gallery("door-staff", "staff-door")
consent = ConsentRecord(purpose="console camera test", legal_basis="consent",
                        recorded_by="console test")
ids = {}
for name in sys.argv[2:]:
    report = galleries.enroll("watch", name, [str(video / f"{name}.png")], consent=consent,
                              watch_reason="console camera test",
                              watch_expires=datetime.now(UTC) + timedelta(days=30))
    assert report.templates == 1, report
    ids[name] = report.subject_id
jpeg = io.BytesIO()
Image.open(video / f"{sys.argv[-1]}.png").convert("RGB").save(jpeg, "JPEG")
poster = EventStore(store).record("lobby-screen", ids[sys.argv[-1]], "medium",
                                  snapshot_jpeg=jpeg.getvalue(), frame_jpeg=jpeg.getvalue(),
                                  status="suppressed", flagged=True)
EventStore(store).record("lobby-screen", ids[sys.argv[-1]], "medium", status="depiction",
                         flagged="depiction: tv", cue="object")
print(json.dumps({"poster": poster.id}))
"""


@pytest.fixture
def camera_server(tmp_path_factory: pytest.TempPathFactory, isolated_env: Path
                  ) -> Iterator[Server]:
    """A server of its own (its cameras' events and CPU stay out of the other tests)."""
    needed = [CLIP, *(VIDEO / f"{name}.png" for name in STAGE_CAST)]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        pytest.skip(f"the camera test needs ../shared/data/video (the team's checkout): "
                    f"{', '.join(missing)} absent")
    prepare = [sys.executable, "-c", PREPARE_CAMERAS, str(VIDEO), *STAGE_CAST]
    with serve(tmp_path_factory.mktemp("console-cameras"), prepare, media_dir=VIDEO) as running:
        yield running


def _tokyo(at: str) -> re.Pattern[str]:
    """The console's rendering of an API moment in the test's time zone (Asia/Tokyo, en-US).

    The service stores UTC but an event's "at" comes back without an offset (SQLite): the
    console must read it as UTC, not as local time.
    """
    moment = datetime.fromisoformat(at)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(ZoneInfo("Asia/Tokyo"))
    clock = local.strftime("%I:%M:%S").lstrip("0")
    return re.compile(rf"^{local.month}/{local.day}/{local.year}, {clock}\s{local:%p}$")


def _wait_loaded(page: Page, locator: Any, width: int | None = None) -> None:
    """Until the <img> has decoded (at `width` pixels wide, if given)."""
    check = "img.complete && img.naturalWidth > 0" if width is None else \
        f"img.complete && img.naturalWidth === {width}"
    page.wait_for_function(f"img => {check}", arg=locator.element_handle())


def test_cameras_add_preview_alerts_toggle_assign_remove(page: Page, camera_server: Server,
                                                         shots: Path) -> None:
    server = camera_server
    poster = next(e["id"] for e in api_call(server.base, "/v1/events", server.key)
                  if e["status"] == "suppressed")
    previews: list[tuple[str, str | None]] = []  # (url, Authorization) of preview fetches
    page.on("request", lambda r: previews.append((r.url, r.headers.get("authorization")))
            if "/preview." in r.url else None)

    sign_in(page, server)
    page.click("#nav-cameras")
    expect(page).to_have_url(server.base + "/console/#/cameras")
    expect(page.get_by_test_id("cameras-empty")).to_have_text("No cameras yet.")
    options = page.locator("#camera-galleries option")
    expect(options).to_have_count(2)
    assert sorted(options.all_inner_texts()) == ["door-staff", "watch"]

    # Add "stage": the clip at 10 fps, watched against "watch"; preview it at once.
    form = page.locator("#add-camera-form")
    form.get_by_label("Name").fill("stage")
    form.get_by_label("Source").fill(str(CLIP))
    form.get_by_label("Galleries").select_option(["watch"])
    form.get_by_label("Frames per second").fill("10")
    page.click("#add-camera")
    row = page.get_by_test_id("camera-stage")
    expect(row).to_be_visible()
    expect(page.get_by_test_id("notice")).to_have_text("Camera stage added.")
    expect(page.get_by_test_id("camera-galleries-stage")).to_have_text("watch")
    expect(page.get_by_test_id("camera-fps-stage")).to_have_text("10")
    expect(row.locator("td.source")).to_have_text(str(CLIP))
    page.get_by_test_id("camera-preview-stage").click()
    expect(page.get_by_test_id("preview-title")).to_have_text("Preview: stage")

    # Frames arrive while the clip runs (640x360, boxes drawn by the service), fetched with
    # the key and shown through object URLs, replaced every ~300 ms.
    img = page.get_by_test_id("preview-img")
    _wait_loaded(page, img, 640)
    assert img.get_attribute("src").startswith("blob:")
    assert previews and all(auth == f"Bearer {server.key}" for _, auth in previews)
    assert all(url.endswith("/v1/cameras/stage/preview.jpg") for url, _ in previews)
    # Both alerts are in the status (refreshed every 2 s, no reload): faces on screen now.
    expect(page.get_by_test_id("camera-alerts-stage")).to_have_text("2", timeout=120_000)
    expect(page.get_by_test_id("preview-state")).to_contain_text("frame fetched at")
    page.screenshot(path=shots / "cameras.png", full_page=True)
    expect(page.get_by_test_id("camera-status-stage")).to_have_text("ended", timeout=120_000)
    _wait_loaded(page, img, 640)  # the last frame stays on show
    expect(page.get_by_test_id("preview-state")).to_contain_text("Camera ended · its last frame")
    frames = int(img.get_attribute("data-frames") or 0)
    assert frames >= 3, frames
    expect(page.get_by_test_id("camera-reconnects-stage")).to_have_text("0")
    (camera,) = api_call(server.base, "/v1/cameras", server.key)
    assert camera | {"source": "…"} == {
        "name": "stage", "source": "…", "galleries": ["watch"], "enabled": True, "fps": 10.0,
        "motion": False, "cooldown_s": 60.0, "far": 0.001, "zones": [], "masks": [],
        "scene": False, "status": "ended", "alerts": 2, "reconnects": 0}
    page.screenshot(path=shots / "cameras-ended.png", full_page=True)

    # A second camera of the same name: the API's conflict, shown as on the other pages.
    form.get_by_label("Name").fill("stage")
    form.get_by_label("Source").fill(str(CLIP))
    page.click("#add-camera")
    expect(page.get_by_test_id("alert")).to_have_text("camera 'stage' exists")

    # Alerts: exactly one event per person from "stage", each with a snapshot and a frame
    # (the whole frame, fetched with the key); the poster on "lobby-screen" is labelled.
    page.click("#nav-alerts")
    expect(page.locator("#page-alerts")).to_be_visible()
    expect(page.locator("#camera-preview")).to_be_hidden()
    events = api_call(server.base, "/v1/events", server.key)
    stage = {e["subject_name"]: e for e in events if e["camera"] == "stage"}
    assert sorted(stage) == sorted(STAGE_CAST)
    assert len([e for e in events if e["camera"] == "stage"]) == 2
    assert all(e["status"] == "unconfirmed" and e["has_snapshot"] and e["has_frame"]
               for e in stage.values())
    expect(page.locator("td.camera", has_text=re.compile(r"^stage$"))).to_have_count(2)
    for name, event in stage.items():
        event_row = page.get_by_test_id(f"event-{event['id']}")
        expect(event_row.locator("td.camera")).to_have_text("stage")
        expect(event_row.locator("td.subject")).to_have_text(name)
        expect(event_row.locator("td.time")).to_have_text(_tokyo(event["at"]))
        expect(page.get_by_test_id(f"event-status-{event['id']}")).to_have_text("unconfirmed")
        snapshot = page.get_by_test_id(f"event-snapshot-{event['id']}")
        frame = page.get_by_test_id(f"event-frame-{event['id']}")
        _wait_loaded(page, snapshot)
        _wait_loaded(page, frame, 640)
        assert frame.get_attribute("src").startswith("blob:")
        assert event_row.locator("a:has(img.frame)").get_attribute("href") == \
            frame.get_attribute("src")
    poster_row = page.get_by_test_id(f"event-{poster}")
    expect(poster_row).to_have_class("status-suppressed")
    expect(poster_row.locator("td.camera")).to_have_text("lobby-screen")
    expect(page.get_by_test_id(f"event-flag-{poster}")).to_have_text("poster? — not alerted")
    expect(page.get_by_test_id(f"event-status-{poster}")).to_contain_text("suppressed")
    _wait_loaded(page, page.get_by_test_id(f"event-frame-{poster}"))
    page.screenshot(path=shots / "alerts-camera.png", full_page=True)

    # Leaving the Cameras page stopped the preview: no more requests for it.
    asked = len(previews)
    page.wait_for_timeout(1500)
    assert len(previews) == asked

    # The status filter knows "suppressed" and "depiction" (listed with its cue, never alerted).
    page.select_option("#events-status", "suppressed")
    expect(page.locator("#events-table tbody tr")).to_have_count(1)
    expect(poster_row).to_be_visible()
    page.select_option("#events-status", "depiction")
    expect(page.locator("#events-table tbody tr")).to_have_count(1)
    expect(page.locator("#events-table tbody tr.status-depiction .flag")).to_have_text(
        "screen/print (object: tv) — not alerted")
    page.select_option("#events-status", "")

    # Back on Cameras: disable, reassign to "door-staff" while disabled, enable, remove.
    page.click("#nav-cameras")
    toggle = page.get_by_test_id("camera-toggle-stage")
    expect(toggle).to_have_text("Disable")
    toggle.click()
    expect(page.get_by_test_id("camera-status-stage")).to_have_text("disabled")
    expect(toggle).to_have_text("Enable")
    expect(page.get_by_test_id("notice")).to_have_text("Camera stage disabled.")
    assert api_call(server.base, "/v1/cameras", server.key)[0]["enabled"] is False

    page.get_by_test_id("camera-assign-stage").click()
    editor = page.get_by_test_id("camera-editor-stage")
    expect(editor).to_be_visible()
    choice = page.get_by_test_id("camera-editor-select-stage")
    expect(choice.locator("option:checked")).to_have_text(["watch"])
    page.wait_for_timeout(2500)  # a status refresh in between leaves the editor open
    expect(editor).to_be_visible()
    choice.select_option(["door-staff"])
    page.get_by_test_id("camera-editor-save-stage").click()
    expect(editor).to_have_count(0)
    expect(page.get_by_test_id("camera-galleries-stage")).to_have_text("door-staff")
    expect(page.get_by_test_id("notice")).to_have_text("Camera stage now watches door-staff.")
    assert api_call(server.base, "/v1/cameras", server.key)[0]["galleries"] == ["door-staff"]

    # Zones and masks, drawn on the frame (blank: the camera is off): a zone over the left
    # half, a mask in its top-left corner; saved, they are what the API keeps.
    page.get_by_test_id("camera-zones-stage").click()
    zones = page.get_by_test_id("zone-editor")
    expect(zones).to_be_visible()
    canvas = page.get_by_test_id("zones-canvas")
    box = canvas.bounding_box()
    assert box is not None

    def corners(*points: tuple[float, float]) -> None:
        for x, y in points:
            canvas.click(position={"x": x * box["width"], "y": y * box["height"]})

    corners((0.01, 0.01), (0.5, 0.01), (0.5, 0.99), (0.01, 0.99))  # inside the canvas
    zones.get_by_role("button", name="Close polygon").click()
    zones.get_by_label("a mask").check()
    corners((0.01, 0.01), (0.2, 0.01), (0.2, 0.2))
    zones.get_by_role("button", name="Close polygon").click()
    expect(page.get_by_test_id("zones-count")).to_have_text("1 zone(s), 1 mask(s)")
    page.screenshot(path=shots / "camera-zones.png", full_page=True)
    zones.get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("notice")).to_have_text(
        "Zones of stage saved: 1 zone(s), 1 mask(s).")
    expect(zones).to_be_hidden()
    (kept,) = api_call(server.base, "/v1/cameras", server.key)
    assert [len(z) for z in kept["zones"]] == [4] and [len(m) for m in kept["masks"]] == [3]
    assert kept["zones"][0][2] == pytest.approx([0.5, 0.99], abs=0.01)
    assert kept["enabled"] is False  # saving zones does not switch a camera on

    toggle.click()
    expect(toggle).to_have_text("Disable")
    expect(page.get_by_test_id("camera-status-stage")).to_have_text(
        re.compile(r"^(starting|running|ended)$"))
    expect(page.get_by_test_id("notice")).to_have_text("Camera stage enabled.")
    assert api_call(server.base, "/v1/cameras", server.key)[0]["enabled"] is True

    dialogs = accept_next_dialog(page)
    page.get_by_test_id("camera-remove-stage").click()
    expect(page.get_by_test_id("camera-stage")).to_have_count(0)
    expect(page.get_by_test_id("cameras-empty")).to_be_visible()
    expect(page.get_by_test_id("notice")).to_have_text("Camera stage removed.")
    assert len(dialogs) == 1 and "stage" in dialogs[0]
    assert api_call(server.base, "/v1/cameras", server.key) == []
    # The replay watched "door-staff" (nobody enrolled): still one event per person.
    stage_events = [e for e in api_call(server.base, "/v1/events", server.key)
                    if e["camera"] == "stage"]
    assert len(stage_events) == 2
    expect(page.get_by_test_id("alert")).to_be_hidden()

