"""The hostile corpus: every input the hardening issue reproduced (and their neighbours), made
by code, never committed as binaries. Each case names the route it attacks and the 4xx
status it must get.

    python tests/security/hostile.py OUT_DIR     # writes every case's files, for other tools
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@dataclass(frozen=True)
class Case:
    name: str
    route: str
    """detect, identify, verify, liveness-video, liveness-frames or events."""
    files: tuple[bytes, ...]
    """The upload(s): one image, two for verify, several frames, one video; none for events."""
    statuses: frozenset[int]
    """What the server may answer (all 4xx)."""
    content_type: str = "image/jpeg"
    path: str = ""
    """For events: the path requested."""


def encoded(img: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height over a tiny IDAT: a pixel bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + png_chunk(b"IEND", b""))


def palette_png_without_plte() -> bytes:
    """Colour type 3 with its PLTE chunk cut out (PIL asserts on it)."""
    data = encoded(Image.new("P", (16, 16)), "PNG")
    at = data.index(b"PLTE") - 4
    length = struct.unpack(">I", data[at:at + 4])[0]
    return data[:at] + data[at + 12 + length:]


def one_bit_png(side: int) -> bytes:
    """side x side at 1 bit a pixel: ~5 KB for 6324 px, 40 MP when decoded."""
    return encoded(Image.new("1", (side, side)), "PNG", optimize=True)


def face_on_wide_canvas(width: int) -> bytes:
    """obama.jpg's face on a black canvas `width` px wide: a face beyond OpenCV's 32,767."""
    face = Image.open(FIXTURES / "obama.jpg").convert("RGB")
    face.thumbnail((400, 400))
    canvas = Image.new("RGB", (width, face.height))
    canvas.paste(face, (width // 2, 0))
    return encoded(canvas, "JPEG", quality=70)


def video(codec: str, container: str, width: int, height: int, frames: int) -> bytes:
    """A grey clip encoded in memory."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        still = np.full((height, width, 3), 128, np.uint8)
        for _ in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(still, format="rgb24")))
        out.mux(stream.encode())
    return buffer.getvalue()


SDP = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
       b"m=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n")
PLAYLIST = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
CONCAT = b"ffconcat version 1.0\nfile '/etc/passwd'\n"


def cases() -> list[Case]:
    """The corpus, built in a few seconds."""
    jpeg = (FIXTURES / "obama.jpg").read_bytes()
    refused, bad, big = frozenset({415}), frozenset({422}), frozenset({413})
    tiny = [Case(f"{n}-byte upload", route, (b"\xff\x89R"[:n],), bad)
            for n in (1, 2, 3) for route in ("detect", "identify", "verify")]
    bit = one_bit_png(6324)
    webp = encoded(Image.new("RGB", (6300, 6300)), "WEBP", lossless=True)
    return [
        *tiny,
        Case("palette PNG without PLTE", "detect", (palette_png_without_plte(),), bad,
             "image/png"),
        Case("palette PNG without PLTE", "identify", (palette_png_without_plte(),), bad,
             "image/png"),
        Case("face 32,800 px wide", "detect", (face_on_wide_canvas(32_800),), big),
        Case("face 32,800 px wide", "verify", (face_on_wide_canvas(32_800), jpeg), big),
        Case("PNG header of 60000x60000", "identify", (png_claiming(60_000, 60_000),), big,
             "image/png"),
        Case("PNG header of 65000x1000", "detect", (png_claiming(65_000, 1_000),), big,
             "image/png"),
        Case("truncated JPEG", "verify", (jpeg[:len(jpeg) // 3], jpeg), bad),
        Case("24 frames of a 6324 px 1-bit PNG", "liveness-frames", (bit,) * 24, big,
             "image/png"),
        Case("6300 px WebP frames", "liveness-frames", (webp,) * 10, big, "image/webp"),
        Case("SDP file as a video", "liveness-video", (SDP,), refused, "video/mp4"),
        Case("HLS playlist as a video", "liveness-video", (PLAYLIST,), refused, "video/mp4"),
        Case("ffconcat list as a video", "liveness-video", (CONCAT,), refused, "video/mp4"),
        Case("MPEG-TS container", "liveness-video", (video("mpeg2video", "mpegts", 64, 64, 3),),
             refused, "video/mp2t"),
        Case("MJPEG in Matroska", "liveness-video", (video("mjpeg", "matroska", 64, 64, 3),),
             refused, "video/webm"),
        Case("H.264 6000x6000", "liveness-video", (video("libx264", "mp4", 6000, 6000, 1),),
             big, "video/mp4"),
        Case("truncated MP4", "liveness-video", (video("libx264", "mp4", 64, 64, 5)[:200],),
             bad, "video/mp4"),
        Case("event id past 2^63", "events", (), frozenset({404}),
             path="/v1/events/9223372036854775808"),
    ]


def files_of(case: Case) -> dict[str, bytes]:
    """File name -> bytes, to write the corpus out."""
    stem = "".join(c if c.isalnum() else "-" for c in f"{case.route}-{case.name}")
    return {f"{stem}-{i}": data for i, data in enumerate(case.files)}


def main(argv: list[str], write: Callable[[Path, bytes], object] = Path.write_bytes) -> None:
    out = Path(argv[1] if len(argv) > 1 else "out/hostile")
    out.mkdir(parents=True, exist_ok=True)
    for case in cases():
        for name, data in files_of(case).items():
            write(out / name, data)
    print(f"wrote the hostile corpus to {out}")


if __name__ == "__main__":
    main(sys.argv)
