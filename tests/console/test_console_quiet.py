"""Every page of the console loads without an error or warning in the browser's console: one
logged on every load teaches operators to ignore the ones that matter."""

from __future__ import annotations

from typing import Any

import pytest
from console_support import Server, needs_chromium, sign_in
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, needs_chromium]

PAGES = ("galleries", "try", "liveness", "cameras", "alerts", "street", "admin")


def test_every_page_loads_without_a_console_message(page: Page, server: Server) -> None:
    # QA: each load logged "Failed to load resource: 404" (the browser's /favicon.ico).
    logged: list[str] = []

    def note(message: Any) -> None:
        if message.type in ("error", "warning"):
            logged.append(f"{message.type}: {message.text} {message.location.get('url')}")

    page.on("console", note)
    sign_in(page, server)
    for name in PAGES:
        page.goto(f"{server.base}/console/#/{name}")
        expect(page.locator(f"#page-{name}")).to_be_visible()
    page.reload()  # a fresh load asks for the icon again
    expect(page.locator("#page-admin")).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert not logged, logged
