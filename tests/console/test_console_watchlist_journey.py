"""A watchlist run from the console alone, end to end (#25's journey): sign in, create a
watchlist, bulk-enrol it from a zip, Try it with a group photo, add a file camera and draw its
zone, alerts arriving without Refresh, reviewed beside the enrolled reference, searched by
person, a scoped key that changes what the console shows, the audit browsed and verified.
Screenshots at 1280 px light and 390 px dark in out/console/watchlist-*.png."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from console_support import CLIP, VIDEO, Server, api_call, needs_chromium, open_page, serve, sign_in
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, needs_chromium]

CAST = ("lin-manuel-miranda", "alex-lacamoire")


@pytest.fixture
def stage_server(tmp_path_factory: pytest.TempPathFactory, isolated_env: Path
                 ) -> Iterator[Server]:
    needed = [CLIP, *(VIDEO / f"{name}.png" for name in CAST)]
    if missing := [str(p) for p in needed if not p.is_file()]:
        pytest.skip(f"the journey needs ../shared/data/video (the team's checkout): "
                    f"{', '.join(missing)} absent")
    with serve(tmp_path_factory.mktemp("console-journey"), media_dir=VIDEO) as running:
        yield running


def test_a_watchlist_run_from_the_console(page: Page, browser: Any, stage_server: Server,
                                          fixtures_dir: Path, tmp_path: Path,
                                          shots: Path) -> None:
    server = stage_server
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, server)

    # A watchlist, enrolled from a zip of one folder per person (reason and expiry for all).
    page.fill("#gallery-name", "stage-watch")
    page.fill("#gallery-purpose", "watchlist-stage")
    page.click("#create-gallery")
    page.get_by_test_id("gallery-stage-watch").get_by_role("link", name="stage-watch").click()
    archive = tmp_path / "cast.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in CAST:
            z.write(VIDEO / f"{name}.png", f"cast/{name}/{name}.png")
    bulk = page.locator("#bulk-form")
    bulk.locator("#bulk-archive").set_input_files(archive)
    bulk.get_by_label("Legal basis").select_option("legitimate-interest")
    bulk.get_by_label("Consent purpose").fill("stage security")
    bulk.get_by_label("Recorded by").fill("venue")
    bulk.get_by_label("Watch reason").fill("journey test")
    bulk.get_by_label("Watch expires").fill((date.today() + timedelta(days=30)).isoformat())
    bulk.get_by_role("button", name="Enrol everyone").click()
    expect(page.locator("#bulk-summary")).to_have_text("Done: 2 enrolled.", timeout=120_000)
    page.screenshot(path=shots / "watchlist-enrolled-1280-light.png", full_page=True)

    # Try it: a group photo answers per face.
    page.click("#nav-try")
    page.set_input_files("#try-image", fixtures_dir / "biden.jpg")
    page.set_input_files("#try-image-b", fixtures_dir / "obama_and_biden.jpg")
    page.click("#try-submit")
    expect(page.get_by_test_id("try-verify")).to_contain_text("second photo: 1 of")

    # A file camera watching the list, with no gallery yet; its zone drawn over the frame.
    page.click("#nav-cameras")
    form = page.locator("#add-camera-form")
    form.get_by_label("Name").fill("stage")
    form.get_by_label("Source").fill(CLIP.name)
    form.get_by_label("Frames per second").fill("10")
    page.click("#add-camera")
    expect(page.get_by_test_id("notice")).to_have_text("Camera stage added.")
    page.get_by_test_id("camera-zones-stage").click()
    canvas = page.get_by_test_id("zones-canvas")
    box = canvas.bounding_box()
    assert box is not None
    for x, y in ((0.01, 0.01), (0.99, 0.01), (0.99, 0.99), (0.01, 0.99)):
        canvas.click(position={"x": x * box["width"], "y": y * box["height"]})
    page.get_by_role("button", name="Close polygon").click()
    page.get_by_test_id("zone-editor").get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("notice")).to_contain_text("1 zone(s), 0 mask(s)")
    page.get_by_test_id("camera-assign-stage").click()
    page.get_by_test_id("camera-editor-select-stage").select_option(["stage-watch"])
    page.get_by_test_id("camera-editor-save-stage").click()
    expect(page.get_by_test_id("camera-galleries-stage")).to_have_text("stage-watch")

    # Alerts come in while the page is open, with nobody pressing Refresh.
    page.click("#nav-alerts")
    expect(page.get_by_test_id("events-live")).to_contain_text("Live")
    rows = page.locator("#events-table tbody tr[data-status]")
    expect(rows).to_have_count(2, timeout=240_000)
    events = api_call(server.base, "/v1/events", server.key)
    assert sorted(e["subject_name"] for e in events) == sorted(CAST)
    lin, lin_subject = next((e["id"], e["subject_id"]) for e in events
                            if e["subject_name"] == CAST[0])

    # Reviewed beside the enrolled reference, then that person's history.
    reference = page.get_by_test_id(f"event-reference-{lin}")
    expect(reference).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth === 112",
                           arg=reference.element_handle())
    page.get_by_test_id(f"event-confirm-{lin}").click()
    expect(page.get_by_test_id(f"event-status-{lin}")).to_have_text("confirmed")
    page.get_by_test_id(f"event-person-{lin}").click()
    expect(page.get_by_test_id("events-person")).to_contain_text(f"person: {CAST[0]}")
    # Only that person's alerts: the other's row goes, and the rows are the API's for them (a
    # slow machine may have alerted on them again after the cool-down, so not a fixed count).
    expect(rows.filter(has=page.locator("td.subject", has_text=CAST[1]))).to_have_count(0)
    history = api_call(server.base, f"/v1/events?subject_id={lin_subject}", server.key)
    assert {e["subject_name"] for e in history} == {CAST[0]}, history
    expect(rows).to_have_count(len(history))
    page.screenshot(path=shots / "watchlist-alerts-1280-light.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=shots / "watchlist-alerts-390-dark.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.emulate_media(color_scheme="light")

    # A key for the front desk: the console it signs into shows what identify allows.
    page.click("#nav-admin")
    page.fill("#key-name", "front-desk")
    page.get_by_test_id("scope-identify").check()
    page.click("#key-create")
    secret = page.get_by_test_id("key-secret").inner_text()
    with open_page(browser) as desk:
        sign_in(desk, server, key=secret)
        expect(desk.get_by_test_id("whoami")).to_have_text("front-desk · identify")
        expect(desk.locator("#nav-admin")).to_be_hidden()
        expect(desk.locator("#nav-cameras")).to_be_hidden()

    # The audit: every step above is in the chain, and the chain holds.
    page.click("#audit-verify")
    expect(page.get_by_test_id("audit-check")).to_contain_text("Chain intact")
    audit = page.locator("#audit-table tbody")
    for action in ("gallery.create", "enrol", "camera.add", "camera.change", "event.confirm",
                   "key.create"):
        expect(audit.locator("tr", has_text=action).first).to_be_visible()
    page.screenshot(path=shots / "watchlist-audit-1280-light.png", full_page=True)
