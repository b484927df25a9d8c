"""Bulk enrolment from the console: a zip of one folder per person, uploaded from the gallery
page, enrolled with a progress bar and a per-person report; then one person edited: renamed,
given another photo, a template deleted (real browser, real server)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from console_support import Server, api_call, needs_chromium, sign_in
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, needs_chromium]


def test_bulk_enrol_from_a_zip_reports_each_person(page: Page, server: Server,
                                                   fixtures_dir: Path, tmp_path: Path,
                                                   shots: Path) -> None:
    archive = tmp_path / "team.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for person, photo in (("obama", "obama.jpg"), ("obama", "obama2.jpg"),
                              ("biden", "biden.jpg"), ("rose", "kit_with_rose.jpg")):
            z.write(fixtures_dir / photo, f"team/{person}/{photo}")
    api_call(server.base, "/v1/galleries", server.key, {"name": "team", "purpose": "staff-door"})

    sign_in(page, server)
    page.goto(server.base + "/console/#/galleries/team")
    expect(page.get_by_test_id("gallery-title")).to_have_text("Gallery team")
    form = page.locator("#bulk-form")
    form.locator("#bulk-archive").set_input_files(archive)
    form.get_by_label("Consent purpose").fill("team door")
    form.get_by_label("Recorded by").fill("hr")
    form.get_by_role("button", name="Enrol everyone").click()

    summary = page.locator("#bulk-summary")
    expect(summary).to_have_text("Done: 2 enrolled, 1 not enrolled.", timeout=120_000)
    progress = page.get_by_test_id("bulk-progress")
    assert progress.evaluate("p => [p.value, p.max]") == [3, 3]
    rows = page.locator("#bulk-report tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("biden")
    expect(rows.nth(1)).to_contain_text("obama")
    expect(rows.nth(1).locator("td").nth(2)).to_have_text("2")
    expect(page.locator('#bulk-report tr[data-status="refused"]')).to_contain_text("rose")
    expect(page.locator("#subjects-table tbody tr")).to_have_count(2)
    page.screenshot(path=shots / "bulk-enrol.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=shots / "bulk-enrol-390.png", full_page=True)
    subjects = api_call(server.base, "/v1/galleries/team/subjects", server.key)
    assert sorted(s["external_id"] for s in subjects) == ["biden", "obama"]

    # Edit obama: rename, add a photo (a third template), delete the first template.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_test_id("edit-obama").click()
    panel = page.get_by_test_id("subject-panel")
    expect(panel).to_be_visible()
    templates = page.locator("#templates-table tbody tr")
    expect(templates).to_have_count(2)
    panel.get_by_label("Name").fill("Barack Obama")
    panel.get_by_role("button", name="Rename").click()
    expect(page.get_by_test_id("notice")).to_have_text("Renamed to Barack Obama.")
    expect(page.locator("#subjects-table")).to_contain_text("Barack Obama")
    panel.locator("#add-photos-images").set_input_files(fixtures_dir / "obama.jpg")
    panel.get_by_role("button", name="Add photos").click()
    expect(page.get_by_test_id("notice")).to_contain_text("Added 1 photo to Barack Obama.")
    expect(templates).to_have_count(3)
    page.once("dialog", lambda dialog: dialog.accept())
    templates.nth(0).get_by_role("button").click()
    expect(templates).to_have_count(2)
    page.screenshot(path=shots / "subject-edit.png", full_page=True)
    (edited,) = [s for s in api_call(server.base, "/v1/galleries/team/subjects", server.key)
                 if s["external_id"] == "obama"]
    assert (edited["name"], edited["templates"]) == ("Barack Obama", 2)
