"""Frames from video files, RTSP/HTTP streams and webcams, through PyAV (FFmpeg).

Live sources (network streams, webcams) reconnect with exponential backoff when they drop or
end; files end at their end. Frames are sampled to at most `fps` per second, by presentation
time for files and by wall clock for live sources.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import av
import numpy as np

from facelens.errors import FacelensError

T = TypeVar("T")

log = logging.getLogger("facelens.video")
LIVE_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
"""The network sources a camera may name: RTSP(S), and HTTP(S) for MJPEG and HLS."""
WEBCAM = re.compile(r"^/dev/video\d{1,3}$")
PROTOCOLS = {"rtsp": "rtsp,rtp,udp,tcp", "rtsps": "rtsps,rtsp,rtp,udp,tcp,tls",
             "http": "http,tcp", "https": "https,http,tcp,tls,crypto", "file": "file"}
"""FFmpeg's protocol_whitelist per source kind: an HLS playlist or an RTSP server cannot
send the reader on to files, pipes or other protocols."""
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]*@")


class SourceError(FacelensError):
    """The source cannot be opened or read (and, if live, did not come back)."""


@dataclass(frozen=True)
class Frame:
    index: int
    """Position among the frames delivered (after sampling), from 0."""
    time: float
    """Seconds from the start of the source (or of watching, for live sources)."""
    rgb: np.ndarray


def evenly_spaced(items: list[T], most: int) -> list[T]:
    """At most `most` of `items`, evenly spaced, first and last kept."""
    if len(items) <= most:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, most).round().astype(int)]


def is_live(uri: str) -> bool:
    return uri.startswith(LIVE_SCHEMES) or bool(WEBCAM.match(uri))


def redacted(text: str) -> str:
    """`text` with the user and password of every URL in it replaced by ***."""
    return _CREDENTIALS.sub("***@", text)


def check_source(uri: str, media_dir: Path | None) -> str:
    """The source a camera may use for `uri`: an RTSP(S) or HTTP(S) stream to a non-local
    host, a webcam (/dev/videoN), or a file inside `media_dir` (returned as its absolute
    path; it must exist). Anything else raises SourceError; a file outside the media folder
    gets the same answer whether or not it exists (no probe of the server's disk)."""
    if uri.startswith(LIVE_SCHEMES):
        host = urlsplit(uri).hostname or ""
        if _local(host):
            raise SourceError(f"{redacted(uri)}: streams from this machine's own or link-local "
                              "addresses are refused")
        return uri
    if WEBCAM.match(uri):
        return uri
    refused = SourceError("a camera source is rtsp://, rtsps://, http(s)://, /dev/videoN or a "
                          "video file inside the media folder (setting media_dir)")
    # Any ':' could name an FFmpeg protocol (concat:, subfile,,…:, data:, tcp:, …).
    if media_dir is None or ":" in uri or "\0" in uri:
        raise refused
    folder = media_dir.resolve()
    missing = SourceError(f"{uri}: no such video file in the media folder")
    try:  # a name the file system cannot hold (over 255 bytes) raises: no such file either
        path = (folder / uri).resolve()
        if not path.is_relative_to(folder):
            raise refused
        if not path.is_file():  # inside the media folder: saying so reveals nothing else
            raise missing
    except OSError as e:
        raise missing from e
    return str(path)


def _local(host: str) -> bool:
    if host.lower() in ("localhost", "") or host.lower().endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name: resolved by FFmpeg, which the whitelist keeps to its protocol
    return address.is_loopback or address.is_link_local or address.is_unspecified


class VideoSource:
    def __init__(self, uri: str, *, fps: float | None = None, max_retries: int | None = None,
                 max_backoff_s: float = 10.0, timeout_s: float = 10.0,
                 stop: threading.Event | None = None) -> None:
        self.uri, self.fps, self.max_retries = uri, fps, max_retries
        self.max_backoff_s, self.timeout_s = max_backoff_s, timeout_s
        self.stop = stop or threading.Event()
        self.live = is_live(uri)
        self.shown = redacted(uri)
        """The source as messages and logs show it (no credentials)."""
        self.reconnects = 0
        self.connected = False
        """Whether frames are arriving now (False while a live source reconnects)."""

    def _open(self) -> av.container.InputContainer:
        if WEBCAM.match(self.uri):
            return av.open(self.uri, format="v4l2", timeout=(self.timeout_s, self.timeout_s))
        scheme = self.uri.split("://", 1)[0] if "://" in self.uri else "file"
        options = {"protocol_whitelist": PROTOCOLS.get(scheme, "file")}
        if scheme.startswith("rtsp"):
            options["rtsp_transport"] = "tcp"
        # A path goes to FFmpeg as file:…, so no part of its name can pick a protocol.
        target = self.uri if scheme in PROTOCOLS and scheme != "file" else f"file:{self.uri}"
        return av.open(target, options=options, timeout=(self.timeout_s, self.timeout_s))

    def frames(self) -> Iterator[Frame]:
        delivered, next_time, failures, backoff = 0, 0.0, 0, 0.5
        started = time.monotonic()
        while not self.stop.is_set():
            try:
                with self._open() as container:
                    for frame in container.decode(video=0):
                        if self.stop.is_set():
                            return
                        failures, backoff = 0, 0.5  # it works again
                        self.connected = True
                        at = (time.monotonic() - started if self.live or frame.time is None
                              else float(frame.time))
                        if self.fps and at + 1e-6 < next_time:
                            continue
                        next_time = max(next_time + 1 / self.fps, at) if self.fps else at
                        yield Frame(delivered, at, frame.to_ndarray(format="rgb24"))
                        delivered += 1
                if not self.live:
                    return
                reason = "the stream ended"
            except (av.FFmpegError, OSError, EOFError) as e:
                why = redacted(str(e))  # FFmpeg's messages quote the URL
                if not self.live:
                    raise SourceError(f"{self.shown}: {why}") from e
                reason = f"{type(e).__name__}: {why}"
            self.connected = False
            failures += 1
            if self.max_retries is not None and failures > self.max_retries:
                raise SourceError(f"{self.shown}: gave up after {failures - 1} reconnects "
                                  f"({reason})")
            log.warning("camera source %s dropped (%s); reconnecting in %.1f s",
                        self.shown, reason, backoff)
            self.reconnects += 1
            if self.stop.wait(backoff):
                return
            backoff = min(backoff * 2, self.max_backoff_s)
