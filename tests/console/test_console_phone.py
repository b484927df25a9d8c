"""The console's layout on a phone (390 px, dark theme) and a desktop (1280 px, light), once
found broken in console QA: filter labels apart from their fields, chart labels too small to
read on a phone and oversized on a desktop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import Server, api_call, needs_chromium, open_page, sign_in
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.fixture
def phone(browser: Any) -> Iterator[Page]:
    """A 390-px wide page in the dark theme."""
    with open_page(browser) as page:
        page.set_viewport_size({"width": 390, "height": 844})
        page.emulate_media(color_scheme="dark")
        yield page


# Each <label for> of `form` with its field's box and its own: [{for, label, field}].
LABEL_BOXES = """form => [...form.querySelectorAll("label[for]")].map((label) => {
  const box = (node) => { const r = node.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
  return {for: label.htmlFor, label: box(label),
    field: box(document.getElementById(label.htmlFor))};
})"""


def _labels_beside_their_fields(page: Page, form: str) -> None:
    pairs: list[dict[str, Any]] = page.locator(form).evaluate(LABEL_BOXES)
    assert pairs
    for pair in pairs:
        label, field = pair["label"], pair["field"]
        same_line = label["top"] < field["bottom"] and field["top"] < label["bottom"]
        assert same_line and label["right"] <= field["left"], pair


def test_alerts_filter_labels_stay_with_their_fields_on_a_phone(
        phone: Page, server: Server, shots: Path) -> None:
    sign_in(phone, server)
    phone.click("#nav-alerts")
    expect(phone.locator("#events-filter")).to_be_visible()
    _labels_beside_their_fields(phone, "#events-filter")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=shots / "alerts-phone-dark.png", full_page=True)


# The size in CSS pixels each text of the chart is drawn at (its font size times the SVG's scale).
CHART_TEXT_PX = """svg => [...svg.querySelectorAll("text")].map((text) =>
  parseFloat(getComputedStyle(text).fontSize) * svg.getScreenCTM().a)"""


def _chart_text_px(page: Page, server: Server) -> list[float]:
    sign_in(page, server)
    page.click("#nav-street")
    chart = page.get_by_test_id("counts-chart-kerb")
    expect(chart).to_be_visible()
    sizes: list[float] = chart.evaluate(CHART_TEXT_PX)
    assert sizes
    return sizes


@pytest.fixture(scope="module")
def street_camera(server: Server) -> str:
    """A camera with the street layer on (its device absent: it errors, and stays listed)."""
    api_call(server.base, "/v1/cameras", server.key,
             {"name": "kerb", "source": "/dev/video9", "scene": True})
    return "kerb"


def test_counts_chart_labels_are_readable_on_a_phone(phone: Page, server: Server,
                                                     street_camera: str, shots: Path) -> None:
    sizes = _chart_text_px(phone, server)
    assert min(sizes) >= 11, sizes  # the page's small print is 14 px
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=shots / "street-phone-dark.png", full_page=True)


def test_counts_chart_labels_are_not_oversized_on_a_desktop(page: Page, server: Server,
                                                            street_camera: str,
                                                            shots: Path) -> None:
    sizes = _chart_text_px(page, server)
    assert min(sizes) >= 11 and max(sizes) <= 16, sizes
    page.screenshot(path=shots / "street-desktop-light.png", full_page=True)


def test_a_camera_source_has_room_on_a_desktop(page: Page, server: Server, shots: Path) -> None:
    source = "rtsp://192.0.2.10:554/Streaming/Channels/101?transportmode=unicast"
    api_call(server.base, "/v1/cameras", server.key, {"name": "dock", "source": source})
    sign_in(page, server)
    page.click("#nav-cameras")
    cell = page.get_by_test_id("camera-dock").locator("td.source")
    expect(cell).to_have_text(source)
    box = cell.bounding_box()
    assert box is not None and box["width"] >= 190, box  # it was 88 px: 6 lines of a path
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.screenshot(path=shots / "cameras-desktop-light.png")
