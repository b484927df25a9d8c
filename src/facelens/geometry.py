"""Geometry and vector helpers every stage shares: box overlap, crops with a margin, unit
vectors. One home, so no stage keeps its own copy (Frigate's `util` is the model)."""

from __future__ import annotations

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (N, 4) and b (M, 4), x1 y1 x2 y2."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def inside_share(box: np.ndarray, outer: np.ndarray) -> float:
    """The share of `box`'s area (x1y1x2y2) that lies inside `outer`."""
    w = max(0.0, min(box[2], outer[2]) - max(box[0], outer[0]))
    h = max(0.0, min(box[3], outer[3]) - max(box[1], outer[1]))
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-6)
    return float(w * h / area)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to unit length, as float32; zero vectors stay zero."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def margin_box(box: np.ndarray, shape: tuple[int, ...], margin: float) -> tuple[int, int, int, int]:
    """`box` grown by `margin` × its longer side on every side, clipped to an image of
    `shape` (both ends: a box beyond the edge gives an empty region, never a reversed one):
    (left, top, right, bottom) in whole pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    pad = margin * max(x2 - x1, y2 - y1, 1.0)
    h, w = shape[:2]
    return (int(min(max(x1 - pad, 0), w)), int(min(max(y1 - pad, 0), h)),
            int(min(max(x2 + pad, 0), w)), int(min(max(y2 + pad, 0), h)))


def crop_with_margin(rgb: np.ndarray, box: np.ndarray, margin: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The region of `margin_box` (a copy) and its top-left corner (x, y) in `rgb`."""
    left, top, right, bottom = margin_box(box, rgb.shape, margin)
    return rgb[top:bottom, left:right].copy(), np.array([left, top], np.float32)
