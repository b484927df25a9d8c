"""Annotated video output (boxes, names, track ids) through PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from facelens.errors import FacelensError
from facelens.vision.draw import draw_labels


class VideoWriteError(FacelensError):
    """The annotated video cannot be written (a folder, no permission, an unknown extension,
    a full disk): exit 2, said before the first frame is processed when it can be."""


class AnnotatedWriter:
    def __init__(self, path: Path, fps: float) -> None:
        self._path = path
        self._created = not path.exists()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # PyAV opens the file only at the first frame: try it now, so an unwritable path
            # fails before a long video is watched (append mode: nothing is lost yet).
            with path.open("ab"):
                pass
            self._container = av.open(str(path), mode="w")
        except (OSError, ValueError, av.FFmpegError) as e:
            self._remove_if_created()
            raise VideoWriteError(f"cannot write the annotated video {path}: {e}") from e
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(
            1001))
        self._stream.pix_fmt = "yuv420p"
        self._opened = False

    def write(self, rgb: np.ndarray, labels: list[tuple[np.ndarray, str, bool]]) -> None:
        if not self._opened:
            self._stream.width, self._stream.height = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
            self._opened = True
        drawn = draw_labels(rgb, labels)[: self._stream.height, : self._stream.width]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(drawn), format="rgb24")
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (OSError, av.FFmpegError) as e:
            raise VideoWriteError(f"cannot write the annotated video {self._path}: {e}") from e

    def close(self) -> None:
        if not self._opened:  # no frame came: leave no empty file behind
            self._container.close()
            self._remove_if_created()
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except (OSError, av.FFmpegError) as e:
            raise VideoWriteError(f"cannot write the annotated video {self._path}: {e}") from e

    def _remove_if_created(self) -> None:
        if self._created:
            self._path.unlink(missing_ok=True)
