"""Fixtures of the console tests: a server per test module, one chromium per module, a
fresh page per test, and out/console/ for the screenshots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import Server, launch_chromium, open_page, serve
from playwright.sync_api import Page, sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, isolated_env: Path) -> Iterator[Server]:
    """The module's server: a fresh data dir, nothing in it but the admin key."""
    with serve(tmp_path_factory.mktemp("console-data")) as running:
        yield running


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    """One Playwright driver for the module (a second browser launches from it too)."""
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(pw: Any) -> Iterator[Any]:
    with launch_chromium(pw) as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    """A fresh browser context per test on the synthetic camera."""
    with open_page(browser) as opened:
        yield opened


@pytest.fixture(scope="module")
def shots(repo_root: Path) -> Path:
    out = repo_root / "out" / "console"
    out.mkdir(parents=True, exist_ok=True)
    return out

