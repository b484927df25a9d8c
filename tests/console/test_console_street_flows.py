"""Street page flows once found broken in console QA: the counts' 15-second redraw after
leaving the page while it loads, or coming back to it before the first load answered.

The page's clock is Playwright's: the redraws are counted by moving it on, not by waiting."""

from __future__ import annotations

import pytest
from console_support import Server, needs_chromium, sign_in
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, needs_chromium]

REFRESH_MS = 15_000  # street.js: the counts' redraw

# The console's requests, seen from the page: `window.cameraLists` counts the camera lists
# (each counts redraw starts with one); while `window.holdPlates` is set, the hotlist requests
# wait until `window.releasePlates()` (the page is still loading).
WATCH_REQUESTS = """
window.cameraLists = 0;
let heldPlates = [];
window.heldPlates = () => heldPlates.length;
window.releasePlates = () => { heldPlates.forEach((go) => go()); heldPlates = []; };
const fetchNow = window.fetch;
window.fetch = async (url, options) => {
  const path = String(url);
  if (path.endsWith("/v1/cameras")) window.cameraLists += 1;
  if (window.holdPlates && path.endsWith("/v1/hotlists/plates")) {
    await new Promise((go) => heldPlates.push(go));
  }
  return fetchNow(url, options);
};
"""


def _open_street_held(page: Page, server: Server) -> None:
    """Signed in, the Street page opened with its hotlist request held."""
    page.clock.install()
    page.add_init_script(WATCH_REQUESTS)
    sign_in(page, server)
    expect(page.locator("#nav")).to_be_visible()
    page.evaluate("window.holdPlates = true")
    page.click("#nav-street")
    page.wait_for_function("window.heldPlates() === 1")


def _street_loaded(page: Page) -> None:
    """Every load of the Street page has answered (it may be hidden)."""
    page.evaluate("window.holdPlates = false; window.releasePlates()")
    for testid in ("counts-empty", "plates-empty", "rules-empty"):
        expect(page.get_by_test_id(testid)).to_be_attached()


def _redraws_in(page: Page, ms: int) -> int:
    """How many counts redraws start while the (paused) clock moves on `ms`."""
    before: int = page.evaluate("window.cameraLists")
    page.clock.run_for(ms)
    after: int = page.evaluate("window.cameraLists")
    return after - before


def _pause_clock(page: Page) -> None:
    page.clock.pause_at(page.evaluate("Date.now()") + 1)


def test_leaving_the_street_page_while_it_loads_stops_the_counts_redraw(
        page: Page, server: Server) -> None:
    _open_street_held(page, server)
    page.click("#nav-admin")  # before the Street page has loaded
    expect(page.locator("#page-admin")).to_be_visible()
    _street_loaded(page)
    _pause_clock(page)
    assert _redraws_in(page, 4 * REFRESH_MS) == 0


def test_coming_back_to_the_street_page_runs_one_counts_redraw(
        page: Page, server: Server) -> None:
    _open_street_held(page, server)
    page.click("#nav-admin")
    page.click("#nav-street")  # back before the first visit's load answered
    page.wait_for_function("window.heldPlates() === 2")
    _street_loaded(page)
    expect(page.locator("#page-street")).to_be_visible()
    _pause_clock(page)
    assert _redraws_in(page, REFRESH_MS) == 1
