"""Recaptures made as an attacker would: a genuine clip played full-screen in Debian's
chromium (headless, driven by Playwright) and grabbed back from the screen, at another scale
and frame rate, then re-encoded.

Everything in the chain is real: the browser's decoder and scaler draw the video at the
window's size (letterboxed), screenshots come as JPEG at whatever rate the browser manages
(5–15 a second, by size; the clip plays at the recipe's rate, so the grab samples it at
another, uneven frame rate), and the grabs are encoded again (H.264 or VP8) with their real
timestamps. What it is not: a camera filming a screen (no moiré, no glare): that attack is
the rendered replay set (eval/attacks.py).

Recaptures are cached under the model cache (models/tfjs.py's cache_dir) by the clip's
sha256 and RECIPES' version: made once, about 3 s of browser time per second of clip.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from facelens.models.tfjs import cache_dir

CHROMIUM = Path("/usr/bin/chromium")
VERSION = 1
"""Part of each cached file's name: raise it when the recipe changes."""


@dataclass(frozen=True)
class Recipe:
    name: str
    viewport: tuple[int, int]
    rate: float
    """The playback rate: the grab's frame rate in clip time is its shots per second / rate."""
    codec: str
    seconds: float
    """Clip time grabbed at most."""


RECIPES = (Recipe("800x600-h264", (800, 600), 0.5, "libx264", 12.0),
           Recipe("1280x720-vp8", (1280, 720), 0.6, "libvpx", 12.0))


def available() -> bool:
    """Chromium and Playwright are installed."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return CHROMIUM.is_file()


def _playable(path: Path, into: Path) -> Path:
    """The clip as a file chromium plays in a <video> element (GIFs transcoded to VP8)."""
    if path.suffix.lower() != ".gif":
        return path
    target = into / f"{path.stem}.webm"
    with av.open(str(path)) as source, av.open(str(target), "w") as out:
        stream = source.streams.video[0]
        fps = float(stream.average_rate or 12.5)
        encoded = out.add_stream("libvpx", rate=Fraction(round(fps * 100), 100))
        encoded.pix_fmt = "yuv420p"
        encoded.options = {"crf": "10", "b": "4M", "deadline": "realtime", "cpu-used": "8"}
        encoded.width = stream.codec_context.width // 2 * 2
        encoded.height = stream.codec_context.height // 2 * 2
        for frame in source.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            picture = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(rgb[:encoded.height, :encoded.width]), format="rgb24")
            out.mux(encoded.encode(picture))
        out.mux(encoded.encode())
    return target


def grab(path: Path, recipe: Recipe) -> list[tuple[float, np.ndarray]]:
    """(clip time in s, RGB screenshot) pairs of `path` played full-screen in chromium."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        source = _playable(path.resolve(), Path(tmp))
        page_file = Path(tmp) / "screen.html"
        page_file.write_text(
            "<html><body style='margin:0;background:#000;overflow:hidden'>"
            f"<video id=v muted playsinline src='{source.as_uri()}' style='width:100vw;"
            "height:100vh;object-fit:contain'></video></body></html>")
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--autoplay-policy=no-user-gesture-required"])
        try:
            width, height = recipe.viewport
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(page_file.as_uri())
            page.wait_for_function("document.getElementById('v').readyState >= 2",
                                   timeout=15000)
            page.evaluate(f"(() => {{ const v = document.getElementById('v'); "
                          f"v.playbackRate = {recipe.rate}; return v.play(); }})()")
            shots: list[tuple[float, np.ndarray]] = []
            limit = time.monotonic() + recipe.seconds / recipe.rate + 10
            while time.monotonic() < limit:
                at, ended = page.evaluate("(() => { const v = document.getElementById('v'); "
                                          "return [v.currentTime, v.ended]; })()")
                if ended or at > recipe.seconds:
                    break
                jpeg = page.screenshot(type="jpeg", quality=80)
                shots.append((float(at), np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))))
        finally:
            browser.close()
    return shots


def encode(shots: list[tuple[float, np.ndarray]], codec: str) -> bytes:
    """The grabs as a video with their own (uneven) timestamps, as a screen recorder writes."""
    buffer = io.BytesIO()
    container = "webm" if codec == "libvpx" else "mp4"
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=1000)
        height, width = shots[0][1].shape[:2]
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.options = {"crf": "28"} if codec == "libx264" else {
            "crf": "30", "b": "1M", "deadline": "realtime", "cpu-used": "8"}
        last = -1
        for at, rgb in shots:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            pts = max(round(at * 1000), last + 1)
            frame.pts, last = pts, pts
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buffer.getvalue()


def recaptured(path: Path, recipe: Recipe) -> Path:
    """The recapture of clip `path` by `recipe`, made once and cached."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    suffix = "webm" if recipe.codec == "libvpx" else "mp4"
    target = cache_dir() / "recaptures" / f"{path.stem}-{digest}-{recipe.name}-v{VERSION}.{suffix}"
    if not target.is_file():
        data = encode(grab(path, recipe), recipe.codec)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".tmp")
        partial.write_bytes(data)
        partial.replace(target)
    return target
