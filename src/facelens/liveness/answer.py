"""The frames a liveness answer is judged on: a short video (MP4, WebM, …) sampled down, or
still frames sent one by one."""

from __future__ import annotations

import io

import av
import numpy as np

from facelens.errors import BadImageError
from facelens.video.source import evenly_spaced
from facelens.vision.decode import load_image

MAX_FRAMES = 90
"""Frames judged per answer (a longer video is sampled down to this many)."""
MAX_DECODED = 1800
"""Frames decoded at most (a minute at 30 fps): an answer is a few seconds long."""


def video_frames(data: bytes, limit_pixels: int) -> list[np.ndarray]:
    """Decode a video into at most MAX_FRAMES evenly spaced frames. Memory stays bounded
    however long the video: the kept frames are thinned by half (and the stride doubled)
    whenever they reach twice the limit; decoding stops at MAX_DECODED."""
    kept: list[np.ndarray] = []
    stride = 1
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            if stream.codec_context.width * stream.codec_context.height > limit_pixels:
                raise BadImageError("video frames are over the pixel limit")
            for number, frame in enumerate(container.decode(stream)):
                if number >= MAX_DECODED:
                    break
                if number % stride == 0:
                    kept.append(frame.to_ndarray(format="rgb24"))
                if len(kept) >= 2 * MAX_FRAMES:
                    kept, stride = kept[::2], stride * 2
    except (av.FFmpegError, IndexError, ValueError) as e:
        raise BadImageError(f"not a readable video: {type(e).__name__}") from e
    return evenly_spaced(kept, MAX_FRAMES)


def answer_frames(video: bytes | None, images: list[bytes], *, limit_pixels: int,
                  formats: frozenset[str]) -> list[np.ndarray]:
    """The frames of an answer: `video` if given, else the first MAX_FRAMES of `images`
    (each in one of `formats`; any unreadable one refuses the answer)."""
    if video is not None:
        return video_frames(video, limit_pixels)
    return [load_image(data, max_pixels=limit_pixels, formats=formats)
            for data in images[:MAX_FRAMES]]
