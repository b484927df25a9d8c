"""The console's liveness check in a real browser against a real `facelens serve`: real
footage (the Hamilton clip as chromium's fake camera) fails the random challenge honestly, a
faceless camera fails, leaving the page stops the camera, and camera and API errors are shown.
Screenshots go to out/console/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import (
    CLIP,
    Server,
    api_call,
    launch_chromium,
    needs_chromium,
    open_page,
    sign_in,
)
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, needs_chromium]

LIVE_FRAMES = range(85, 205)
"""Frames of the clip where lin-manuel-miranda faces the camera: his head turns to his right
and back (yaw down to about -36°) but never 20° to his left (at most about +13°), so no
challenge order can be performed; tests/test_liveness.py judges the same footage."""
INSTRUCTIONS = {"blink": "Blink", "turn_left": "Turn your head to your left",
                "turn_right": "Turn your head to your right"}
VERDICT_TIMEOUT_MS = 240_000  # judging up to 180 frames (detect, mesh, embed) on a small CPU


def check_frames(session: dict[str, Any]) -> int:
    """Frames the console records for `session` (liveness.js): 10 fps until 2.4 s after the
    last prompt, at most 180."""
    return min(180, round((session["prompts_s"][-1] + 2.4) * 10))

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
# A function, not an expression: Playwright polls an expression with eval, which the console's
# CSP (no 'unsafe-eval') refuses.
CAMERAS_OFF = ("() => window.__streams.length > 0 && window.__streams.every("
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
    with launch_chromium(pw, f"--use-file-for-fake-video-capture={clip_webcam}") as chromium, \
            open_page(chromium) as opened:
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
    count = check_frames(session)
    assert int(progress.get_attribute("max") or 0) == count

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
    assert frames == count
    assert faces > frames // 2, (faces, frames)  # a real face, in most frames
    expect(page.get_by_test_id("liveness-passive")).to_contain_text("moiré")
    expect(page.get_by_test_id("alert")).to_be_hidden()
    # The camera is off (tracks ended) and the start button back.
    expect(video).to_be_hidden()
    page.wait_for_function(CAMERAS_OFF)
    expect(start).to_be_enabled()
    assert session["nonce"] not in page.content()  # the nonce stays out of the page
    page.screenshot(path=shots / "liveness.png", full_page=True)

    # What was posted, in one answer: the nonce, each frame's time (s into the recording, none
    # taken before it was due at 10 fps), then the JPEGs in order, taken from the 640x360
    # camera at its size (≤ 640 px wide).
    (answer,) = _answers(responses)
    assert answer.url == f"{server.base}/v1/liveness/sessions/{session['id']}"
    posted = page.evaluate(LAST_FORM)
    assert posted["url"] == f"/v1/liveness/sessions/{session['id']}"
    assert posted["entries"][0] == ["nonce", session["nonce"]]
    name, times = posted["entries"][1]
    stamps = [float(t) for t in times.split(",")]
    assert name == "times" and len(stamps) == count and stamps == sorted(stamps)
    assert all(t >= i / 10 - 0.005 for i, t in enumerate(stamps))
    posted_frames = posted["entries"][2:]
    assert [name for name, _ in posted_frames] == ["frames"] * count
    assert [f["name"] for _, f in posted_frames] == [f"frame-{i:03d}.jpg"
                                                     for i in range(count)]
    assert all((f["type"], f["width"], f["height"]) == ("image/jpeg", 640, 360)
               for _, f in posted_frames)

    # The service agrees, and keeps the nonce to itself.
    stored = api_call(server.base, f"/v1/liveness/sessions/{session['id']}", server.key)
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
    (created,) = _started(responses)
    assert frames == check_frames(created.json()) and faces <= 2, (faces, frames)
    expect(page.get_by_test_id("liveness-faces")).to_have_text(str(faces))
    expect(page.get_by_test_id("liveness-frames")).to_have_text(str(frames))
    expect(reasons).to_contain_text("no frontal face to check identity on")
    expect(page.get_by_test_id("liveness-passive")).to_contain_text("not measured")
    expect(page.locator("#liveness-performed li.unseen")).to_have_count(3)
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
    stored = api_call(server.base, f"/v1/liveness/sessions/{second['id']}", server.key)
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

    # A key without the verify scope: refused before the camera is switched on.
    made = server.new_key("console-liveness-enrol-only", "enrol")
    with open_page(browser) as other:
        other.add_init_script(TRACK_STREAMS)
        sign_in(other, server, key=made["key"])
        expect(other.locator("#nav-liveness")).to_be_hidden()  # not offered to this key...
        other.evaluate("location.hash = '#/liveness'")  # ...but a typed address still refuses
        other.get_by_test_id("liveness-start").click()
        expect(other.get_by_test_id("alert")).to_have_text("this key lacks the verify scope")
        assert other.evaluate("window.__streams.length") == 0
        expect(other.get_by_test_id("liveness-video")).to_be_hidden()
        expect(other.get_by_test_id("liveness-start")).to_be_enabled()
        expect(other.get_by_test_id("liveness-result")).to_be_hidden()
