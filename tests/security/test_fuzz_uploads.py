"""Mutated uploads against a real server (Hypothesis): small JPEG, PNG, WebP and video seeds
with bytes flipped, inserted and cut, under odd content types, sent to detect, identify,
verify and liveness over one keep-alive connection. No answer may be 5xx and no connection
may drop. Decoding the same inputs in process raises only BadImageError."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import httpx
import pytest
from abuse_support import FUZZ_UPLOADS, Target, upload
from hostile import encoded, video
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facelens.errors import BadImageError
from facelens.liveness.answer import answer_frames
from facelens.vision.decode import load_image

ROUTES = ("detect", "identify", "verify", "liveness-frames", "liveness-video")
TYPES = ("image/jpeg", "IMAGE/JPEG", "image/png", "Image/WebP", "application/octet-stream",
         "video/mp4", "text/plain")


def _seeds() -> dict[str, list[bytes]]:
    face = Image.open(Path(__file__).resolve().parents[1] / "fixtures" / "obama.jpg")
    face.thumbnail((160, 160))
    images = [encoded(face, "JPEG", quality=80), encoded(face, "JPEG", progressive=True),
              encoded(face.convert("P"), "PNG"), encoded(face.convert("RGBA"), "PNG"),
              encoded(face, "WEBP"), encoded(face.convert("L"), "PNG")]
    videos = [video("libx264", "mp4", 64, 64, 4), video("libvpx", "webm", 64, 64, 4)]
    return {"image": images, "video": videos}


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS[kind])))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(("flip", "insert", "delete", "zero-run")))
        if how == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif how == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        else:
            data[at:at + 8] = b"\x00" * 8
        if not data:
            break
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, tuple[bytes, ...], str]:
    route = draw(st.sampled_from(ROUTES))
    kind = "video" if route == "liveness-video" else "image"
    count = draw(st.integers(1, 3)) if route in ("verify", "liveness-frames") else 1
    files = tuple(draw(mutated(kind)) for _ in range(count))
    return route, files, draw(st.sampled_from(TYPES))


def test_fuzzed_uploads_never_get_5xx_or_a_reset(target: Target) -> None:
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=target.url, timeout=120) as client:

        @settings(max_examples=FUZZ_UPLOADS, deadline=None, database=None, derandomize=False,
                  suppress_health_check=list(HealthCheck))
        @given(requests())
        def send(request: tuple[str, tuple[bytes, ...], str]) -> None:
            route, files, content_type = request
            try:
                r = upload(target, client, route, files, content_type)
            except httpx.TransportError as e:  # a reset or a dropped keep-alive
                pytest.fail(f"{route}: connection error {type(e).__name__}: {e}")
            statuses[r.status_code] += 1
            assert r.status_code < 500, (route, r.status_code, r.text)

        send()
    sent = sum(statuses.values())
    report = os.environ.get("FUZZ_REPORT")
    if report:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(json.dumps({"uploads": sent, "statuses": dict(statuses),
                                            "server_errors": 0, "connection_errors": 0}))
    assert sent >= FUZZ_UPLOADS // 2, "Hypothesis stopped short"
    assert target.server.process.poll() is None


@settings(max_examples=max(100, FUZZ_UPLOADS), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=mutated("image"))
def test_decoding_mutated_images_raises_only_bad_image_error(data: bytes) -> None:
    try:
        load_image(data, formats=frozenset({"JPEG", "PNG", "WEBP"}))
        load_image(data, max_side=64)
    except BadImageError:
        pass


@settings(max_examples=max(50, FUZZ_UPLOADS // 4), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=mutated("video"))
def test_decoding_mutated_videos_raises_only_bad_image_error(data: bytes) -> None:
    try:
        frames = answer_frames(data, [], limit_pixels=40_000_000,
                               formats=frozenset({"JPEG"}))
        assert all(max(f.shape[:2]) <= 640 for f in frames)
    except BadImageError:
        pass


def test_seeds_are_valid_before_mutation() -> None:
    """The fuzzer starts from inputs that decode (else it only tests the first check)."""
    for data in SEEDS["image"]:
        assert load_image(io.BytesIO(data).getvalue()).shape[2] == 3
    for data in SEEDS["video"]:
        assert answer_frames(data, [], limit_pixels=10**6, formats=frozenset())
