"""Editing a camera on the console's Cameras page (found missing in console QA: its source
and frame rate could only be set by removing and adding it again)."""

from __future__ import annotations

from typing import Any

import pytest
from console_support import Server, api_call, needs_chromium, sign_in
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, needs_chromium]


def _camera(server: Server, name: str) -> dict[str, Any]:
    (camera,) = [c for c in api_call(server.base, "/v1/cameras", server.key) if c["name"] == name]
    return camera


def test_a_camera_s_source_and_frame_rate_are_edited_in_place(page: Page,
                                                             server: Server) -> None:
    api_call(server.base, "/v1/cameras", server.key,
             {"name": "yard", "source": "/dev/video9", "fps": 10})
    sign_in(page, server)
    page.click("#nav-cameras")
    page.get_by_role("button", name="Edit yard").click()
    form = page.get_by_role("form", name="Edit yard")
    expect(form.get_by_label("Source")).to_be_focused()
    expect(form.get_by_label("Source")).to_have_value("/dev/video9")
    form.get_by_label("Source").fill("/dev/video8")
    form.get_by_label("Frames per second").fill("2.5")
    form.get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("notice")).to_have_text(
        "Camera yard now reads /dev/video8, at 2.5 fps.")
    expect(page.get_by_test_id("camera-fps-yard")).to_have_text("2.5")
    camera = _camera(server, "yard")
    assert (camera["source"], camera["fps"], camera["galleries"]) == ("/dev/video8", 2.5, [])

    page.get_by_role("button", name="Edit yard").click()
    form.get_by_role("button", name="Save").click()  # nothing changed: nothing sent
    expect(page.get_by_test_id("notice")).to_have_text("Camera yard: nothing changed.")
    expect(form).to_have_count(0)


def test_a_zone_is_drawn_from_the_keyboard(page: Page, server: Server) -> None:
    api_call(server.base, "/v1/cameras", server.key, {"name": "porch", "source": "/dev/video9"})
    sign_in(page, server)
    page.click("#nav-cameras")
    page.get_by_role("button", name="Zones and masks of porch").focus()
    page.keyboard.press("Enter")
    editor = page.get_by_test_id("zone-editor")
    expect(editor.get_by_label("The camera's frame")).to_be_focused()  # cross in the middle
    for keys in ([], ["Shift+ArrowRight"] * 2, ["Shift+ArrowDown"] * 2 + ["ArrowLeft"]):
        for key in keys:
            page.keyboard.press(key)
        page.keyboard.press("Enter")
    expect(page.locator("#zones-state")).to_have_text("Corner 3 placed.")
    editor.get_by_role("button", name="Close polygon").press("Enter")
    editor.get_by_role("button", name="Save").press("Enter")
    expect(page.get_by_test_id("notice")).to_have_text(
        "Zones of porch saved: 1 zone(s), 0 mask(s).")
    assert _camera(server, "porch")["zones"] == [[[0.5, 0.5], [0.7, 0.5], [0.68, 0.7]]]
