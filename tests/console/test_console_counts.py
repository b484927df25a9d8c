"""The Street page's counts chart against a real `facelens serve`: a street camera plays the
car-park clip while the page is open, and its chart (redrawn every 15 s) comes to show a line
per class counted with the totals the API gives;
the hourly window shows the same totals, and an events-only key sees the chart too."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import Server, api_call, needs_chromium, serve, sign_in
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, needs_chromium]
CLIP = "intel_car-detection.mp4"


@pytest.fixture
def street_server(tmp_path_factory: pytest.TempPathFactory, isolated_env: Path,
                  shared_data: Path) -> Iterator[Server]:
    """A server of its own whose cameras may play ../shared/data/street."""
    with serve(tmp_path_factory.mktemp("console-counts"), media_dir=shared_data / "street") \
            as running:
        yield running


def _camera_ends(server: Server, name: str, timeout_s: float = 240) -> None:
    end = time.monotonic() + timeout_s
    while True:
        (camera,) = [c for c in api_call(server.base, "/v1/cameras", server.key)
                     if c["name"] == name]
        if camera["status"] == "ended":
            return
        assert camera["status"] in ("starting", "running"), camera["status"]
        assert time.monotonic() < end, "the street camera did not finish its clip"
        time.sleep(1)


def _drawn(page: Page, camera: str) -> dict[str, int]:
    """Class -> total of each line the camera's chart draws (read from the SVG itself)."""
    lines: list[dict[str, Any]] = page.locator(
        f"[data-testid=counts-chart-{camera}] polyline").evaluate_all(
        "ls => ls.map(l => ({k: l.dataset.class, n: Number(l.dataset.total),"
        " points: l.getAttribute('points').split(' ').length}))")
    assert all(line["points"] >= 24 for line in lines)  # a point per bucket, empty ones too
    return {line["k"]: line["n"] for line in lines}


def test_street_page_charts_each_street_camera_counts(page: Page, street_server: Server,
                                                      shots: Path) -> None:
    server = street_server
    sign_in(page, server)
    page.click("#nav-street")
    expect(page.get_by_test_id("counts-empty")).to_be_visible()

    # The page stays open while the camera runs: its redraw (every 15 s) picks up the new
    # camera and then its final counts, with no navigation.
    api_call(server.base, "/v1/cameras", server.key, {
        "name": "carpark", "source": CLIP, "fps": 3, "scene": True, "motion": True})
    _camera_ends(server, "carpark")
    counts = api_call(server.base, "/v1/cameras/carpark/counts", server.key)
    totals: dict[str, int] = counts["totals"]
    assert sum(totals.values()) >= 2, totals  # parked and moving cars: counted
    page.wait_for_function(
        "n => Array.from(document.querySelectorAll("
        "'[data-testid=counts-chart-carpark] polyline'))"
        ".reduce((sum, l) => sum + Number(l.dataset.total), 0) === n",
        arg=sum(totals.values()), timeout=40_000)
    assert _drawn(page, "carpark") == totals
    for kind, n in totals.items():
        expect(page.get_by_test_id(f"counts-total-carpark-{kind}")).to_contain_text(
            f"{kind} {n}")
    page.screenshot(path=shots / "street-counts.png", full_page=True)

    with page.expect_response(lambda r: "/v1/cameras/carpark/counts?" in r.url
                              and "bucket=hour" in r.url):
        page.select_option("#counts-window", "day")
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=counts-chart-carpark] polyline')"
        ".length > 0 && document.querySelector('[data-testid=counts-chart-carpark]')"
        ".getAttribute('aria-label').includes('hour')")
    assert _drawn(page, "carpark") == totals

    viewer = server.new_key("counts-viewer", "events")
    page.click("#signout")
    sign_in(page, server, viewer["key"])
    page.click("#nav-street")
    expect(page.get_by_test_id("counts-chart-carpark")).to_be_visible()
