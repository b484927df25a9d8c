"""Frames from video files, RTSP/HTTP streams and webcams, through PyAV (FFmpeg).

Live sources (network streams, webcams) reconnect with exponential backoff when they drop or
end; files end at their end. Frames are sampled to at most `fps` per second, by presentation
time for files and by wall clock for live sources.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import av
import numpy as np

from facelens.errors import FacelensError

T = TypeVar("T")

log = logging.getLogger("facelens.video")
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://",
                "srt://")


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
    return uri.startswith(LIVE_SCHEMES) or uri.startswith("/dev/video")


class VideoSource:
    def __init__(self, uri: str, *, fps: float | None = None, max_retries: int | None = None,
                 max_backoff_s: float = 10.0, timeout_s: float = 10.0,
                 stop: threading.Event | None = None) -> None:
        self.uri, self.fps, self.max_retries = uri, fps, max_retries
        self.max_backoff_s, self.timeout_s = max_backoff_s, timeout_s
        self.stop = stop or threading.Event()
        self.live = is_live(uri)
        self.reconnects = 0

    def _open(self) -> av.container.InputContainer:
        options = {"rtsp_transport": "tcp"} if self.uri.startswith("rtsp") else {}
        fmt = "v4l2" if self.uri.startswith("/dev/video") else None
        return av.open(self.uri, format=fmt, options=options,
                       timeout=(self.timeout_s, self.timeout_s))

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
                if not self.live:
                    raise SourceError(f"{self.uri}: {e}") from e
                reason = f"{type(e).__name__}: {e}"
            failures += 1
            if self.max_retries is not None and failures > self.max_retries:
                raise SourceError(f"{self.uri}: gave up after {failures - 1} reconnects "
                                  f"({reason})")
            log.warning("camera source %s dropped (%s); reconnecting in %.1f s",
                        self.uri, reason, backoff)
            self.reconnects += 1
            if self.stop.wait(backoff):
                return
            backoff = min(backoff * 2, self.max_backoff_s)
