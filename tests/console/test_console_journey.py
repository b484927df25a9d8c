"""The console at a desk and on a phone, light and dark: the same journey (galleries, Try it
with a group photo, alerts reviewed) at 1280 and 390 px wide in both colour schemes, screenshots
in out/console/journey-*.png; on a phone nothing runs off the right edge and every alert's
Confirm and Dismiss stay on screen."""

from __future__ import annotations

from pathlib import Path

import pytest
from console_support import Server, needs_chromium, record_alert, sign_in
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, needs_chromium]

@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_journey_at_desk_and_phone_widths(page: Page, server: Server, fixtures_dir: Path,
                                          shots: Path, width: int, scheme: str) -> None:
    event = record_alert(server, fixtures_dir / "obama.jpg", "front-door", gallery="journey",
                         name="Lin-Manuel Miranda")
    page.set_viewport_size({"width": width, "height": 844 if width < 600 else 900})
    page.emulate_media(color_scheme=scheme)
    name = f"{width}-{scheme}"

    sign_in(page, server)
    expect(page.get_by_test_id("gallery-journey")).to_be_visible()
    background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert (background == "rgb(13, 17, 23)") == (scheme == "dark")
    page.screenshot(path=shots / f"journey-galleries-{name}.png", full_page=True)

    page.click("#nav-try")
    page.set_input_files("#try-image", fixtures_dir / "biden.jpg")
    page.set_input_files("#try-image-b", fixtures_dir / "obama_and_biden.jpg")
    page.click("#try-submit")
    expect(page.get_by_test_id("try-verify")).to_contain_text("second photo: 1 of")
    page.screenshot(path=shots / f"journey-try-{name}.png", full_page=True)

    page.click("#nav-alerts")
    row = page.get_by_test_id(f"event-{event}")
    expect(row).to_contain_text("Lin-Manuel Miranda")
    page.screenshot(path=shots / f"journey-alerts-{name}.png", full_page=True)
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= width, f"the page is {overflow} px wide at {width} px"
    for action in ("confirm", "dismiss"):
        box = page.get_by_test_id(f"event-{action}-{event}").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
    page.get_by_test_id(f"event-confirm-{event}").click()
    expect(page.get_by_test_id(f"event-status-{event}")).to_have_text("confirmed")
