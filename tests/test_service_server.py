"""`facelens serve` as users run it: a real uvicorn process on a free port. The first start
prints an admin key once; hostile uploads get 4xx while the server stays up with bounded
memory; keys made with the CLI work over HTTP and stop working when revoked."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from served import CLI, Server, printed_key, serve_env, start_server, stop


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    root = tmp_path_factory.mktemp("served")
    running = start_server(root / "data", root)
    key = printed_key(running)
    assert key, "the first start must print an admin key"
    yield running, key
    stop(running)


# --------------------------------------------------------------------------- hostile corpus
def _png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with a tiny (truncated) IDAT: a bomb header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = zlib.compress(b"\x00" * 1024)
    body += struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(
        b"IDAT" + idat))
    return b"\x89PNG\r\n\x1a\n" + body


def _jpeg_bytes(fixtures: Path) -> bytes:
    return (fixtures / "obama.jpg").read_bytes()


def hostile_corpus(fixtures: Path) -> list[tuple[str, bytes, str, int, str]]:
    """(name, bytes, declared content type, expected status, expected error code)."""
    jpeg = _jpeg_bytes(fixtures)
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    webp_bomb = io.BytesIO()
    Image.new("RGB", (16, 16)).save(webp_bomb, "WEBP")
    return [
        ("truncated.jpg", jpeg[: len(jpeg) // 3], "image/jpeg", 422, "bad_image"),
        ("header-only.jpg", jpeg[:600], "image/jpeg", 422, "bad_image"),
        ("bomb.png", _png_header(100_000, 100_000), "image/png", 413, "image_too_large"),
        ("wide-bomb.png", _png_header(65_000, 1_000), "image/png", 413, "image_too_large"),
        ("polyglot.gif", b"GIF89a/*" + gif.getvalue()[8:] + b"*/=1;alert(1)//", "image/gif",
         415, "unsupported_media_type"),
        ("polyglot-as-jpeg.jpg", b"GIF89a/*" + gif.getvalue()[8:] + b"*/alert(1)",
         "image/jpeg", 415, "unsupported_media_type"),
        ("page.html", b"<html><script>alert(1)</script></html>", "image/jpeg", 422,
         "bad_image"),
        ("empty.jpg", b"", "image/jpeg", 422, "bad_image"),
        ("note.txt", b"hello", "text/plain", 415, "unsupported_media_type"),
        ("zip-in-jpeg.jpg", b"PK\x03\x04" + b"\x00" * 200, "image/jpeg", 422, "bad_image"),
    ]


def test_hostile_uploads_get_4xx_and_the_server_stays_up(server: tuple[Server, str],
                                                        fixtures_dir: Path) -> None:
    running, key = server
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=running.url, headers=headers, timeout=60) as c:
        warm = c.post("/v1/detect", files={"image": ("o.jpg", _jpeg_bytes(fixtures_dir),
                                                     "image/jpeg")})
        assert warm.status_code == 200 and len(warm.json()["faces"]) == 1
        baseline = running.rss_mb()
        for _round in range(3):
            for name, data, ctype, status, code in hostile_corpus(fixtures_dir):
                r = c.post("/v1/detect", files={"image": (name, data, ctype)})
                assert (r.status_code, r.json()["error"]["code"]) == (status, code), name
            # 20 MB: refused by its Content-Length, and when streamed without one
            big = b"\xff\xd8" + os.urandom(20 * 2**20)
            r = c.post("/v1/detect", files={"image": ("big.jpg", big, "image/jpeg")})
            assert (r.status_code, r.json()["error"]["code"]) == (413, "body_too_large")
            body = (b'--x\r\nContent-Disposition: form-data; name="image"; filename="b.jpg"'
                    b"\r\nContent-Type: image/jpeg\r\n\r\n" + big + b"\r\n--x--\r\n")
            r = c.post("/v1/detect", content=iter([body[i:i + 2**20]
                                                   for i in range(0, len(body), 2**20)]),
                       headers={"Content-Type": "multipart/form-data; boundary=x"})
            assert (r.status_code, r.json()["error"]["code"]) == (413, "body_too_large")
            r = c.post("/v1/detect", json={"image": "https://example.com/face.jpg"})
            assert r.status_code == 422  # never fetches URLs: a JSON body is no upload
            assert c.get("/healthz").status_code == 200
        grown = running.rss_mb() - baseline
        assert grown < 150, f"memory grew by {grown:.0f} MB over the hostile corpus"
        after = c.post("/v1/detect", files={"image": ("o.jpg", _jpeg_bytes(fixtures_dir),
                                                      "image/jpeg")})
        assert after.status_code == 200 and running.process.poll() is None


def test_keys_from_the_cli_work_until_revoked(server: tuple[Server, str]) -> None:
    running, _ = server
    made = subprocess.run([str(CLI), "keys", "create", "door-reader", "--scope", "identify",
                           "--json"], env=serve_env(running.data_dir), capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    me = httpx.get(f"{running.url}/v1/me", headers={"X-API-Key": key["key"]}).json()
    assert me == {"id": key["id"], "name": "door-reader", "scopes": ["identify"],
                  "attributes": True}  # whether the server estimates age and sex
    listed = subprocess.run([str(CLI), "keys", "list", "--json"], env=serve_env(running.data_dir),
                            capture_output=True, text=True, timeout=120)
    assert key["key"] not in listed.stdout and key["id"] in listed.stdout
    revoked = subprocess.run([str(CLI), "keys", "revoke", key["id"]],
                             env=serve_env(running.data_dir), capture_output=True, text=True,
                             timeout=120)
    assert revoked.returncode == 0, revoked.stderr
    # another process revoked it: the server's key cache forgets within KeyStore.CACHE_S
    deadline = time.monotonic() + 15
    while (gone := httpx.get(f"{running.url}/v1/me", headers={"X-API-Key": key["key"]})
           ).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert gone.status_code == 401
    bad = subprocess.run([str(CLI), "keys", "create", "x", "--scope", "root"],
                         env=serve_env(running.data_dir), capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "unknown scope" in bad.stderr


def test_console_shell_is_served_without_data(server: tuple[Server, str]) -> None:
    running, _ = server
    page = httpx.get(f"{running.url}/", follow_redirects=True)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert httpx.get(f"{running.url}/v1/galleries").status_code == 401


def test_a_second_start_prints_no_key(tmp_path: Path) -> None:
    first = start_server(tmp_path / "data", tmp_path)
    key = printed_key(first)
    stop(first)
    second = start_server(tmp_path / "data", tmp_path)
    try:
        assert key and printed_key(second) is None
        assert httpx.get(f"{second.url}/v1/me",
                         headers={"Authorization": f"Bearer {key}"}).status_code == 200
    finally:
        stop(second)
    logs = "".join(p.read_text() for p in tmp_path.glob("serve-*.err"))
    assert key not in logs  # the key goes to stdout once, never to the log


def test_a_stop_does_not_wait_for_open_live_streams(tmp_path: Path) -> None:
    """The console's alert stream never ends by itself: SIGTERM waited for it (minutes)."""
    running = start_server(tmp_path / "data", tmp_path)
    key = printed_key(running)
    with httpx.Client(timeout=30) as client, client.stream(
            "GET", f"{running.url}/v1/events/stream",
            headers={"Authorization": f"Bearer {key}"}) as stream:
        assert stream.status_code == 200
        started = time.monotonic()
        running.process.terminate()
        try:
            running.process.wait(20)
        finally:
            stop(running)
        assert time.monotonic() - started < 15
