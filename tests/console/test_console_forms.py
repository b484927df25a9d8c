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
