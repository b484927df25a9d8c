"""Street page flows once found broken in console QA: the counts' 15-second redraw after
leaving the page while it loads, or coming back to it before the first load answered.

The page's clock is Playwright's: the redraws are counted by moving it on, not by waiting."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from console_support import Server, accept_next_dialog, api_call, needs_chromium, sign_in
from playwright.sync_api import Page, Route, expect

pytestmark = [pytest.mark.slow, needs_chromium]

REFRESH_MS = 15_000  # street.js: the counts' redraw

# The console's requests, seen from the page: `window.cameraLists` counts the camera lists
# (each counts redraw starts with one); while `window.holdStreet` is set, the Street page's
# loads (cameras, plates, rules) wait until `window.release(n)` lets the first n held go, and
# `window.heldRead` counts those the console has read since (what it does next, it does at once).
WATCH_REQUESTS = """
window.cameraLists = 0;
window.heldRead = 0;
const held = [];
window.held = () => held.length;
window.release = (n) => held.splice(0, n).forEach((go) => go());
const fetchNow = window.fetch;
window.fetch = async (url, options) => {
  const path = String(url);
  if (path.endsWith("/v1/cameras")) window.cameraLists += 1;
  if (!(window.holdStreet && /[/]v1[/](cameras|hotlists[/]plates|rules)$/.test(path))) {
    return fetchNow(url, options);
  }
  await new Promise((go) => held.push(go));
  const response = await fetchNow(url, options);
  const read = response.json.bind(response);
  response.json = async () => {
    const body = await read();
    window.heldRead += 1;
    return body;
  };
  return response;
};
"""


def _days_ahead(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def _open_street_held(page: Page, server: Server) -> None:
    """Signed in, the Street page opened with its three loads held."""
    page.clock.install()
    page.add_init_script(WATCH_REQUESTS)
    sign_in(page, server)
    expect(page.locator("#nav")).to_be_visible()
    page.evaluate("window.holdStreet = true")
    page.click("#nav-street")
    page.wait_for_function("() => window.held() === 3")


def _visit_loaded(page: Page) -> None:
    """The oldest held visit of the Street page answered, and the console read its answers."""
    done = page.evaluate("window.heldRead") + 3
    page.evaluate("window.release(3)")
    page.wait_for_function("n => window.heldRead === n", arg=done)


def _redraws_in(page: Page, ms: int) -> int:
    """How many counts redraws start while the (paused) clock moves on `ms`."""
    before: int = page.evaluate("window.cameraLists")
    page.clock.run_for(ms)
    after: int = page.evaluate("window.cameraLists")
    return after - before


def _pause_clock(page: Page) -> None:
    """The page's clock stops (a millisecond on): from now on only run_for moves it."""
    page.clock.pause_at((page.evaluate("Date.now()") + 1) / 1000)  # Playwright takes seconds


def test_leaving_the_street_page_while_it_loads_stops_the_counts_redraw(
        page: Page, server: Server) -> None:
    _open_street_held(page, server)
    page.click("#nav-admin")  # before the Street page has loaded
    expect(page.locator("#page-admin")).to_be_visible()
    _visit_loaded(page)
    _pause_clock(page)
    assert _redraws_in(page, 4 * REFRESH_MS) == 0


def test_coming_back_to_the_street_page_runs_one_counts_redraw(
        page: Page, server: Server) -> None:
    _open_street_held(page, server)
    page.click("#nav-admin")
    page.click("#nav-street")  # back before the first visit's load answered
    page.wait_for_function("() => window.held() === 6")
    page.evaluate("window.holdStreet = false")
    _visit_loaded(page)  # the first visit's loads answer first
    _visit_loaded(page)
    expect(page.locator("#page-street")).to_be_visible()
    _pause_clock(page)
    assert _redraws_in(page, REFRESH_MS) == 1


def test_a_failed_counts_redraw_is_said_and_taken_back_when_the_service_answers(
        page: Page, server: Server) -> None:
    page.clock.install()
    sign_in(page, server)
    page.click("#nav-street")
    expect(page.get_by_test_id("counts-empty")).to_be_visible()
    _pause_clock(page)
    list_cameras = re.compile(r".*/v1/cameras$")

    def unreachable(route: Route) -> None:
        route.abort()

    page.route(list_cameras, unreachable)
    page.clock.run_for(REFRESH_MS)
    alert = page.get_by_test_id("alert")
    expect(alert).to_contain_text("cannot reach the service")
    page.unroute(list_cameras, unreachable)
    page.clock.run_for(REFRESH_MS)  # the redraw goes on after a failure
    expect(alert).to_be_hidden()


def test_deleting_a_plate_deleted_elsewhere_takes_its_stale_row_away(
        page: Page, server: Server) -> None:
    plate = api_call(server.base, "/v1/hotlists/plates", server.key, {
        "plate": "GONE123", "reason": "stolen, case 9", "expires_at": _days_ahead(7)})
    sign_in(page, server)
    page.click("#nav-street")
    row = page.get_by_test_id(f"plate-{plate['id']}")
    expect(row).to_be_visible()
    api_call(server.base, f"/v1/hotlists/plates/{plate['id']}", server.key, method="DELETE")
    accept_next_dialog(page)
    page.get_by_test_id(f"plate-delete-{plate['id']}").click()
    expect(page.get_by_test_id("notice")).to_have_text("Plate GONE123 deleted already.")
    expect(row).to_have_count(0)
    expect(page.get_by_test_id("alert")).to_be_hidden()


def test_street_forms_are_named_for_a_screen_reader(page: Page, server: Server) -> None:
    """Both forms ask for a "Reason" and an expiry: each form is named, and says its limit."""
    sign_in(page, server)
    page.click("#nav-street")
    for form, fields in (("Add a plate", ("Plate", "Reason", "Expires (≤ 365 days)")),
                         ("Add a rule", ("Description", "Reason", "Cameras", "Active from",
                                         "Active until", "Expires (≤ 30 days)"))):
        named = page.get_by_role("form", name=form)
        for field in fields:
            expect(named.get_by_label(field, exact=True)).to_be_visible()


def test_cameras_page_shows_and_switches_the_street_layer(page: Page, server: Server) -> None:
    api_call(server.base, "/v1/cameras", server.key, {"name": "lane-3", "source": "/dev/video9"})
    sign_in(page, server)
    page.click("#nav-cameras")
    street = page.get_by_role("checkbox", name="Street layer of lane-3")
    expect(street).not_to_be_checked()
    street.check()
    expect(page.get_by_test_id("notice")).to_have_text(
        "Camera lane-3: street layer on (see the Street page).")
    (camera,) = [c for c in api_call(server.base, "/v1/cameras", server.key)
                 if c["name"] == "lane-3"]
    assert camera["scene"] is True
    page.click("#nav-street")
    expect(page.get_by_test_id("counts-chart-lane-3")).to_be_visible()

    viewer = server.new_key("cameras-viewer", "events")
    page.click("#signout")
    sign_in(page, server, viewer["key"])
    page.click("#nav-cameras")
    expect(page.get_by_test_id("camera-street-lane-3")).to_have_text("on")
    expect(page.get_by_role("checkbox", name="Street layer of lane-3")).to_have_count(0)
    api_call(server.base, "/v1/cameras/lane-3", server.key, method="DELETE")


def test_deleting_with_the_keyboard_keeps_the_focus_in_the_list(page: Page,
                                                                server: Server) -> None:
    plates = [api_call(server.base, "/v1/hotlists/plates", server.key, {
        "plate": text, "reason": "stolen, case 11", "expires_at": _days_ahead(3)})
        for text in ("KEY111", "KEY222")]
    sign_in(page, server)
    page.click("#nav-street")
    first, second = (page.get_by_role("button", name=f"Delete plate {p['plate']}")
                     for p in plates)
    first.focus()
    accept_next_dialog(page)
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("notice")).to_have_text("Plate KEY111 deleted.")
    expect(second).to_be_focused()  # the next row's Delete, now in its place
    accept_next_dialog(page)
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("notice")).to_have_text("Plate KEY222 deleted.")
    expect(page.get_by_role("form", name="Add a plate").get_by_label("Plate")).to_be_focused()


# While `window.holdMinutes` is set, per-minute counts wait for `window.releaseMinutes()`;
# `window.minutesRead` is set once the console has read such an answer.
HELD_MINUTES = """
let heldMinutes = [];
window.releaseMinutes = () => { heldMinutes.forEach((go) => go()); heldMinutes = []; };
window.heldMinutes = () => heldMinutes.length;
const fetchNow = window.fetch;
window.fetch = async (url, options) => {
  const held = window.holdMinutes && String(url).includes("bucket=minute");
  if (held) await new Promise((go) => heldMinutes.push(go));
  const response = await fetchNow(url, options);
  if (held) {
    const read = response.json.bind(response);
    response.json = async () => {
      const body = await read();
      window.minutesRead = true;
      return body;
    };
  }
  return response;
};
"""


def test_counts_chart_shows_the_window_chosen_last(page: Page, server: Server) -> None:
    api_call(server.base, "/v1/cameras", server.key,
             {"name": "kerb-2", "source": "/dev/video9", "scene": True})
    page.add_init_script(HELD_MINUTES)
    sign_in(page, server)
    page.click("#nav-street")
    chart = page.get_by_test_id("counts-chart-kerb-2")
    expect(chart).to_have_attribute("aria-label", "Tracks per minute on kerb-2")
    page.evaluate("window.holdMinutes = true")
    page.select_option("#counts-window", "hour")  # the last hour again: its answer is held
    page.wait_for_function("() => window.heldMinutes() === 1")
    page.select_option("#counts-window", "week")
    expect(chart).to_have_attribute("aria-label", "Tracks per hour on kerb-2")
    page.evaluate("window.releaseMinutes()")  # the hour's answer comes last
    page.wait_for_function("() => window.minutesRead === true")
    # read once (no retry): the next 15-s redraw would draw the week anyway
    assert chart.get_attribute("aria-label") == "Tracks per hour on kerb-2"
    assert page.input_value("#counts-window") == "week"
    api_call(server.base, "/v1/cameras/kerb-2", server.key, method="DELETE")


def test_a_rule_naming_no_street_camera_says_so(page: Page, server: Server) -> None:
    api_call(server.base, "/v1/cameras", server.key,
             {"name": "gate-5", "source": "/dev/video9", "scene": True})
    api_call(server.base, "/v1/cameras", server.key, {"name": "door-5", "source": "/dev/video9"})
    sign_in(page, server)
    page.click("#nav-street")
    form = page.get_by_role("form", name="Add a rule")
    form.get_by_label("Description").fill("red car")
    form.get_by_label("Reason").fill("robbery, case 4")
    form.get_by_label("Cameras").fill("gate-5, door-5, gate-6")  # a typo, and no street layer
    form.get_by_label("Expires (≤ 30 days)").fill(
        (datetime.now() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"))
    page.click("#rule-add")
    expect(page.get_by_test_id("notice")).to_contain_text(
        "No camera with the street layer on is named door-5, gate-6 (yet).")
    for name in ("gate-5", "door-5"):
        api_call(server.base, f"/v1/cameras/{name}", server.key, method="DELETE")
