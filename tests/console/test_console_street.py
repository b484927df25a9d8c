"""The console's Street page against a real `facelens serve`: an admin adds a plate to the
hotlist and a description rule (checked against the API and the audit log), deletes them; an
events-only key sees the lists but no form or delete button."""

from __future__ import annotations

from typing import Any

import pytest
from console_support import Server, accept_next_dialog, api_call, needs_chromium, sign_in
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, needs_chromium]


def _audit(server: Server) -> list[str]:
    rows: list[dict[str, Any]] = api_call(server.base, "/v1/audit", server.key)
    return [r["action"] for r in rows]


def test_street_page_adds_and_deletes_plates_and_rules(page: Page, server: Server) -> None:
    sign_in(page, server)
    page.click("#nav-street")
    expect(page.get_by_test_id("plates-empty")).to_be_visible()
    expect(page.get_by_test_id("rules-empty")).to_be_visible()

    page.fill("#plate-text", "ab-12 o3")
    page.fill("#plate-reason", "stolen, case 17")
    page.fill("#plate-expires", "2099-01-01T12:00")  # more than a year ahead: refused
    page.click("#plate-add")
    expect(page.locator("#alert")).to_contain_text("at most 365 days")
    page.evaluate("""() => { const d = new Date(Date.now() + 7 * 864e5);
      document.querySelector('#plate-expires').value = d.toISOString().slice(0, 16); }""")
    page.click("#plate-add")
    expect(page.locator("#notice")).to_contain_text("AB-12 O3 is on the hotlist")
    (plate,) = api_call(server.base, "/v1/hotlists/plates", server.key)
    expect(page.get_by_test_id(f"plate-{plate['id']}")).to_contain_text("stolen, case 17")

    page.fill("#rule-description", "child, red top")
    page.fill("#rule-reason", "missing child")
    page.fill("#rule-cameras", "gate, lane-2")
    page.evaluate("""() => { const d = new Date(Date.now() + 2 * 864e5);
      document.querySelector('#rule-expires').value = d.toISOString().slice(0, 16); }""")
    page.click("#rule-add")
    expect(page.locator("#notice")).to_contain_text("child, red top")
    (rule,) = api_call(server.base, "/v1/rules", server.key)
    assert rule["cameras"] == ["gate", "lane-2"] and rule["reason"] == "missing child"
    expect(page.get_by_test_id(f"rule-{rule['id']}")).to_contain_text("gate, lane-2")

    viewer = server.new_key("street-viewer", "events")
    page.click("#signout")
    sign_in(page, server, viewer["key"])
    page.click("#nav-street")
    expect(page.get_by_test_id(f"plate-{plate['id']}")).to_be_visible()
    expect(page.locator("#plate-form")).to_be_hidden()
    expect(page.get_by_test_id(f"plate-delete-{plate['id']}")).to_have_count(0)

    page.click("#signout")
    sign_in(page, server)
    page.click("#nav-street")
    accept_next_dialog(page)
    page.get_by_test_id(f"plate-delete-{plate['id']}").click()
    expect(page.get_by_test_id("plates-empty")).to_be_visible()
    accept_next_dialog(page)
    page.get_by_test_id(f"rule-delete-{rule['id']}").click()
    expect(page.get_by_test_id("rules-empty")).to_be_visible()
    actions = _audit(server)
    for action in ("hotlist.add", "rule.add", "hotlist.delete", "rule.delete"):
        assert action in actions, action


def test_alerts_filter_by_kind_and_cameras_turn_the_street_layer_on(page: Page,
                                                                     server: Server) -> None:
    sign_in(page, server)
    page.click("#nav-cameras")
    page.fill("#camera-name", "lane")
    page.fill("#camera-source", "/dev/video9")  # no such device: the camera errors, stays listed
    page.check("#camera-scene")
    page.click("#add-camera")
    expect(page.locator("#notice")).to_contain_text("Camera lane added")
    (camera,) = [c for c in api_call(server.base, "/v1/cameras", server.key)
                 if c["name"] == "lane"]
    assert camera["scene"] is True
    page.click("#nav-alerts")
    page.select_option("#events-kind", "plate")
    with page.expect_request(lambda r: "/v1/events?" in r.url and "kind=plate" in r.url):
        page.click("#events-refresh")
