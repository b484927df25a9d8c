"""CCTV-like degradation of a photo: shrink so the eyes are a set distance apart, blur, JPEG.

The protocol of issue #30: the 250² LFW image shrunk to 112² (eyes ~18 px apart), Gaussian
blur σ 0.8, JPEG quality 35. Levels name the inter-ocular distance they aim at. Everything
here is a pure function of the pixels and the level: no randomness, so a degraded folder is
the same on every run and machine (OpenCV's resize, blur and JPEG codec are deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Level:
    name: str
    interocular_px: float
    """Eye distance the shrunk face is given."""
    blur_sigma: float
    jpeg_quality: int


LEVELS = {level.name: level for level in (
    Level("cctv-24", 24.0, 0.8, 40),
    Level("cctv-18", 18.0, 0.8, 35),
    Level("cctv-12", 12.0, 0.8, 30),
)}
LEVELS["cctv"] = LEVELS["cctv-18"]

LFW_EYES_PER_WIDTH = 18.0 / 112.0
"""Eye distance over image width in a deep-funneled LFW image (the protocol's 250 → 112 shrink
makes the eyes ~18 px apart): the assumption when the caller does not know the face's eyes."""


def level(name: str) -> Level:
    try:
        return LEVELS[name]
    except KeyError:
        raise ValueError(f"unknown degradation {name!r}; one of {', '.join(LEVELS)}") from None


def degrade(rgb: np.ndarray, chosen: Level, *, interocular_px: float | None = None
            ) -> np.ndarray:
    """`rgb` (uint8 RGB) made CCTV-like at `chosen`. The image is shrunk so a face whose eyes
    are `interocular_px` apart in it (default: an LFW-framed face, `LFW_EYES_PER_WIDTH` of the
    width) ends with `chosen.interocular_px`; images are never enlarged."""
    h, w = rgb.shape[:2]
    eyes = interocular_px if interocular_px is not None else w * LFW_EYES_PER_WIDTH
    scale = min(chosen.interocular_px / max(eyes, 1e-6), 1.0)
    size = (max(round(w * scale), 1), max(round(h * scale), 1))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb.copy()
    if chosen.blur_sigma > 0:
        small = cv2.GaussianBlur(small, (0, 0), chosen.blur_sigma)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, chosen.jpeg_quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
