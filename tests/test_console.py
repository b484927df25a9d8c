"""The web console in a real browser against a real `facelens serve`.

Playwright drives Debian's chromium (/usr/bin/chromium; Playwright never downloads a browser)
through the console at /console/: sign in, create a gallery, enrol from a photo and a webcam
frame (chromium's fake camera), identify and verify on "Try it", delete, sign out; alerts
reviewed; a camera on the Hamilton clip (../shared/data/video) added, previewed live, its
alerts (snapshot and blurred frame) listed, disabled, reassigned, enabled and removed.
Screenshots of each page go to out/console/.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent: the console tests drive Debian's chromium "
                "(apt-get install chromium); Playwright never downloads a browser",
                allow_module_level=True)

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 60
TIMEOUT_MS = 60_000  # the first inference loads the models: slow on a small machine
KNOWN_GREEN = (0x1A, 0x7F, 0x37)  # draw.js COLOURS.known


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(base: str, path: str, key: str, body: dict[str, Any] | None = None,
          method: str | None = None) -> Any:
    """A JSON call to the API outside the browser (test setup and cross-checks)."""
    data = json.dumps(body).encode() if body is not None else None
    method = method or ("POST" if data else "GET")
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


# Events come from cameras, not from the API: the test records them with the library, in a
# separate process on the server's data directory (as a camera worker would).
RECORD_EVENTS = """
import json, sys
from datetime import UTC, datetime, timedelta
from facelens.events.store import EventStore
from facelens.gallery.service import ConsentRecord, Galleries

galleries = Galleries()
galleries.create_gallery("watch", "watchlist-console-test")
consent = ConsentRecord(purpose="console test", legal_basis="legitimate-interest",
                        recorded_by="console test")
report = galleries.enroll("watch", "biden", [sys.argv[1]], consent=consent,
                          watch_reason="console test",
                          watch_expires=datetime.now(UTC) + timedelta(days=30))
events = EventStore(galleries)
with open(sys.argv[1], "rb") as f:
    seen = events.record("front-door", report.subject_id, "high", snapshot_jpeg=f.read())
other = events.record("loading-bay", report.subject_id, "medium")
print(json.dumps([seen.id, other.id]))
"""


class Server:
    def __init__(self, base: str, key: str, env: dict[str, str]) -> None:
        self.base, self.key, self.env = base, key, env

    def new_key(self, name: str, *scopes: str) -> dict[str, Any]:
        """{"id", "name", "scopes", "key"}"""
        made: dict[str, Any] = _call(self.base, "/v1/keys", self.key,
                                     {"name": name, "scopes": list(scopes)})
        return made


@contextmanager
def _serve(data: Path, prepare: list[str] | None = None) -> Iterator[Server]:
    """`facelens serve` on a free port with the data dir `data`, and an admin key for it.

    `prepare`: a command run on the data dir first (e.g. galleries enrolled with the library).
    """
    env = {**os.environ, "FACELENS_DATA_DIR": str(data)}
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, isolated_env: Path) -> Iterator[Server]:
    """The module's server: a fresh data dir, nothing in it but the admin key."""
    with _serve(tmp_path_factory.mktemp("console-data")) as running:
        yield running


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    """One Playwright driver for the module (a second browser launches from it too)."""
    with sync_playwright() as p:
        yield p


@contextmanager
def _chromium(pw: Any, *extra_args: str) -> Iterator[Any]:
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


@pytest.fixture(scope="module")
def browser(pw: Any) -> Iterator[Any]:
    with _chromium(pw) as chromium:
        yield chromium


@contextmanager
def _open_page(browser: Any) -> Iterator[Page]:
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


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    """A fresh browser context per test on the synthetic camera."""
    with _open_page(browser) as opened:
        yield opened


@pytest.fixture(scope="module")
def shots(repo_root: Path) -> Path:
    out = repo_root / "out" / "console"
    out.mkdir(parents=True, exist_ok=True)
    return out


def sign_in(page: Page, server: Server, key: str | None = None) -> None:
    page.goto(server.base + "/")  # redirects to /console/
    expect(page.locator("#page-signin")).to_be_visible()
    page.fill("#api-key", key or server.key)
    page.click("#signin-button")


def test_wrong_key_shows_the_api_error(page: Page, server: Server, shots: Path) -> None:
    sign_in(page, server, key="fl_not-a-real-key")
    alert = page.get_by_test_id("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("unknown or revoked API key")  # the body's error.message
    expect(page.locator("#page-signin")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    page.screenshot(path=shots / "signin-error.png", full_page=True)


def test_enrol_identify_verify_delete(page: Page, server: Server, fixtures_dir: Path,
                                      shots: Path) -> None:
    from PIL import Image, ImageOps

    # Sign in: the header shows the key's name and scopes; the key stays in this tab.
    page.goto(server.base + "/console/")
    page.screenshot(path=shots / "signin.png", full_page=True)
    sign_in(page, server)
    expect(page.get_by_test_id("whoami")).to_have_text("console-test · admin")
    assert page.evaluate("Object.values(sessionStorage)") == [server.key]
    page.reload()  # still signed in: the key is checked again with /v1/me
    expect(page.get_by_test_id("whoami")).to_have_text("console-test · admin")
    expect(page).to_have_url(server.base + "/console/#/galleries")
    expect(page.locator("#galleries-table tbody tr")).not_to_have_count(0)  # loaded
    expect(page.get_by_test_id("gallery-door")).to_have_count(0)

    # Create gallery "door"; a second create is a conflict, shown from the error body.
    page.fill("#gallery-name", "door")
    page.fill("#gallery-purpose", "staff-door")
    page.click("#create-gallery")
    row = page.get_by_test_id("gallery-door")
    expect(row).to_contain_text("staff-door")
    expect(row.locator("td").nth(3)).to_have_text("0")
    expect(page.get_by_test_id("notice")).to_have_text("Gallery door created.")
    page.fill("#gallery-name", "door")
    page.fill("#gallery-purpose", "staff-door")
    page.click("#create-gallery")
    expect(page.get_by_test_id("alert")).to_contain_text("door")
    page.screenshot(path=shots / "galleries.png", full_page=True)

    # Open it and enrol obama from obama.jpg plus one webcam frame (no face: skipped).
    row.get_by_role("link", name="door").click()
    expect(page.get_by_test_id("gallery-title")).to_have_text("Gallery door")
    expect(page.get_by_test_id("subjects-empty")).to_be_visible()
    expires = date.today() + timedelta(days=365)
    enrol = page.locator("#enrol-form")
    enrol.get_by_label("Name", exact=True).fill("obama")
    enrol.get_by_label("Legal basis").select_option("consent")
    enrol.get_by_label("Consent purpose").fill("door access")
    enrol.get_by_label("Recorded by").fill("console test")
    enrol.get_by_label("Consent expires (optional)").fill(expires.isoformat())
    page.set_input_files("#enrol-images", fixtures_dir / "obama.jpg")
    page.click("#webcam-start")
    expect(page.locator("#webcam-video")).to_be_visible()
    page.wait_for_function("document.querySelector('#webcam-video').videoWidth > 0")
    page.click("#webcam-capture")
    expect(page.locator("#enrol-captures li")).to_have_count(1)
    page.screenshot(path=shots / "enrol-form.png", full_page=True)
    page.click("#enrol-submit")
    result = page.get_by_test_id("enrol-result")
    expect(result).to_contain_text("Enrolled obama with 1 template; 1 image skipped:")
    expect(page.get_by_test_id("enrol-skipped")).to_contain_text("webcam-1.jpg: no face")
    subject = page.locator("#subjects-table tbody tr[data-name='obama']")
    expect(subject).to_have_count(1)
    cells = subject.locator("td")
    expect(cells.nth(0)).to_have_text("obama")
    expect(cells.nth(1)).to_have_text("1")
    expect(cells.nth(2)).to_have_text("consent")
    expect(cells.nth(3)).to_have_text(f"{expires.month}/{expires.day}/{expires.year}")
    expect(cells.nth(4)).to_have_text("—")  # not a watchlist
    expect(page.locator("#webcam-video")).to_be_hidden()  # the camera is off after enrolment
    page.screenshot(path=shots / "gallery.png", full_page=True)

    # Try it: another photo of the same person, identified in "door" and verified.
    page.click("#nav-try")
    try_form = page.locator("#try-form")
    try_form.get_by_label("Identify in gallery (optional)").select_option("door")
    page.set_input_files("#try-image", fixtures_dir / "obama2.jpg")
    page.set_input_files("#try-image-b", fixtures_dir / "obama.jpg")
    expect(try_form.get_by_label("Estimate age and sex")).to_be_checked()
    page.click("#try-submit")
    expect(page.get_by_test_id("try-result")).to_be_visible()
    expect(page.get_by_test_id("identity-0")).to_have_text(
        re.compile(r"^obama \((high|medium|low)\)$"))
    face_row = page.get_by_test_id("face-0")
    age_sex = face_row.locator("td").nth(3)
    expect(age_sex).to_have_text(re.compile(r"^\d+( ±\d+)? / \S+$"))
    expect(page.locator("#try-faces tbody tr")).to_have_count(1)
    expect(page.get_by_test_id("try-verify")).to_contain_text("Verify: same person")
    expect(page.get_by_test_id("alert")).to_be_hidden()

    # The canvas is at the photo's natural size and a known face's box is drawn in green
    # where the API put it.
    with Image.open(fixtures_dir / "obama2.jpg") as img:
        natural = ImageOps.exif_transpose(img).size
    size = page.eval_on_selector("#try-canvas", "c => [c.width, c.height]")
    assert tuple(size) == natural
    # The table rounds the box: one of the two pixels at the left edge is wholly under the
    # stroke (at least 2 px wide), whichever way the rounding went.
    x1, y1, _x2, y2 = (int(v) for v in face_row.locator("td").nth(1).inner_text().split())
    pixels = page.eval_on_selector(
        "#try-canvas", "(c, [x, y]) => Array.from(c.getContext('2d')"
                       ".getImageData(x - 1, y, 2, 1).data)", [x1, (y1 + y2) // 2])
    distance = min(max(abs(a - b) for a, b in zip(pixels[i:i + 3], KNOWN_GREEN, strict=True))
                   for i in (0, 4))
    assert distance <= 40, pixels
    page.screenshot(path=shots / "try.png", full_page=True)

    # Back to the gallery: delete obama (after a confirm() dialog); the table empties.
    page.click("#nav-galleries")
    expect(page.get_by_test_id("gallery-door").locator("td").nth(3)).to_have_text("1")
    page.get_by_role("link", name="door").click()
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_test_id("delete-obama").click()
    expect(page.get_by_test_id("subjects-empty")).to_be_visible()
    expect(page.locator("#subjects-table tbody tr[data-name='obama']")).to_have_count(0)
    assert len(dialogs) == 1 and "obama" in dialogs[0]
    expect(page.get_by_test_id("notice")).to_have_text("obama deleted.")
    assert _call(server.base, "/v1/galleries/door/subjects", server.key) == []
    page.screenshot(path=shots / "gallery-empty.png", full_page=True)

    # Sign out: back to the sign-in page, the key gone from the tab.
    page.click("#signout")
    expect(page.locator("#page-signin")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_forbidden_then_revoked_key(page: Page, server: Server) -> None:
    made = server.new_key("console-enrol-only", "enrol")
    sign_in(page, server, key=made["key"])
    expect(page.get_by_test_id("whoami")).to_have_text("console-enrol-only · enrol")
    page.fill("#gallery-name", "not-allowed")
    page.fill("#gallery-purpose", "staff-door")
    page.click("#create-gallery")
    expect(page.get_by_test_id("alert")).to_have_text("this key lacks the admin scope")
    expect(page.get_by_test_id("gallery-not-allowed")).to_have_count(0)

    # Revoked while signed in: the next call answers 401 and the console signs out.
    _call(server.base, f"/v1/keys/{made['id']}", server.key, method="DELETE")
    page.click("#nav-try")
    expect(page.locator("#page-signin")).to_be_visible()
    expect(page.get_by_test_id("alert")).to_have_text("unknown or revoked API key")
    expect(page.locator("#nav")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_alerts_confirm_dismiss_and_filter(page: Page, server: Server, fixtures_dir: Path,
                                           shots: Path) -> None:
    made = subprocess.run([sys.executable, "-c", RECORD_EVENTS, str(fixtures_dir / "biden.jpg")],
                          env=server.env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    seen, other = json.loads(made.stdout.strip().splitlines()[-1])

    sign_in(page, server)
    page.click("#nav-alerts")
    row = page.get_by_test_id(f"event-{seen}")
    expect(row).to_contain_text("front-door")
    expect(row).to_contain_text("biden")
    expect(row).to_contain_text("high")
    expect(page.get_by_test_id(f"event-status-{seen}")).to_have_text("unconfirmed")
    expect(page.get_by_test_id(f"event-{other}")).to_contain_text("loading-bay")
    expect(page.get_by_test_id(f"event-{other}")).to_contain_text("none")  # no snapshot

    # The snapshot was fetched with the key and shows through an object URL.
    snapshot = page.get_by_test_id(f"event-snapshot-{seen}")
    expect(snapshot).to_be_visible()
    assert snapshot.get_attribute("src").startswith("blob:")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=snapshot.element_handle())
    page.screenshot(path=shots / "alerts.png", full_page=True)

    # Confirm one, dismiss the other: the rows change in place and the API agrees.
    page.get_by_test_id(f"event-confirm-{seen}").click()
    expect(page.get_by_test_id(f"event-status-{seen}")).to_have_text("confirmed")
    expect(page.get_by_test_id(f"event-confirm-{seen}")).to_be_disabled()
    expect(page.get_by_test_id(f"event-dismiss-{seen}")).to_be_enabled()
    page.get_by_test_id(f"event-dismiss-{other}").click()
    expect(page.get_by_test_id(f"event-status-{other}")).to_have_text("dismissed")
    expect(page.get_by_test_id(f"event-dismiss-{other}")).to_be_disabled()
    statuses = {e["id"]: e["status"] for e in _call(server.base, "/v1/events", server.key)}
    assert statuses == {seen: "confirmed", other: "dismissed"}
    expect(page.get_by_test_id("alert")).to_be_hidden()
    page.screenshot(path=shots / "alerts-reviewed.png", full_page=True)

    # The status filter asks the API again.
    page.select_option("#events-status", "confirmed")
    expect(page.get_by_test_id(f"event-{other}")).to_have_count(0)
    expect(page.get_by_test_id(f"event-{seen}")).to_be_visible()
    page.select_option("#events-status", "unconfirmed")
    expect(page.get_by_test_id("events-empty")).to_have_text("No unconfirmed events.")


# ---------------------------------------------------------------------------- cameras
VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "video"
CLIP = VIDEO / "short_hamilton_clip.mp4"
STAGE_CAST = ("lin-manuel-miranda", "alex-lacamoire")

# The camera test's data dir, before its server starts: a watchlist of the two people in the
# clip, a second (empty) gallery to reassign the camera to, and one "suppressed" event (a face
# flagged as a poster on another camera) with a snapshot and a frame.
PREPARE_CAMERAS = """
import io, json, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from PIL import Image
from facelens.events.store import EventStore
from facelens.gallery.service import ConsentRecord, Galleries

video = Path(sys.argv[1])
galleries = Galleries()
galleries.create_gallery("watch", "watchlist-stage")
galleries.create_gallery("door-staff", "staff-door")
consent = ConsentRecord(purpose="console camera test", legal_basis="consent",
                        recorded_by="console test")
ids = {}
for name in sys.argv[2:]:
    report = galleries.enroll("watch", name, [str(video / f"{name}.png")], consent=consent,
                              watch_reason="console camera test",
                              watch_expires=datetime.now(UTC) + timedelta(days=30))
    assert report.templates == 1, report
    ids[name] = report.subject_id
jpeg = io.BytesIO()
Image.open(video / f"{sys.argv[-1]}.png").convert("RGB").save(jpeg, "JPEG")
poster = EventStore(galleries).record("lobby-screen", ids[sys.argv[-1]], "medium",
                                      snapshot_jpeg=jpeg.getvalue(), frame_jpeg=jpeg.getvalue(),
                                      status="suppressed", flagged=True)
print(json.dumps({"poster": poster.id}))
"""


@pytest.fixture
def camera_server(tmp_path_factory: pytest.TempPathFactory, isolated_env: Path
                  ) -> Iterator[Server]:
    """A server of its own (its cameras' events and CPU stay out of the other tests)."""
    needed = [CLIP, *(VIDEO / f"{name}.png" for name in STAGE_CAST)]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        pytest.skip(f"the camera test needs ../shared/data/video (the team's checkout): "
                    f"{', '.join(missing)} absent")
    prepare = [sys.executable, "-c", PREPARE_CAMERAS, str(VIDEO), *STAGE_CAST]
    with _serve(tmp_path_factory.mktemp("console-cameras"), prepare) as running:
        yield running


def _tokyo(at: str) -> re.Pattern[str]:
    """The console's rendering of an API moment in the test's time zone (Asia/Tokyo, en-US).

    The service stores UTC but an event's "at" comes back without an offset (SQLite): the
    console must read it as UTC, not as local time.
    """
    moment = datetime.fromisoformat(at)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(ZoneInfo("Asia/Tokyo"))
    clock = local.strftime("%I:%M:%S").lstrip("0")
    return re.compile(rf"^{local.month}/{local.day}/{local.year}, {clock}\s{local:%p}$")


def _wait_loaded(page: Page, locator: Any, width: int | None = None) -> None:
    """Until the <img> has decoded (at `width` pixels wide, if given)."""
    check = "img.complete && img.naturalWidth > 0" if width is None else \
        f"img.complete && img.naturalWidth === {width}"
    page.wait_for_function(f"img => {check}", arg=locator.element_handle())


def test_cameras_add_preview_alerts_toggle_assign_remove(page: Page, camera_server: Server,
                                                         shots: Path) -> None:
    server = camera_server
    poster = next(e["id"] for e in _call(server.base, "/v1/events", server.key)
                  if e["status"] == "suppressed")
    previews: list[tuple[str, str | None]] = []  # (url, Authorization) of preview fetches
    page.on("request", lambda r: previews.append((r.url, r.headers.get("authorization")))
            if "/preview." in r.url else None)

    sign_in(page, server)
    page.click("#nav-cameras")
    expect(page).to_have_url(server.base + "/console/#/cameras")
    expect(page.get_by_test_id("cameras-empty")).to_have_text("No cameras yet.")
    options = page.locator("#camera-galleries option")
    expect(options).to_have_count(2)
    assert sorted(options.all_inner_texts()) == ["door-staff", "watch"]

    # Add "stage": the clip at 10 fps, watched against "watch"; preview it at once.
    form = page.locator("#add-camera-form")
    form.get_by_label("Name").fill("stage")
    form.get_by_label("Source").fill(str(CLIP))
    form.get_by_label("Galleries").select_option(["watch"])
    form.get_by_label("Frames per second").fill("10")
    page.click("#add-camera")
    row = page.get_by_test_id("camera-stage")
    expect(row).to_be_visible()
    expect(page.get_by_test_id("notice")).to_have_text("Camera stage added.")
    expect(page.get_by_test_id("camera-galleries-stage")).to_have_text("watch")
    expect(page.get_by_test_id("camera-fps-stage")).to_have_text("10")
    expect(row.locator("td.source")).to_have_text(str(CLIP))
    page.get_by_test_id("camera-preview-stage").click()
    expect(page.get_by_test_id("preview-title")).to_have_text("Preview: stage")

    # Frames arrive while the clip runs (640x360, boxes drawn by the service), fetched with
    # the key and shown through object URLs, replaced every ~300 ms.
    img = page.get_by_test_id("preview-img")
    _wait_loaded(page, img, 640)
    assert img.get_attribute("src").startswith("blob:")
    assert previews and all(auth == f"Bearer {server.key}" for _, auth in previews)
    assert all(url.endswith("/v1/cameras/stage/preview.jpg") for url, _ in previews)
    # Both alerts are in the status (refreshed every 2 s, no reload): faces on screen now.
    expect(page.get_by_test_id("camera-alerts-stage")).to_have_text("2", timeout=120_000)
    expect(page.get_by_test_id("preview-state")).to_contain_text("frame fetched at")
    page.screenshot(path=shots / "cameras.png", full_page=True)
    expect(page.get_by_test_id("camera-status-stage")).to_have_text("ended", timeout=120_000)
    _wait_loaded(page, img, 640)  # the last frame stays on show
    expect(page.get_by_test_id("preview-state")).to_contain_text("Camera ended · its last frame")
    frames = int(img.get_attribute("data-frames") or 0)
    assert frames >= 3, frames
    expect(page.get_by_test_id("camera-reconnects-stage")).to_have_text("0")
    (camera,) = _call(server.base, "/v1/cameras", server.key)
    assert camera | {"source": "…"} == {
        "name": "stage", "source": "…", "galleries": ["watch"], "enabled": True, "fps": 10.0,
        "motion": False, "cooldown_s": 60.0, "far": 0.001, "status": "ended", "alerts": 2,
        "reconnects": 0}
    page.screenshot(path=shots / "cameras-ended.png", full_page=True)

    # A second camera of the same name: the API's conflict, shown as on the other pages.
    form.get_by_label("Name").fill("stage")
    form.get_by_label("Source").fill(str(CLIP))
    page.click("#add-camera")
    expect(page.get_by_test_id("alert")).to_have_text("camera 'stage' exists")

    # Alerts: exactly one event per person from "stage", each with a snapshot and a frame
    # (the whole frame, fetched with the key); the poster on "lobby-screen" is labelled.
    page.click("#nav-alerts")
    expect(page.locator("#page-alerts")).to_be_visible()
    expect(page.locator("#camera-preview")).to_be_hidden()
    events = _call(server.base, "/v1/events", server.key)
    stage = {e["subject_name"]: e for e in events if e["camera"] == "stage"}
    assert sorted(stage) == sorted(STAGE_CAST)
    assert len([e for e in events if e["camera"] == "stage"]) == 2
    assert all(e["status"] == "unconfirmed" and e["has_snapshot"] and e["has_frame"]
               for e in stage.values())
    expect(page.locator("td.camera", has_text=re.compile(r"^stage$"))).to_have_count(2)
    for name, event in stage.items():
        event_row = page.get_by_test_id(f"event-{event['id']}")
        expect(event_row.locator("td.camera")).to_have_text("stage")
        expect(event_row.locator("td.subject")).to_have_text(name)
        expect(event_row.locator("td.time")).to_have_text(_tokyo(event["at"]))
        expect(page.get_by_test_id(f"event-status-{event['id']}")).to_have_text("unconfirmed")
        snapshot = page.get_by_test_id(f"event-snapshot-{event['id']}")
        frame = page.get_by_test_id(f"event-frame-{event['id']}")
        _wait_loaded(page, snapshot)
        _wait_loaded(page, frame, 640)
        assert frame.get_attribute("src").startswith("blob:")
        assert event_row.locator("a:has(img.frame)").get_attribute("href") == \
            frame.get_attribute("src")
    poster_row = page.get_by_test_id(f"event-{poster}")
    expect(poster_row).to_have_class("status-suppressed")
    expect(poster_row.locator("td.camera")).to_have_text("lobby-screen")
    expect(page.get_by_test_id(f"event-flag-{poster}")).to_have_text("poster? — not alerted")
    expect(page.get_by_test_id(f"event-status-{poster}")).to_contain_text("suppressed")
    _wait_loaded(page, page.get_by_test_id(f"event-frame-{poster}"))
    page.screenshot(path=shots / "alerts-camera.png", full_page=True)

    # Leaving the Cameras page stopped the preview: no more requests for it.
    asked = len(previews)
    page.wait_for_timeout(1500)
    assert len(previews) == asked

    # The status filter knows "suppressed".
    page.select_option("#events-status", "suppressed")
    expect(page.locator("#events-table tbody tr")).to_have_count(1)
    expect(poster_row).to_be_visible()
    page.select_option("#events-status", "")

    # Back on Cameras: disable, reassign to "door-staff" while disabled, enable, remove.
    page.click("#nav-cameras")
    toggle = page.get_by_test_id("camera-toggle-stage")
    expect(toggle).to_have_text("Disable")
    toggle.click()
    expect(page.get_by_test_id("camera-status-stage")).to_have_text("disabled")
    expect(toggle).to_have_text("Enable")
    expect(page.get_by_test_id("notice")).to_have_text("Camera stage disabled.")
    assert _call(server.base, "/v1/cameras", server.key)[0]["enabled"] is False

    page.get_by_test_id("camera-assign-stage").click()
    editor = page.get_by_test_id("camera-editor-stage")
    expect(editor).to_be_visible()
    choice = page.get_by_test_id("camera-editor-select-stage")
    expect(choice.locator("option:checked")).to_have_text(["watch"])
    page.wait_for_timeout(2500)  # a status refresh in between leaves the editor open
    expect(editor).to_be_visible()
    choice.select_option(["door-staff"])
    page.get_by_test_id("camera-editor-save-stage").click()
    expect(editor).to_have_count(0)
    expect(page.get_by_test_id("camera-galleries-stage")).to_have_text("door-staff")
    expect(page.get_by_test_id("notice")).to_have_text("Camera stage now watches door-staff.")
    assert _call(server.base, "/v1/cameras", server.key)[0]["galleries"] == ["door-staff"]

    toggle.click()
    expect(toggle).to_have_text("Disable")
    expect(page.get_by_test_id("camera-status-stage")).to_have_text(
        re.compile(r"^(starting|running|ended)$"))
    expect(page.get_by_test_id("notice")).to_have_text("Camera stage enabled.")
    assert _call(server.base, "/v1/cameras", server.key)[0]["enabled"] is True

    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_test_id("camera-remove-stage").click()
    expect(page.get_by_test_id("camera-stage")).to_have_count(0)
    expect(page.get_by_test_id("cameras-empty")).to_be_visible()
    expect(page.get_by_test_id("notice")).to_have_text("Camera stage removed.")
    assert len(dialogs) == 1 and "stage" in dialogs[0]
    assert _call(server.base, "/v1/cameras", server.key) == []
    # The replay watched "door-staff" (nobody enrolled): still one event per person.
    stage_events = [e for e in _call(server.base, "/v1/events", server.key)
                    if e["camera"] == "stage"]
    assert len(stage_events) == 2
    expect(page.get_by_test_id("alert")).to_be_hidden()


# ---------------------------------------------------------------------------- liveness
LIVE_FRAMES = range(85, 205)
"""Frames of the clip where lin-manuel-miranda faces the camera: his head turns to his right
and back (yaw down to about -36°) but never 20° to his left (at most about +13°), so no
challenge order can be performed; tests/test_liveness.py judges the same footage."""
INSTRUCTIONS = {"blink": "Blink", "turn_left": "Turn your head to your left",
                "turn_right": "Turn your head to your right"}
CHECK_FRAMES = 55  # liveness.js: 1 s lead-in + 3 × 1.5 s, at 10 fps
VERDICT_TIMEOUT_MS = 180_000  # judging 55 frames (detect, mesh, embed) on a small CPU

# Test-side instrumentation: every stream the console gets (to see its tracks end), and the
# forms it posts (Playwright does not expose a multipart body built from blobs).
TRACK_STREAMS = """
window.__streams = [];
window.__forms = [];
const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (constraints) => {
  const stream = await getUserMedia(constraints);
  window.__streams.push(stream);
  return stream;
};
const fetch_ = window.fetch;
window.fetch = (url, options) => {
  if (options && options.body instanceof FormData) {
    window.__forms.push({ url: String(url), entries: [...options.body.entries()] });
  }
  return fetch_(url, options);
};
"""
# The console's last posted form: [[name, value]] with files as {type, name, width, height}.
LAST_FORM = """async () => {
  const form = window.__forms[window.__forms.length - 1];
  const entries = [];
  for (const [name, value] of form.entries) {
    if (typeof value === "string") { entries.push([name, value]); continue; }
    const image = await createImageBitmap(value);
    entries.push([name, { type: value.type, name: value.name, width: image.width,
                          height: image.height }]);
  }
  return { url: form.url, entries };
}"""
CAMERAS_OFF = ("window.__streams.length > 0 && window.__streams.every("
               "s => s.getTracks().every(t => t.readyState === 'ended'))")


@pytest.fixture(scope="module")
def clip_webcam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LIVE_FRAMES of the Hamilton clip as a Y4M file, for chromium's fake camera to loop."""
    if not CLIP.is_file():
        pytest.skip(f"the liveness webcam test needs {CLIP} (../shared/data/video, the "
                    "team's checkout) to make its fake camera footage")
    import av
    import cv2

    path = tmp_path_factory.mktemp("liveness-webcam") / "miranda.y4m"
    written = 0
    with av.open(str(CLIP)) as container, path.open("wb") as out:
        out.write(b"YUV4MPEG2 W640 H360 F30:1 Ip A1:1 C420jpeg\n")
        for index, frame in enumerate(container.decode(video=0)):
            if index >= LIVE_FRAMES.stop:
                break
            if index < LIVE_FRAMES.start:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            assert rgb.shape == (360, 640, 3), rgb.shape
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
            written += 1
    assert written == len(LIVE_FRAMES)
    return path


@pytest.fixture
def clip_page(pw: Any, clip_webcam: Path) -> Iterator[Page]:
    """A page in a second chromium whose webcam is the clip (looped)."""
    with _chromium(pw, f"--use-file-for-fake-video-capture={clip_webcam}") as chromium, \
            _open_page(chromium) as opened:
        yield opened


def _liveness_responses(page: Page) -> list[Any]:
    """The console's responses from /v1/liveness/sessions…, as they come."""
    seen: list[Any] = []
    page.on("response", lambda r: seen.append(r) if "/v1/liveness/sessions" in r.url else None)
    return seen


def _started(responses: list[Any]) -> list[Any]:
    return [r for r in responses
            if r.request.method == "POST" and r.url.endswith("/v1/liveness/sessions")]


def _answers(responses: list[Any]) -> list[Any]:
    return [r for r in responses
            if r.request.method == "POST" and "/v1/liveness/sessions/" in r.url]


def test_liveness_on_real_footage_fails_honestly(clip_page: Page, server: Server,
                                                 fixtures_dir: Path, shots: Path) -> None:
    import httpx

    page = clip_page
    page.add_init_script(TRACK_STREAMS)
    responses = _liveness_responses(page)
    sign_in(page, server)
    page.click("#nav-liveness")
    expect(page).to_have_url(server.base + "/console/#/liveness")
    expect(page.locator("#nav-liveness")).to_have_attribute("aria-current", "")
    start = page.get_by_test_id("liveness-start")
    expect(start).to_have_text("Start check")
    start.click()

    # The camera opens, then the session: its challenge becomes the steps, in its order,
    # shown one at a time while the progress bar fills.
    video = page.get_by_test_id("liveness-video")
    expect(video).to_be_visible()
    steps = page.locator("#liveness-steps li")
    expect(steps).to_have_count(4)
    (created,) = _started(responses)
    assert created.status == 201
    session = created.json()
    challenge = session["challenge"]
    assert sorted(challenge) == sorted(INSTRUCTIONS) and session["state"] == "open"
    expect(steps).to_have_text(["Look at the camera", *(INSTRUCTIONS[a] for a in challenge)])
    instruction = page.get_by_test_id("liveness-instruction")
    expect(start).to_be_disabled()
    for number, action in enumerate(challenge, start=1):
        expect(instruction).to_have_text(INSTRUCTIONS[action])
        expect(steps.nth(number)).to_have_class("current")
        if number == 1:
            page.wait_for_function("v => v.videoWidth === 640 && v.videoHeight === 360",
                                   arg=video.element_handle())
            page.screenshot(path=shots / "liveness-recording.png", full_page=True)
    progress = page.get_by_test_id("liveness-progress")
    assert int(progress.get_attribute("max") or 0) == CHECK_FRAMES

    # The verdict: natural footage does not perform the random challenge.
    verdict = page.get_by_test_id("liveness-verdict")
    expect(verdict).to_have_text("FAILED", timeout=VERDICT_TIMEOUT_MS)
    reasons = page.get_by_test_id("liveness-reasons")
    expect(reasons).to_contain_text("not performed (in the asked order)")
    expect(reasons).to_contain_text("turn_left")  # never done in the footage
    expect(page.get_by_test_id("liveness-performed")).to_contain_text("Turn left: not seen")
    expect(page.get_by_test_id("liveness-session-id")).to_have_text(session["id"])
    expect(page.get_by_test_id("liveness-session-state")).to_contain_text("failed")
    expect(page.get_by_test_id("liveness-use")).to_contain_text("cannot be used for a verify")
    frames = int(page.get_by_test_id("liveness-frames").inner_text())
    faces = int(page.get_by_test_id("liveness-faces").inner_text())
    assert frames == CHECK_FRAMES
    assert faces > frames // 2, (faces, frames)  # a real face, in most frames
    expect(page.get_by_test_id("liveness-passive")).to_contain_text("moiré")
    expect(page.get_by_test_id("alert")).to_be_hidden()
    # The camera is off (tracks ended) and the start button back.
    expect(video).to_be_hidden()
    page.wait_for_function(CAMERAS_OFF)
    expect(start).to_be_enabled()
    assert session["nonce"] not in page.content()  # the nonce stays out of the page
    page.screenshot(path=shots / "liveness.png", full_page=True)

    # What was posted, in one answer: the nonce, then CHECK_FRAMES JPEGs in order, taken
    # from the 640x360 camera at its size (≤ 640 px wide).
    (answer,) = _answers(responses)
    assert answer.url == f"{server.base}/v1/liveness/sessions/{session['id']}"
    posted = page.evaluate(LAST_FORM)
    assert posted["url"] == f"/v1/liveness/sessions/{session['id']}"
    assert posted["entries"][0] == ["nonce", session["nonce"]]
    posted_frames = posted["entries"][1:]
    assert [name for name, _ in posted_frames] == ["frames"] * CHECK_FRAMES
    assert [f["name"] for _, f in posted_frames] == [f"frame-{i:03d}.jpg"
                                                     for i in range(CHECK_FRAMES)]
    assert all((f["type"], f["width"], f["height"]) == ("image/jpeg", 640, 360)
               for _, f in posted_frames)

    # The service agrees, and keeps the nonce to itself.
    stored = _call(server.base, f"/v1/liveness/sessions/{session['id']}", server.key)
    assert stored["state"] == "failed" and "nonce" not in stored
    assert stored["result"] == answer.json()["result"]
    assert stored["result"]["passed"] is False and stored["result"]["faces"] == faces

    # A replay with the session's nonce (any frames) is refused: answered already.
    auth = {"Authorization": f"Bearer {server.key}"}
    photo = (fixtures_dir / "obama.jpg").read_bytes()
    replay = httpx.post(answer.url, data={"nonce": session["nonce"]}, timeout=120,
                        headers=auth, files=[("frames", (f"f{i}.jpg", photo, "image/jpeg"))
                                             for i in range(8)])
    assert replay.status_code == 409, replay.text
    assert replay.json()["error"]["code"] == "conflict"
    wrong = httpx.post(answer.url, data={"nonce": "not-the-nonce"}, timeout=60, headers=auth,
                       files=[("frames", ("f.jpg", b"\xff\xd8\xff", "image/jpeg"))])
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "liveness_refused"


def test_liveness_without_a_face_fails_and_leaving_stops_the_camera(page: Page, server: Server,
                                                                    shots: Path) -> None:
    page.add_init_script(TRACK_STREAMS)
    responses = _liveness_responses(page)
    sign_in(page, server)
    page.click("#nav-liveness")
    start = page.get_by_test_id("liveness-start")
    start.click()

    # Chromium's synthetic pattern: no face in any frame.
    verdict = page.get_by_test_id("liveness-verdict")
    expect(verdict).to_have_text("FAILED", timeout=VERDICT_TIMEOUT_MS)
    reasons = page.get_by_test_id("liveness-reasons")
    expect(reasons).to_contain_text("a face was found in")
    found = re.search(r"a face was found in (\d+) of (\d+) frames", reasons.inner_text())
    assert found, reasons.inner_text()
    faces, frames = int(found[1]), int(found[2])
    assert frames == CHECK_FRAMES and faces <= 2, (faces, frames)
    expect(page.get_by_test_id("liveness-faces")).to_have_text(str(faces))
    expect(page.get_by_test_id("liveness-frames")).to_have_text(str(frames))
    expect(reasons).to_contain_text("no frontal face to check identity on")
    expect(page.get_by_test_id("liveness-passive")).to_contain_text("not measured")
    expect(page.locator("#liveness-performed li.unseen")).to_have_count(3)
    (created,) = _started(responses)
    expect(page.get_by_test_id("liveness-session-id")).to_have_text(created.json()["id"])
    expect(page.get_by_test_id("liveness-video")).to_be_hidden()
    page.wait_for_function(CAMERAS_OFF)
    expect(page.get_by_test_id("alert")).to_be_hidden()
    page.screenshot(path=shots / "liveness-no-face.png", full_page=True)

    # Leaving the page mid-check: the camera goes off and nothing is posted; the session
    # stays open (unanswered) until it expires.
    start.click()
    expect(page.get_by_test_id("liveness-progress")).to_be_visible()
    expect(page.get_by_test_id("liveness-video")).to_be_visible()
    page.click("#nav-try")
    expect(page.locator("#page-try")).to_be_visible()
    page.wait_for_function(CAMERAS_OFF)
    expect(page.get_by_test_id("liveness-video")).to_be_hidden()
    page.wait_for_timeout(7000)  # longer than a whole recording
    assert len(_answers(responses)) == 1
    second = _started(responses)[1].json()
    stored = _call(server.base, f"/v1/liveness/sessions/{second['id']}", server.key)
    assert stored["state"] == "open" and stored["result"] is None
    page.click("#nav-liveness")  # back: ready for another check
    expect(page.get_by_test_id("liveness-start")).to_be_enabled()
    expect(page.get_by_test_id("liveness-instruction")).to_contain_text("Start check")


def test_liveness_camera_and_api_errors_are_shown(page: Page, browser: Any,
                                                  server: Server) -> None:
    # The camera refused (as when the person denies the permission prompt): no session.
    page.add_init_script("navigator.mediaDevices.getUserMedia = () => Promise.reject("
                         "new DOMException('Permission denied', 'NotAllowedError'));")
    responses = _liveness_responses(page)
    sign_in(page, server)
    page.click("#nav-liveness")
    page.get_by_test_id("liveness-start").click()
    expect(page.get_by_test_id("alert")).to_contain_text(
        "permission to use the camera was denied")
    expect(page.get_by_test_id("liveness-instruction")).to_have_text(
        "The check did not complete.")
    expect(page.get_by_test_id("liveness-start")).to_be_enabled()
    expect(page.get_by_test_id("liveness-video")).to_be_hidden()
    expect(page.get_by_test_id("liveness-result")).to_be_hidden()
    assert responses == []

    # A key without the verify scope: the camera works, the API refuses; the camera goes off.
    made = server.new_key("console-liveness-enrol-only", "enrol")
    with _open_page(browser) as other:
        other.add_init_script(TRACK_STREAMS)
        sign_in(other, server, key=made["key"])
        other.click("#nav-liveness")
        other.get_by_test_id("liveness-start").click()
        expect(other.get_by_test_id("alert")).to_have_text("this key lacks the verify scope")
        other.wait_for_function(CAMERAS_OFF)
        expect(other.get_by_test_id("liveness-video")).to_be_hidden()
        expect(other.get_by_test_id("liveness-start")).to_be_enabled()
        expect(other.get_by_test_id("liveness-result")).to_be_hidden()
