"""Descriptions of people and vehicles: colours from one small palette, each with a confidence.

No body-attribute model ships in a registry package, so colours are a vote in HSV: every
pixel of a region (a vehicle's body, a person's upper or lower clothing band) is named by the
palette entry it falls in, and the name with the most pixels wins; its confidence is its share
of the vote. Grey-scale pixels (low saturation) are named by brightness alone, so chrome and
glass (bright, unsaturated) pull a dark car towards grey or white: the vehicle region is the
box's middle band, below the windows and above the wheels, where paint dominates.

Perceived sex and adult/child are not guessed here from colours or box shape: the street
pipeline takes perceived sex from a large enough face (the face engine) and leaves adult/child
unknown (no pose model is converted yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PALETTE = ("black", "white", "grey", "red", "orange", "yellow", "green", "blue", "purple",
           "brown")
"""The one fixed palette every colour attribute names."""
UNKNOWN = "unknown"
# Hue bands (OpenCV hue, 0..180) of the chromatic palette entries.
HUE_BANDS = (("red", 0, 8), ("orange", 8, 20), ("yellow", 20, 34), ("green", 34, 85),
             ("blue", 85, 130), ("purple", 130, 160), ("red", 160, 181))
MIN_SATURATION = 70
"""Below this saturation (0..255) a pixel is named by brightness alone."""
DARK, BRIGHT = 60, 155
"""Value (0..255) below which a pixel is black, above which an unsaturated one is white."""
MIN_PIXELS = 64
VEHICLE_BAND = (0.35, 0.8)
"""Rows of a vehicle box (share of its height) whose pixels vote: the body, not the windows
or the road."""
UPPER_BAND, LOWER_BAND = (0.2, 0.5), (0.55, 0.9)
"""Rows of a standing person's box for the upper and lower clothing."""
SIDE_TRIM = 0.2
"""Share of a box's width dropped on each side: the background around a body."""


@dataclass(frozen=True)
class Attribute:
    value: str
    confidence: float
    """In [0, 1]; 0 when `value` is unknown."""

    def as_dict(self) -> dict[str, object]:
        return {"value": self.value, "confidence": round(self.confidence, 3)}


NOT_KNOWN = Attribute(UNKNOWN, 0.0)


def colour_names(rgb_pixels: np.ndarray) -> np.ndarray:
    """The palette index of every pixel of an (N, 3) uint8 RGB array."""
    hsv = cv2.cvtColor(rgb_pixels.reshape(-1, 1, 3), cv2.COLOR_RGB2HSV).reshape(-1, 3)
    hue, sat, val = (hsv[:, i].astype(np.int32) for i in range(3))
    names = np.full(len(hsv), PALETTE.index("grey"), np.int64)
    chromatic = (sat >= MIN_SATURATION) & (val >= DARK)
    for name, low, high in HUE_BANDS:
        names[chromatic & (hue >= low) & (hue < high)] = PALETTE.index(name)
    # Dark, little saturated orange-red is brown.
    brown = chromatic & (hue < 20) & (val < 150) & (sat < 190)
    names[brown] = PALETTE.index("brown")
    grey = ~chromatic
    names[grey & (val < DARK)] = PALETTE.index("black")
    names[grey & (val >= BRIGHT)] = PALETTE.index("white")
    return names


def dominant_colour(rgb: np.ndarray, box: np.ndarray, rows: tuple[float, float]) -> Attribute:
    """The palette colour of the band `rows` (shares of the box height) of `box`, its sides
    trimmed by SIDE_TRIM; NOT_KNOWN when the band holds fewer than MIN_PIXELS pixels."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    left, right = int(max(0, x1 + SIDE_TRIM * bw)), int(min(w, x2 - SIDE_TRIM * bw))
    top, bottom = int(max(0, y1 + rows[0] * bh)), int(min(h, y1 + rows[1] * bh))
    region = rgb[top:bottom, left:right]
    if region.size < 3 * MIN_PIXELS:
        return NOT_KNOWN
    step = max(1, int(np.sqrt(region.shape[0] * region.shape[1] / 4096)))  # ~4k pixels vote
    votes = np.bincount(colour_names(np.ascontiguousarray(region[::step, ::step]).reshape(
        -1, 3)), minlength=len(PALETTE))
    best = int(votes.argmax())
    return Attribute(PALETTE[best], float(votes[best] / votes.sum()))


def describe_vehicle(rgb: np.ndarray, box: np.ndarray, kind: str, score: float
                     ) -> dict[str, Attribute]:
    """Type (the detector's class and score) and body colour."""
    return {"type": Attribute(kind, float(score)),
            "colour": dominant_colour(rgb, box, VEHICLE_BAND)}


def describe_person(rgb: np.ndarray, box: np.ndarray, frame_height: int
                    ) -> dict[str, Attribute]:
    """Upper and lower clothing colours; the lower band is unknown when the box touches the
    frame's bottom edge (legs cut off)."""
    whole = float(box[3]) < frame_height - 2
    return {"upper": dominant_colour(rgb, box, UPPER_BAND),
            "lower": dominant_colour(rgb, box, LOWER_BAND) if whole else NOT_KNOWN}
