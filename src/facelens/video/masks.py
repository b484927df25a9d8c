"""A camera's zones and masks applied to its frames: what lies outside every zone, or inside a
mask, is blanked before anything is detected, so no face there is tracked, matched or kept
(the preview shows the blanked frame, so an operator sees what the camera ignores)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Polygon = Sequence[Sequence[float]]
BLANK = 128
"""Mid-grey: no edge, no face, and plainly not scenery in the preview."""


class FrameMask:
    """Built once per camera; the pixel mask is drawn once per frame size."""

    def __init__(self, zones: Sequence[Polygon], masks: Sequence[Polygon]) -> None:
        self.zones, self.masks = list(zones), list(masks)
        self._hidden: dict[tuple[int, int], np.ndarray] = {}

    @property
    def active(self) -> bool:
        return bool(self.zones or self.masks)

    def hidden(self, height: int, width: int) -> np.ndarray:
        """True where the frame is not looked at."""
        key = (height, width)
        if key not in self._hidden:
            seen = np.full((height, width), 0 if self.zones else 1, np.uint8)
            for zone in self.zones:
                cv2.fillPoly(seen, [_pixels(zone, width, height)], 1)
            for mask in self.masks:
                cv2.fillPoly(seen, [_pixels(mask, width, height)], 0)
            self._hidden[key] = seen == 0
        return self._hidden[key]

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """`rgb` with what is not looked at blanked (the same array when nothing is)."""
        if not self.active:
            return rgb
        out = rgb.copy()
        out[self.hidden(*rgb.shape[:2])] = BLANK
        return out


def _pixels(polygon: Polygon, width: int, height: int) -> np.ndarray:
    points = np.asarray(polygon, np.float64) * (width, height)
    return np.round(points).astype(np.int32).reshape(-1, 1, 2)
