"""The web console in a real browser against a real `facelens serve`: sign in, create a
gallery, enrol from a photo and a webcam frame (chromium's fake camera), identify and verify on
"Try it", delete, sign out; a forbidden and a revoked key; alerts reviewed. Screenshots of
each page go to out/console/.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
from datetime import date, timedelta
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
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, needs_chromium]

KNOWN_GREEN = (0x1A, 0x7F, 0x37)  # draw.js COLOURS.known

# Events come from cameras, not from the API: the test records them with the library, in a
# separate process on the server's data directory (as a camera worker would).
RECORD_EVENTS = """
import json, sys
from datetime import UTC, datetime, timedelta
from facelens.events.store import EventStore
from facelens.gallery.service import ConsentRecord, Galleries
from facelens.settings import get_settings
from facelens.store.database import Store

settings = get_settings()
store = Store(settings)
galleries = Galleries(settings, store)
galleries.create_gallery("watch", "watchlist-console-test")
consent = ConsentRecord(purpose="console test", legal_basis="legitimate-interest",
                        recorded_by="console test")
report = galleries.enroll("watch", "biden", [sys.argv[1]], consent=consent,
                          watch_reason="console test",
                          watch_expires=datetime.now(UTC) + timedelta(days=30))
events = EventStore(store)
with open(sys.argv[1], "rb") as f:
    seen = events.record("front-door", report.subject_id, "high", snapshot_jpeg=f.read())
other = events.record("loading-bay", report.subject_id, "medium")
print(json.dumps([seen.id, other.id]))
"""


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
    # A function, not an expression: Playwright polls an expression with eval, which the
    # console's CSP (no 'unsafe-eval') refuses whenever the first check is not yet true.
    page.wait_for_function("v => v.videoWidth > 0",
                           arg=page.locator("#webcam-video").element_handle())
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
    dialogs = accept_next_dialog(page)
    page.get_by_test_id("delete-obama").click()
    expect(page.get_by_test_id("subjects-empty")).to_be_visible()
    expect(page.locator("#subjects-table tbody tr[data-name='obama']")).to_have_count(0)
    assert len(dialogs) == 1 and "obama" in dialogs[0]
    expect(page.get_by_test_id("notice")).to_have_text("obama deleted.")
    assert api_call(server.base, "/v1/galleries/door/subjects", server.key) == []
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
    # The console offers only what the key may do: no gallery creation without admin.
    expect(page.locator("#create-gallery-form")).to_be_hidden()
    expect(page.locator("#nav-try")).to_be_hidden()
    # ...and the API still refuses if asked directly.
    with pytest.raises(urllib.error.HTTPError, match="403"):
        api_call(server.base, "/v1/galleries", made["key"],
                 {"name": "not-allowed", "purpose": "staff-door"})

    # Revoked while signed in: the next call answers 401 and the console signs out.
    api_call(server.base, f"/v1/keys/{made['id']}", server.key, method="DELETE")
    page.evaluate("location.hash = '#/galleries/door'")
    expect(page.locator("#page-signin")).to_be_visible()
    expect(page.get_by_test_id("alert")).to_have_text("unknown or revoked API key")
    expect(page.locator("#nav")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_the_console_shows_only_what_the_key_may_do(page: Page, server: Server,
                                                   fixtures_dir: Path, shots: Path) -> None:
    api_call(server.base, "/v1/galleries", server.key, {"name": "scoped", "purpose": "door"})
    made = server.new_key("console-identify-only", "identify")
    sign_in(page, server, key=made["key"])
    expect(page.get_by_test_id("whoami")).to_have_text("console-identify-only · identify")
    for visible in ("#nav-galleries", "#nav-try", "#nav-docs"):
        expect(page.locator(visible)).to_be_visible()
    for hidden in ("#nav-liveness", "#nav-cameras", "#nav-alerts", "#create-gallery-form"):
        expect(page.locator(hidden)).to_be_hidden()
    page.get_by_test_id("gallery-scoped").get_by_role("link").click()
    expect(page.get_by_test_id("gallery-title")).to_have_text("Gallery scoped")
    expect(page.locator("#subjects-table tbody tr").first).to_be_visible()
    expect(page.locator("#enrol-form")).to_be_hidden()
    expect(page.locator("#subjects-table button.danger")).to_have_count(0)

    # Try it: no age/sex box and no compare for this key; identifying works without an error.
    page.click("#nav-try")
    expect(page.locator("#try-attributes")).to_be_hidden()
    expect(page.locator("#try-image-b")).to_be_hidden()
    page.locator("#try-gallery").select_option("scoped")
    page.set_input_files("#try-image", fixtures_dir / "obama2.jpg")
    page.click("#try-submit")
    expect(page.get_by_test_id("try-result")).to_be_visible()
    expect(page.get_by_test_id("alert")).to_be_hidden()
    page.screenshot(path=shots / "scoped-key-try.png", full_page=True)


def test_friendly_gallery_name_message_and_no_stale_error(page: Page, server: Server) -> None:
    sign_in(page, server)
    page.fill("#gallery-name", "Staff/Door")
    page.fill("#gallery-purpose", "staff-door")
    page.click("#create-gallery")
    alert = page.get_by_test_id("alert")
    expect(alert).to_contain_text("“Staff/Door” cannot be a gallery name")
    expect(alert).to_contain_text("“Staff_Door”")
    page.fill("#gallery-name", "Staff_Door")
    page.fill("#gallery-purpose", "staff-door")
    page.click("#create-gallery")
    expect(page.get_by_test_id("notice")).to_have_text("Gallery Staff_Door created.")
    expect(alert).to_be_hidden()  # the earlier error no longer stands


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
    # Beside it, the person as enrolled (their best enrolment face, sealed like templates).
    reference = page.get_by_test_id(f"event-reference-{seen}")
    expect(reference).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth === 112",
                           arg=reference.element_handle())
    page.screenshot(path=shots / "alerts.png", full_page=True)

    # Confirm one, dismiss the other: the rows change in place and the API agrees.
    page.get_by_test_id(f"event-confirm-{seen}").click()
    expect(page.get_by_test_id(f"event-status-{seen}")).to_have_text("confirmed")
    expect(page.get_by_test_id(f"event-confirm-{seen}")).to_be_disabled()
    expect(page.get_by_test_id(f"event-dismiss-{seen}")).to_be_enabled()
    page.get_by_test_id(f"event-dismiss-{other}").click()
    expect(page.get_by_test_id(f"event-status-{other}")).to_have_text("dismissed")
    expect(page.get_by_test_id(f"event-dismiss-{other}")).to_be_disabled()
    statuses = {e["id"]: e["status"] for e in api_call(server.base, "/v1/events", server.key)}
    assert statuses == {seen: "confirmed", other: "dismissed"}
    expect(page.get_by_test_id("alert")).to_be_hidden()
    page.screenshot(path=shots / "alerts-reviewed.png", full_page=True)

    # The status filter asks the API again.
    page.select_option("#events-status", "confirmed")
    expect(page.get_by_test_id(f"event-{other}")).to_have_count(0)
    expect(page.get_by_test_id(f"event-{seen}")).to_be_visible()
    page.select_option("#events-status", "unconfirmed")
    expect(page.get_by_test_id("events-empty")).to_have_text("No unconfirmed events.")



def test_group_photo_verify_answers_per_face_and_labels_do_not_collide(
        page: Page, server: Server, fixtures_dir: Path, shots: Path) -> None:
    sign_in(page, server)
    page.click("#nav-try")
    page.set_input_files("#try-image", fixtures_dir / "biden.jpg")
    page.set_input_files("#try-image-b", fixtures_dir / "obama_and_biden.jpg")
    page.click("#try-submit")
    verdict = page.get_by_test_id("try-verify")
    expect(verdict).to_contain_text("Verify: same person")
    expect(verdict).to_contain_text(re.compile(r"second photo: 1 of [2-9] faces match at \("))
    page.screenshot(path=shots / "try-group-verify.png", full_page=True)

    # Labels of faces side by side never overlap; a 9-px detection keeps its box, no label.
    placed = page.evaluate("""async () => {
        const { drawFaces } = await import("/console/static/draw.js");
        const canvas = document.createElement("canvas");
        const bitmap = await createImageBitmap(new ImageData(400, 300));
        const face = (x, w, label) => ({ box: [x, 100, x + w, 100 + w], label, kind: "plain" });
        return drawFaces(canvas, bitmap, [face(100, 60, "#0 · q 90% · 41 y · male"),
            face(130, 60, "#1 · q 88% · 35 y · female"), face(300, 9, "#2")], null);
    }""")
    assert [p["label"][:2] for p in placed] == ["#0", "#1"]
    first, second = placed
    assert (first["y"] + first["h"] <= second["y"] or second["y"] + second["h"] <= first["y"]
            or first["x"] + first["w"] <= second["x"])


def test_alerts_arrive_live_and_filter_by_person_and_camera(page: Page, server: Server,
                                                             fixtures_dir: Path,
                                                             shots: Path) -> None:
    def record(camera: str) -> int:
        return record_alert(server, fixtures_dir / "obama.jpg", camera, gallery="live",
                            name="obama")

    first = record("gate")
    sign_in(page, server)
    page.click("#nav-alerts")
    expect(page.get_by_test_id(f"event-{first}")).to_be_visible()
    expect(page.get_by_test_id("events-live")).to_contain_text("Live")
    arrived = record("lobby")  # no click: the row appears by itself
    expect(page.get_by_test_id(f"event-{arrived}")).to_contain_text("lobby", timeout=15_000)
    page.screenshot(path=shots / "alerts-live.png", full_page=True)

    page.fill("#events-camera", "gate")
    page.click("#events-refresh")
    expect(page.get_by_test_id(f"event-{arrived}")).to_have_count(0)
    expect(page.get_by_test_id(f"event-{first}")).to_be_visible()
    page.fill("#events-camera", "")
    page.get_by_test_id(f"event-person-{first}").click()  # this person's match history
    expect(page.get_by_test_id("events-person")).to_contain_text("person: obama")
    expect(page.locator("#events-table tbody tr")).to_have_count(2)

    # Bulk review: select both, dismiss; each row says who reviewed it and when.
    page.check("#events-all")
    page.click("#events-dismiss-selected")
    expect(page.get_by_test_id("notice")).to_have_text("2 alerts dismissed.")
    for event in (first, arrived):
        expect(page.get_by_test_id(f"event-status-{event}")).to_contain_text("dismissed")
        expect(page.get_by_test_id(f"event-reviewer-{event}")).to_contain_text("by console-test")
    statuses = {e["id"]: e["status"] for e in api_call(server.base, "/v1/events", server.key)}
    assert statuses[first] == statuses[arrived] == "dismissed"


def test_keys_and_audit_page(page: Page, browser: Any, server: Server, shots: Path) -> None:
    sign_in(page, server)
    page.click("#nav-admin")
    page.fill("#key-name", "front-desk")
    page.get_by_test_id("scope-identify").check()
    page.click("#key-create")
    secret = page.get_by_test_id("key-secret").inner_text()
    assert secret.startswith("fl_")
    page.click("#audit-verify")
    expect(page.get_by_test_id("audit-check")).to_contain_text("Chain intact")
    expect(page.locator("#audit-table tbody tr", has_text="key.create")).not_to_have_count(0)
    page.screenshot(path=shots / "keys-audit.png", full_page=True)

    # The new key signs in elsewhere and sees only what identify allows.
    with open_page(browser) as other:
        sign_in(other, server, key=secret)
        expect(other.get_by_test_id("whoami")).to_have_text("front-desk · identify")
        expect(other.locator("#nav-admin")).to_be_hidden()
        expect(other.locator("#create-gallery-form")).to_be_hidden()

    key_id = secret.split("_")[1]
    accept_next_dialog(page)
    page.get_by_test_id(f"key-revoke-{key_id}").click()
    expect(page.get_by_test_id("notice")).to_have_text("Key front-desk revoked.")
    expect(page.get_by_test_id(f"key-revoke-{key_id}")).to_have_count(0)


def test_api_docs_render_offline_from_the_console_link(page: Page, server: Server,
                                                      shots: Path) -> None:
    blocked: list[str] = []

    def offline(route: Any) -> None:  # anything not on this server is unreachable
        blocked.append(route.request.url)
        route.abort()

    page.context.route(re.compile(r"^(?!" + re.escape(server.base) + ")"), offline)
    sign_in(page, server)
    with page.context.expect_page() as opened:
        page.click("#nav-docs")
    docs = opened.value
    expect(docs.locator(".swagger-ui .opblock-summary-path", has_text="/v1/verify").first
           ).to_be_visible(timeout=15_000)  # a local page: no need for the model-load wait
    docs.screenshot(path=shots / "docs-offline.png")
    assert blocked == [], blocked
