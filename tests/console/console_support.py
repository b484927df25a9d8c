"""What the console tests share: a real `facelens serve` on a free port with an admin key,
Debian's chromium (Playwright never downloads a browser) and a signed-in page."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent: the console tests drive Debian's "
    "chromium (apt-get install chromium); Playwright never downloads a browser")

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 60
TIMEOUT_MS = 60_000  # the first inference loads the models: slow on a small machine
VIDEO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "video"
CLIP = VIDEO / "short_hamilton_clip.mp4"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_call(base: str, path: str, key: str, body: dict[str, Any] | None = None,
          method: str | None = None) -> Any:
    """A JSON call to the API outside the browser (test setup and cross-checks)."""
    data = json.dumps(body).encode() if body is not None else None
    method = method or ("POST" if data else "GET")
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


class Server:
    def __init__(self, base: str, key: str, env: dict[str, str]) -> None:
        self.base, self.key, self.env = base, key, env

    def new_key(self, name: str, *scopes: str) -> dict[str, Any]:
        """{"id", "name", "scopes", "key"}"""
        made: dict[str, Any] = api_call(self.base, "/v1/keys", self.key,
                                     {"name": name, "scopes": list(scopes)})
        return made


@contextmanager
def serve(data: Path, prepare: list[str] | None = None, *, media_dir: Path | None = None
          ) -> Iterator[Server]:
    """`facelens serve` on a free port with the data dir `data`, and an admin key for it.

    `prepare`: a command run on the data dir first (e.g. galleries enrolled with the library).
    `media_dir`: the folder whose video files cameras may read.
    """
    env = {**os.environ, "FACELENS_DATA_DIR": str(data)}
    if media_dir is not None:
        env["FACELENS_MEDIA_DIR"] = str(media_dir)
    made = subprocess.run([str(BIN / "facelens"), "keys", "create", "console-test",
                           "--scope", "admin", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, f"keys create failed:\n{made.stdout}\n{made.stderr}"
    key = json.loads(made.stdout)["key"]
    if prepare:
        done = subprocess.run(prepare, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"preparing the data dir failed:\n{done.stderr}"

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = data / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(BIN / "facelens"), "serve", "--host", "127.0.0.1",
                                 "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"facelens serve exited with {proc.returncode}:\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}")
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"facelens serve not ready after {READY_TIMEOUT_S} s:\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.25)
        yield Server(base, key, env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@contextmanager
def launch_chromium(pw: Any, *extra_args: str) -> Iterator[Any]:
    # The two fake-media flags give getUserMedia a synthetic camera (a test pattern, no
    # face, unless a file is given with --use-file-for-fake-video-capture) and grant it
    # without a prompt, so "Use webcam" can be clicked through.
    chromium = pw.chromium.launch(
        executable_path=str(CHROMIUM),
        args=["--headless", "--no-sandbox", "--disable-background-networking",
              "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              *extra_args])
    try:
        yield chromium
    finally:
        chromium.close()


@contextmanager
def open_page(browser: Any) -> Iterator[Page]:
    """A fresh browser context: its own sessionStorage, so nobody is signed in."""
    # East of UTC, so an expiry day (stored as its end in UTC) would show as the next day
    # if the console formatted it in local time.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US",
                                  timezone_id="Asia/Tokyo")
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"uncaught errors in the console: {errors}"


def sign_in(page: Page, server: Server, key: str | None = None) -> None:
    page.goto(server.base + "/")  # redirects to /console/
    expect(page.locator("#page-signin")).to_be_visible()
    page.fill("#api-key", key or server.key)
    page.click("#signin-button")



def accept_next_dialog(page: Page) -> list[str]:
    """Accept the page's next dialog (a confirm()); the list returned gets its message."""
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    return dialogs


# Alerts come from cameras, not from the API: tests record them with the library in a separate
# process on the server's data directory, as a camera worker would.
_RECORD_ALERT = """
import sys
from facelens.events.store import EventStore
from facelens.gallery.service import ConsentRecord, Galleries
from facelens.settings import get_settings
from facelens.store.database import Store

photo, gallery, name, camera = sys.argv[1:]
settings = get_settings()
store = Store(settings)
galleries = Galleries(settings, store)
if not any(g.name == gallery for g, _ in galleries.list_galleries()):
    galleries.create_gallery(gallery, "staff-door")
    galleries.enroll(gallery, name, [photo], consent=ConsentRecord(
        purpose="console test", legal_basis="consent", recorded_by="console test"))
(subject,) = galleries.subjects(gallery)
with open(photo, "rb") as f:
    print(EventStore(store).record(camera, subject.id, "high", snapshot_jpeg=f.read()).id)
"""


def record_alert(server: Server, photo: Path, camera: str, *, gallery: str, name: str) -> int:
    """An alert about `name` (enrolled from `photo` into `gallery` on first use) on `camera`;
    returns its event id."""
    made = subprocess.run([sys.executable, "-c", _RECORD_ALERT, str(photo), gallery, name, camera],
                          env=server.env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    return int(made.stdout.strip().splitlines()[-1])
