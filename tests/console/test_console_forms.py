"""Console forms once found misleading in console QA: an error of the last try standing while
the browser refuses the next one for another field."""

from __future__ import annotations

import pytest
from console_support import Server, needs_chromium, sign_in
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, needs_chromium]


def test_a_form_the_browser_refuses_takes_the_last_error_down(page: Page,
                                                              server: Server) -> None:
    sign_in(page, server)
    page.click("#nav-cameras")
    form = page.locator("#add-camera-form")
    form.get_by_label("Name").fill("gate")
    form.get_by_label("Source").fill("../../etc/passwd")
    page.click("#add-camera")
    alert = page.get_by_test_id("alert")
    expect(alert).to_contain_text("a camera source is rtsp://")
    form.get_by_label("Source").fill("rtsp://192.0.2.1/stream")  # now right,
    form.get_by_label("Frames per second").fill("0.05")  # but below the field's minimum
    page.click("#add-camera")
    assert form.get_by_label("Frames per second").evaluate("f => !f.validity.valid")
    expect(alert).to_be_hidden()


def test_every_form_is_named_for_a_screen_reader(page: Page, server: Server) -> None:
    """A form has the role "form" (a landmark a screen reader lists and jumps to) only when it
    is named: each one shown is."""

    def all_named(section: str) -> None:
        shown = page.locator(f"{section} form:visible")
        expect(shown.first).to_be_visible()
        assert page.locator(section).get_by_role("form").count() == shown.count(), section

    page.goto(server.base + "/")
    all_named("#page-signin")
    sign_in(page, server)
    for name in ("galleries", "try", "cameras", "alerts", "street", "admin"):
        page.click(f"#nav-{name}")
        all_named(f"#page-{name}")
