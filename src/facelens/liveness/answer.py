"""The frames a liveness answer is judged on: a short video (WebM VP8/VP9, MP4 H.264 or MPEG-4)
sampled down, or still frames (JPEG, PNG, WebP) sent one by one.

An answer costs a fixed memory budget whatever its shape: the container is named from its
first bytes and only two demuxers (Matroska/WebM, MP4) with four decoders ever see it, from
memory (no protocol, so nothing opens a file or a socket); every frame is shrunk to
JUDGED_SIDE as it is decoded, one at a time; frames, frame size and the pixels decoded in all
are capped.
"""

from __future__ import annotations

import io
import itertools

import av
import numpy as np

from facelens.errors import (
    BadImageError,
    FacelensError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from facelens.video.source import evenly_spaced
from facelens.vision.decode import image_size, load_image

MAX_FRAMES = 90
"""Frames judged per video answer (a longer video is sampled down to this many)."""
MAX_STILLS = 180
"""Frames judged per answer sent as stills: 10 fps over a session's prompts (the last may come
15 s in, liveness/sessions.py) and its reaction window."""
MAX_DECODED = 1800
"""Frames decoded at most (a minute at 30 fps): an answer is a few seconds long."""
FRAME_PIXELS = 3840 * 2160
"""Largest frame accepted (4K UHD): phone and webcam captures are smaller."""
DECODED_PIXELS = 400_000_000
"""Pixels decoded in all (13 s of 1080p at 30 fps; 48 4K frames): bounds the time an answer
holds a worker, not its memory."""
MAX_ANSWER_S = 60.0
"""The longest recording an answer may describe (frame times beyond are refused)."""
JUDGED_SIDE = 640
"""Every frame is shrunk to at most this side as it is decoded; the judge needs no more."""
DEMUXERS = {b"\x1a\x45\xdf\xa3": "matroska", b"ftyp": "mp4"}
"""Container magic -> the one demuxer allowed to parse it (WebM is Matroska)."""
CODECS = frozenset({"h264", "vp8", "vp9", "mpeg4"})
"""What browsers record (MediaRecorder) and phones export; HEVC and AV1 are not needed yet."""


def container_of(data: bytes) -> str:
    """The demuxer for `data`, named from its magic bytes (never FFmpeg's probe, which also
    knows SDP, concat and playlists that open sockets and files)."""
    if data[:4] in DEMUXERS:
        return DEMUXERS[data[:4]]
    if data[4:8] in DEMUXERS:  # ISO BMFF: a box size, then "ftyp"
        return DEMUXERS[data[4:8]]
    raise UnsupportedImageError("unsupported video container (accepted: WebM, MP4)")


def video_frames(data: bytes, limit_pixels: int) -> list[np.ndarray]:
    """Decode a video into at most MAX_FRAMES evenly spaced frames, each at most JUDGED_SIDE."""
    return timed_video_frames(data, limit_pixels)[0]


def timed_video_frames(data: bytes, limit_pixels: int) -> tuple[list[np.ndarray], list[float]]:
    """Decode a video into at most MAX_FRAMES evenly spaced frames, each at most JUDGED_SIDE,
    and each one's time (s, from its timestamp). The kept frames are thinned by half (and the
    stride doubled) whenever they reach twice the limit; decoding stops at MAX_DECODED frames
    or DECODED_PIXELS pixels."""
    demuxer = container_of(data)
    kept: list[np.ndarray] = []
    times: list[float] = []
    stride, decoded = 1, 0
    try:
        # skip_frame: FFmpeg's stream probe decodes no frame (a 6000x6000 one costs 0.4 s);
        # sizes come from the header and are checked before anything is decoded.
        with av.open(io.BytesIO(data), format=demuxer,
                     stream_options=[{"skip_frame": "all"}]) as container:
            if not container.streams.video:
                raise BadImageError("the video has no video stream")
            stream = container.streams.video[0]
            codec = stream.codec_context  # None when FFmpeg has no decoder for the stream
            if codec is None or codec.name not in CODECS:
                raise UnsupportedImageError(
                    f"unsupported video codec {codec.name if codec else '(no decoder)'} "
                    "(accepted: H.264, VP8, VP9, MPEG-4)")
            _check_frame(codec.width, codec.height, limit_pixels)  # from the header: no decode
            codec.thread_count = 1  # one frame in flight: the decoder's memory stays small
            for number, frame in enumerate(container.decode(stream)):
                _check_frame(frame.width, frame.height, limit_pixels)
                decoded += frame.width * frame.height
                if number >= MAX_DECODED or decoded > DECODED_PIXELS:
                    break
                if number % stride == 0:
                    kept.append(_judged(frame))
                    times.append(float(frame.time) if frame.time is not None
                                 else number / float(stream.average_rate or 30))
                if len(kept) >= 2 * MAX_FRAMES:
                    kept, times, stride = kept[::2], times[::2], stride * 2
    except (av.FFmpegError, IndexError, ValueError, MemoryError) as e:
        raise BadImageError(f"not a readable video: {type(e).__name__}") from e
    if not kept:
        raise BadImageError("the video has no frames")
    return evenly_spaced(kept, MAX_FRAMES), evenly_spaced(times, MAX_FRAMES)


def _check_frame(width: int, height: int, limit_pixels: int) -> None:
    # From the header, then per frame: a stream may change size mid-way.
    if width * height > min(limit_pixels, FRAME_PIXELS):
        raise ImageTooLargeError(f"video frames of {width}x{height} are over the "
                                 f"{min(limit_pixels, FRAME_PIXELS) / 1e6:g} MP limit")


def _judged(frame: av.VideoFrame) -> np.ndarray:
    scale = min(1.0, JUDGED_SIDE / max(frame.width, frame.height))
    width, height = max(2, round(frame.width * scale)), max(2, round(frame.height * scale))
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


def answer_frames(video: bytes | None, images: list[bytes], *, limit_pixels: int,
                  formats: frozenset[str]) -> list[np.ndarray]:
    """The frames of an answer (`timed_answer` without the times)."""
    return timed_answer(video, images, None, limit_pixels=limit_pixels, formats=formats)[0]


class BadTimesError(FacelensError):
    """The times sent with an answer's frames are not one per frame, in recording order."""


def check_times(times: list[float] | None, frames: int) -> None:
    """Refuse `times` (seconds into the recording, None: not sent) unless they give one time
    per frame of `frames`, in recording order: checked before a session is spent on them."""
    if times is not None and (len(times) != frames or any(
            later < earlier for earlier, later in itertools.pairwise(times))):
        raise BadTimesError(f"times must give one time per frame ({len(times)} for {frames} "
                            f"frames), in recording order")


def timed_answer(video: bytes | None, images: list[bytes], times: list[float] | None, *,
                 limit_pixels: int, formats: frozenset[str]
                 ) -> tuple[list[np.ndarray], list[float] | None]:
    """The frames of an answer and when each was recorded (s into the recording): `video` if
    given (times from its timestamps), else the first MAX_STILLS of `images`, each in one of
    `formats` and shrunk to JUDGED_SIDE as decoded, with `times` as the client sent them (one
    per image, in order) or None. Any unreadable frame refuses the answer."""
    if video is not None:
        return timed_video_frames(video, limit_pixels)
    check_times(times, len(images))
    images = images[:MAX_STILLS]
    times = times[:MAX_STILLS] if times is not None else None
    # Summed from the headers before any frame is decoded: the decoding time is bounded too.
    announced = sum(w * h for w, h in filter(None, (image_size(d, formats) for d in images)))
    if announced > DECODED_PIXELS:
        raise ImageTooLargeError(f"the frames hold {announced / 1e6:.0f} MP, over the "
                                 f"{DECODED_PIXELS / 1e6:g} MP an answer may decode")
    return [load_image(data, max_pixels=min(limit_pixels, FRAME_PIXELS), formats=formats,
                       max_side=JUDGED_SIDE)
            for data in images], times
