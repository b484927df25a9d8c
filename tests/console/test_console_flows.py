"""Console flows a new operator walks through, each once found broken in QA: the audit log after
a key change, the cameras page after the service was unreachable, the alerts filters, errors
said once and in words, long names on a phone, the edit panel of a deleted person, and
live alerts after quick filter changes or recorded while the list loads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from console_support import (
    Server,
    accept_next_dialog,
    api_call,
    needs_chromium,
    open_page,
    record_alert,
    sign_in,
)
from playwright.sync_api import Page, Route, expect

pytestmark = [pytest.mark.slow, needs_chromium]


def test_audit_log_shows_the_key_changes_made_on_the_page(page: Page, server: Server) -> None:
    sign_in(page, server)
    page.click("#nav-admin")
    audited = page.locator("#audit-table tbody tr")
    expect(audited.filter(has_text="key.create")).to_have_count(1)  # the sign-in key's
    page.fill("#key-name", "kiosk")
    page.get_by_test_id("scope-identify").check()
    page.click("#key-create")
    key_id = page.get_by_test_id("key-secret").inner_text().split("_")[1]
    expect(audited.filter(has_text="key.create")).to_have_count(2)

    accept_next_dialog(page)
    page.get_by_test_id(f"key-revoke-{key_id}").click()
    expect(page.get_by_test_id("notice")).to_have_text("Key kiosk revoked.")
    expect(audited.filter(has_text="key.revoke")).to_have_count(1)


def test_a_key_needs_a_scope_said_in_words(page: Page, server: Server) -> None:
    sign_in(page, server)
    page.click("#nav-admin")
    page.fill("#key-name", "no-scope")
    page.click("#key-create")
    expect(page.get_by_test_id("alert")).to_have_text("Choose at least one scope for the key.")


def test_cameras_page_takes_its_error_back_when_the_service_answers_again(
        page: Page, server: Server) -> None:
    sign_in(page, server)
    page.click("#nav-cameras")
    expect(page.get_by_test_id("cameras-empty")).to_be_visible()
    list_cameras = re.compile(r".*/v1/cameras$")

    def unreachable(route: Route) -> None:
        route.abort()

    page.route(list_cameras, unreachable)  # the next 2-second refresh cannot reach the service
    alert = page.get_by_test_id("alert")
    expect(alert).to_contain_text("cannot reach the service")
    page.unroute(list_cameras, unreachable)
    expect(alert).to_be_hidden()


def test_camera_name_refused_in_words(page: Page, server: Server) -> None:
    sign_in(page, server)
    page.click("#nav-cameras")
    form = page.locator("#add-camera-form")
    form.get_by_label("Name").fill("front door")
    form.get_by_label("Source").fill("clip.mp4")
    page.click("#add-camera")
    expect(page.get_by_test_id("alert")).to_contain_text(
        "“front door” cannot be a camera name: use letters, digits")
    expect(page.get_by_test_id("alert")).to_contain_text("“front_door”")


def test_alerts_kind_filter_applies_at_once_and_select_all_follows_the_list(
        page: Page, server: Server, fixtures_dir: Path) -> None:
    event_id = record_alert(server, fixtures_dir / "biden.jpg", "gate", gallery="flows",
                            name="Joe")
    sign_in(page, server)
    page.click("#nav-alerts")
    expect(page.get_by_test_id(f"event-{event_id}")).to_be_visible()
    page.check("#events-all")
    expect(page.locator("#events-confirm-selected")).to_be_enabled()

    page.select_option("#events-kind", "plate")  # no Search click: as Status does
    expect(page.get_by_test_id("events-empty")).to_be_visible()
    expect(page.locator("#events-all")).not_to_be_checked()
    expect(page.locator("#events-confirm-selected")).to_be_disabled()


def test_try_it_says_a_photo_error_once(page: Page, server: Server) -> None:
    api_call(server.base, "/v1/galleries", server.key, {"name": "try-once", "purpose": "staff"})
    sign_in(page, server)
    page.click("#nav-try")
    page.select_option("#try-gallery", "try-once")
    page.set_input_files("#try-image", {"name": "note.jpg", "mimeType": "image/jpeg",
                                        "buffer": b"not a photo"})
    page.click("#try-submit")
    alert = page.get_by_test_id("alert")
    expect(alert).to_contain_text("not an image")
    expect(alert.locator("p")).to_have_count(1)


def test_a_long_name_stays_on_a_phone_screen(browser: Any, server: Server) -> None:
    long_name = "NightShiftReceptionTablet" * 3  # no hyphen or space to break at
    made = server.new_key(long_name, "identify")
    with open_page(browser) as phone:
        phone.set_viewport_size({"width": 360, "height": 740})
        sign_in(phone, server)
        phone.click("#nav-admin")
        row = phone.get_by_test_id(f"key-{made['id']}")
        expect(row).to_contain_text(long_name)
        name_cell = row.locator("td").nth(1)
        assert name_cell.evaluate("(td) => td.scrollWidth <= td.clientWidth")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 360


def test_deleting_the_person_being_edited_closes_their_panel(page: Page, server: Server,
                                                             fixtures_dir: Path) -> None:
    record_alert(server, fixtures_dir / "obama.jpg", "gate", gallery="flows-edit", name="Barack")
    sign_in(page, server)
    page.goto(server.base + "/console/#/galleries/flows-edit")
    page.get_by_test_id("edit-Barack").click()
    expect(page.get_by_test_id("subject-panel")).to_be_visible()
    accept_next_dialog(page)
    page.get_by_test_id("delete-Barack").click()
    expect(page.get_by_test_id("notice")).to_have_text("Barack deleted.")
    expect(page.get_by_test_id("subject-panel")).to_be_hidden()


def delayed_fetch(matches: str, wait: str) -> str:
    """An init script: the console's requests whose `url` the JS test `matches` run the JS
    statement `wait` (awaiting something) before they are sent."""
    return f"""
const fetchNow = window.fetch;
window.fetch = async (url, options) => {{
  if ({matches}) {{ {wait} }}
  return fetchNow(url, options);
}};
"""


# Each list of alerts answers a second late, as on a slow network.
SLOW_EVENT_LISTS = delayed_fetch('String(url).includes("/v1/events?")',
                                 "await new Promise((done) => setTimeout(done, 1000));")


def test_a_new_alert_is_listed_once_after_quick_filter_changes(page: Page, server: Server,
                                                                fixtures_dir: Path) -> None:
    record_alert(server, fixtures_dir / "biden.jpg", "gate", gallery="flows", name="Joe")
    page.add_init_script(SLOW_EVENT_LISTS)
    sign_in(page, server)
    page.click("#nav-alerts")
    expect(page.get_by_test_id("events-live")).to_contain_text("Live")
    page.select_option("#events-status", "unconfirmed")
    page.select_option("#events-status", "")  # while the first list is still loading
    expect(page.locator("#events-table tbody tr").first).to_be_visible()
    page.wait_for_timeout(2500)  # both lists answered, and their streams opened

    event_id = record_alert(server, fixtures_dir / "biden.jpg", "gate", gallery="flows",
                            name="Joe")
    expect(page.get_by_test_id(f"event-{event_id}").first).to_be_visible()
    page.wait_for_timeout(2000)  # a second stream would have added its copy by now
    expect(page.get_by_test_id(f"event-{event_id}")).to_have_count(1)


# The console's "newest alert" request waits until the test lets it go.
HELD_NEWEST = delayed_fetch(
    'String(url).endsWith("/v1/events?limit=1")',
    "while (!window.releaseNewest) await new Promise((done) => setTimeout(done, 100));")


def test_an_alert_recorded_while_the_list_loads_is_shown(page: Page, server: Server,
                                                         fixtures_dir: Path) -> None:
    record_alert(server, fixtures_dir / "biden.jpg", "gate", gallery="flows", name="Joe")
    page.add_init_script(HELD_NEWEST)
    sign_in(page, server)
    page.click("#nav-alerts")
    page.wait_for_timeout(1000)  # the page is loading its list
    event_id = record_alert(server, fixtures_dir / "biden.jpg", "gate", gallery="flows",
                            name="Joe")
    page.evaluate("window.releaseNewest = true")
    expect(page.get_by_test_id("events-live")).to_contain_text("Live")
    expect(page.get_by_test_id(f"event-{event_id}")).to_have_count(1, timeout=10_000)
