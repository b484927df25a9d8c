"""The bezel cue of depictions (video/depiction.py): a closed frame around the face. Four
straight edges, one on each side, clear of the face and meeting at corners, each unbroken
from corner to corner: a screen's or a picture's border. A doorway or a window behind a head
is not closed: the body hides its lower part."""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np

FACE_PX = 40.0
"""The face is scaled to this size before edges are sought (lengths below are in faces)."""
REACH = 6.0
"""How far from the face (in face sizes) a bezel edge is sought."""
CLEARANCE = 0.3
"""A bezel edge lies at least this far (face sizes) outside the face box."""
MAX_LINES = 6
"""Edges tried per side (Hough's strongest first) when closing a frame."""
CLOSED = 0.9
"""Share of each side of a closed frame, corner to corner, that must be edge pixels (a hand
or the glare may break the rest)."""
PARALLEL = math.tan(math.radians(8))
"""Opposite sides of a frame differ in slope by at most this (a screen seen at a slant)."""
COVERED = 0.9
"""Share of the edge's run past the face that must be edge pixels (a bezel is unbroken)."""
MAX_TILT = 25.0
"""Degrees from horizontal/vertical an edge may lean (a hand-held screen is not square on)."""


def _edge_lines(rgb: np.ndarray, face_box: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, dict[str, list[tuple[float, float]]]]:
    """The edge map (dilated: a slanted edge is a staircase) of the region within REACH of
    the face, scaled so the face is FACE_PX, the face box in it, and per side of the face the
    straight edges that run past the whole face (COVERED of it, a quarter face beyond each
    end) clear of it by CLEARANCE, as (offset, slope): y = offset + slope·x for "top" and
    "bottom", x = offset + slope·y for "left" and "right"."""
    x1, y1, x2, y2 = (float(v) for v in face_box)
    size = max(x2 - x1, y2 - y1, 1.0)
    h, w = rgb.shape[:2]
    left, top = int(max(0.0, x1 - REACH * size)), int(max(0.0, y1 - REACH * size))
    right, bottom = int(min(w, x2 + REACH * size)), int(min(h, y2 + REACH * size))
    scale = FACE_PX / size
    face = np.array([x1 - left, y1 - top, x2 - left, y2 - top]) * scale
    sides: dict[str, list[tuple[float, float]]] = {s: [] for s in ("top", "bottom", "left",
                                                                   "right")}
    if right - left < 2 or bottom - top < 2:
        return np.zeros((1, 1), bool), face, sides
    grey = cv2.cvtColor(rgb[top:bottom, left:right], cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, None, fx=scale, fy=scale,
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    edges = cv2.Canny(cv2.GaussianBlur(grey, (3, 3), 0), 40, 120)
    near = cv2.dilate(edges, np.ones((3, 3), np.uint8)) > 0
    lines = cv2.HoughLines(edges, 1, np.pi / 180, round(FACE_PX))
    centre, clear = (face[:2] + face[2:]) / 2, CLEARANCE * FACE_PX
    lean = math.radians(MAX_TILT)
    for rho, theta in ([] if lines is None else lines[:, 0].astype(float)):
        # axis 1: a horizontal edge (its normal near vertical), y over x; axis 0: vertical
        axis = 1 if abs(theta - np.pi / 2) <= lean else 0 if min(theta, np.pi - theta) <= lean \
            else None
        if axis is None:
            continue
        normal = (math.cos(theta), math.sin(theta))
        line = (rho / normal[axis], -normal[1 - axis] / normal[axis])
        span = (face[1 - axis] - FACE_PX / 4, face[3 - axis] + FACE_PX / 4)
        if _coverage(near, line, axis, *span) < COVERED:
            continue
        offset = line[0] + line[1] * centre[1 - axis]
        if offset < face[axis] - clear:
            sides[("left", "top")[axis]].append(line)
        elif offset > face[axis + 2] + clear:
            sides[("right", "bottom")[axis]].append(line)
    return near, face, sides


def _coverage(near: np.ndarray, line: tuple[float, float], axis: int, start: float,
              stop: float) -> float:
    """Share of the line's pixels from `start` to `stop` (along x for axis 1, y for 0) on an
    edge; 0 when any lies outside the region (an edge not seen whole is not counted)."""
    along = np.arange(start, stop)
    across = line[0] + line[1] * along
    cols, rows = (along, across) if axis == 1 else (across, along)
    cols, rows = np.round(cols).astype(int), np.round(rows).astype(int)
    inside = (rows >= 0) & (rows < near.shape[0]) & (cols >= 0) & (cols < near.shape[1])
    if len(along) == 0 or not inside.all():
        return 0.0
    return float(near[rows, cols].mean())


def bezel_sides(rgb: np.ndarray, face_box: np.ndarray) -> set[str]:
    """The sides of the face with a straight edge running past it (see `_edge_lines`)."""
    return {side for side, lines in _edge_lines(rgb, face_box)[2].items() if lines}


def bezel(rgb: np.ndarray, face_box: np.ndarray) -> bool:
    """A closed frame around the face: one edge on each side, opposite ones near parallel,
    each unbroken (CLOSED of it) from corner to corner, the corners being where they meet. A
    doorway or a window behind a head is not closed: the body hides its lower part."""
    near, _, sides = _edge_lines(rgb, face_box)
    top, bottom, left, right = (sides[s][:MAX_LINES] for s in ("top", "bottom", "left",
                                                                 "right"))
    for t, b, lf, r in itertools.product(top, bottom, left, right):
        if abs(t[1] - b[1]) > PARALLEL or abs(lf[1] - r[1]) > PARALLEL:
            continue
        corners = {(h, v): _meet(h, v) for h in (t, b) for v in (lf, r)}
        runs = [(t, 1, corners[t, lf][0], corners[t, r][0]),
                (b, 1, corners[b, lf][0], corners[b, r][0]),
                (lf, 0, corners[t, lf][1], corners[b, lf][1]),
                (r, 0, corners[t, r][1], corners[b, r][1])]
        if all(_coverage(near, line, axis, lo, hi) >= CLOSED
               for line, axis, lo, hi in runs):
            return True
    return False


def _meet(horizontal: tuple[float, float], vertical: tuple[float, float]
          ) -> tuple[float, float]:
    """Where y = a + b·x meets x = c + d·y (never parallel: one leans < 25° from each axis)."""
    a, b = horizontal
    c, d = vertical
    y = (a + b * c) / (1 - b * d)
    return c + d * y, y


def framed(rgb: np.ndarray, face_box: np.ndarray) -> str | None:
    """"framed" when a bezel edge runs on all four sides of the face."""
    return "framed" if bezel(rgb, face_box) else None
