"""Faces shown by something that shows pictures (a phone, monitor, TV, laptop, a printed
page) are depictions, not people. Three cues (any one flags the face); the first two only on
the kept frames of a track about to alert, the third on every frame of every track:

- object: NanoDet (scene/detect.py) finds the phone/TV/laptop/book and the face box lies
  inside it, in a kept frame or in a frame of the last seconds (`ScreenMemory`: the camera
  looks for screens twice a second while faces are in view);
- bezel: a closed frame around the face: four straight edges, one on each side, clear of the
  face and meeting at corners, each unbroken from corner to corner (a screen's or a picture's
  border; a doorway behind a head is not closed, the body hides its foot);
- rigid: the face stays glued to a rigid region around it (above and beside the head) that
  moves against the scene (`RigidRegion`): a screen held by hand carries the picture's
  background with the face; a real head moves against its own.

The learned presentation-attack model `antispoof` is measured (eval/depiction_eval.py) but not
fused: on camera crops it scores real faces as low as made-up screens (docs/decisions.md).
Thresholds were set on real footage only (`facelens eval depiction`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from facelens.scene.detect import DEPICTING, DEPICTING_THRESHOLD, Objects, detect_objects
from facelens.vision.planarity import follow_points

INSIDE = 0.6
"""Share of the face box inside the object's box that makes the face part of the object."""
MAX_FRAME_SHARE = 0.6
"""Boxes covering more of the frame are often NanoDet's low-score guesses at the whole scene…"""
LARGE_THRESHOLD = 0.25
"""…so they count only from this score (a monitor filling most of the view). On the 408 real
faces of the bezel check no box holding a face scored over 0.15 (0.17 mirrored), at any size."""

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

def inside_share(face: np.ndarray, box: np.ndarray) -> float:
    """The share of `face`'s area (x1y1x2y2) that lies inside `box`."""
    w = max(0.0, min(face[2], box[2]) - max(face[0], box[0]))
    h = max(0.0, min(face[3], box[3]) - max(face[1], box[1]))
    area = max((face[2] - face[0]) * (face[3] - face[1]), 1e-6)
    return float(w * h / area)


def screens(rgb: np.ndarray, *, mirrored: bool = False) -> list[tuple[np.ndarray, str]]:
    """(box, name) of every NanoDet phone/TV/laptop/book in the frame that may be a screen
    or a print (`screen_boxes`). `mirrored`: found in the mirror image, boxes given in the
    frame's coordinates (NanoDet's score for a screen changes by up to ~0.1 between the two)."""
    view = np.ascontiguousarray(rgb[:, ::-1]) if mirrored else rgb
    objects = detect_objects(view, DEPICTING_THRESHOLD)
    if mirrored and len(objects):
        width = rgb.shape[1]
        objects = Objects(np.stack([width - objects.boxes[:, 2], objects.boxes[:, 1],
                                    width - objects.boxes[:, 0], objects.boxes[:, 3]], 1),
                          objects.scores, objects.class_ids)
    return screen_boxes(objects, rgb.shape)


def screen_boxes(objects: Objects, frame_shape: tuple[int, ...]
                 ) -> list[tuple[np.ndarray, str]]:
    """(box, name) of the detected `objects` that may be a screen or a print: a phone, TV,
    laptop or book scoring at least DEPICTING_THRESHOLD, LARGE_THRESHOLD for a box over
    MAX_FRAME_SHARE of the frame."""
    objects = objects.of(*DEPICTING)
    frame_area = frame_shape[0] * frame_shape[1]
    return [(box, str(name)) for box, score, name in zip(objects.boxes, objects.scores,
                                                          objects.names, strict=True)
            if score >= DEPICTING_THRESHOLD and (
                (box[2] - box[0]) * (box[3] - box[1]) <= MAX_FRAME_SHARE * frame_area
                or score >= LARGE_THRESHOLD)]


def encloses(box: np.ndarray, face_box: np.ndarray, min_area: float = 1.5) -> bool:
    """The face lies inside `box` (INSIDE of it), which is at least `min_area` × its size."""
    face_area = (face_box[2] - face_box[0]) * (face_box[3] - face_box[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return bool(area > min_area * face_area and inside_share(face_box, box) >= INSIDE)


def enclosing_object(rgb: np.ndarray, face_box: np.ndarray) -> str | None:
    """The name of the screen (`screens`) the face lies inside, if any: in the frame, else in
    its mirror image (a second look; only frames of a track about to alert get here)."""
    for mirrored in (False, True):
        for box, name in screens(rgb, mirrored=mirrored):
            if encloses(box, face_box):
                return name
    return None


SCREEN_SCAN_S = 0.5
"""While faces are in view, the camera's frame is searched for screens at most this often
(video seconds)…"""
SCREEN_MEMORY_S = 10.0
"""…and a screen found counts for this long. NanoDet finds a screen over a busy scene in a
few frames only (a monitor 35% of the frame wide over the facenet crowd: 12 of 92), rarely
the ones a track keeps, so a face inside a screen seen a moment ago is a depiction too."""
SCREEN_MIN_AREA = 3.0
"""A remembered screen is at least this many times the face's area: a box hugging a head
is NanoDet taking the head for a phone (once on the Hamilton clip: 1.8×, score 0.23)."""


@dataclass
class ScreenMemory:
    """The screens one camera's recent frames showed (`screens`), found at most every
    SCREEN_SCAN_S and kept SCREEN_MEMORY_S; forgotten at a scene cut."""

    seen: list[tuple[float, np.ndarray, str]] = field(default_factory=list)
    """(video time, box, name) of each screen found."""
    scanned_at: float = -math.inf
    scans: int = 0
    """NanoDet passes run here (objects detected by the caller are not counted)."""

    def observe(self, time: float, rgb: np.ndarray, detected: Objects | None = None) -> None:
        """Look for screens in the frame if due; `detected`: this frame's objects, already
        found by the street layer (same network, screens kept from the same score), which
        are taken instead of a pass of its own whenever they come."""
        if time < self.scanned_at:  # the source started again (a file looped)
            self.forget()
        if detected is None and time - self.scanned_at < SCREEN_SCAN_S:
            return
        found = screens(rgb) if detected is None else screen_boxes(detected, rgb.shape)
        self.scanned_at, self.scans = time, self.scans + (detected is None)
        self.seen = [s for s in self.seen if time - s[0] <= SCREEN_MEMORY_S]
        self.seen += [(time, box, name) for box, name in found]

    def holding(self, face_box: np.ndarray, time: float) -> str | None:
        """The name of a screen seen within SCREEN_MEMORY_S that holds the face."""
        for seen_at, box, name in self.seen:
            if 0 <= time - seen_at <= SCREEN_MEMORY_S and encloses(box, face_box,
                                                                     SCREEN_MIN_AREA):
                return name
        return None

    def forget(self) -> None:
        self.seen, self.scanned_at = [], -math.inf


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


CUES: dict[str, Callable[[np.ndarray, np.ndarray], str | None]] = {
    "object": enclosing_object, "bezel": framed}
"""Each cue names what shows the face (or None); cheapest-to-trust first."""


def find_depiction(rgb: np.ndarray, face_box: np.ndarray) -> tuple[str, str] | None:
    """(the cue, what shows the face) in this frame, if it is a depiction: ("object", a
    NanoDet object's name) or ("bezel", "framed"); None for a person."""
    for cue, check in CUES.items():
        if found := check(rgb, face_box):
            return cue, found
    return None


# ---------------------------------------------------------------- rigid region (per frame)
BORDER = 0.12
"""The scene's motion is read from this share of the frame along each edge."""
RING = 1.5
"""The region watched around the face reaches this many face sizes beyond its box, above it
and to its sides down to the chin (below is the body, which moves with a real head)…"""
RING_CLEAR = 0.5
"""…and starts this far (face sizes) outside it (the hair moves with a real head too)."""
MIN_RING_POINTS = 24
RESEED = 12
"""Observations before the ring is seeded again (a picture on a screen moves within it)."""
SIDE_POINTS = 3
"""Inliers needed on each of the four sides of the face: the region surrounds it."""
MOVED = 0.1
"""The ring moved against the scene by at least this (face widths) for a fit to count."""
FOLLOWS = 0.15
"""The face's centre lies within this (face widths) of where the ring's motion takes it."""
MIN_GLUED = 3
GLUED_SHARE = 0.6
"""A track is glued to a rigid region when at least MIN_GLUED of its informative fits, and
this share of them, show the face moving with a ring surrounding it."""


SCENE_WIDTH = 480
"""Frames are read at most this wide for the scene's motion (its cost stays flat in size)."""


def scene_motion(previous_grey: np.ndarray, grey: np.ndarray) -> np.ndarray | None:
    """The homography taking the previous frame's scene to this one's, from corner features
    along the frame's edges (BORDER of it), or None when too few are followed."""
    scale = min(1.0, SCENE_WIDTH / grey.shape[1])
    if scale < 1.0:
        size = (SCENE_WIDTH, round(grey.shape[0] * scale))
        previous_grey = cv2.resize(previous_grey, size, interpolation=cv2.INTER_AREA)
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    h, w = grey.shape
    mask = np.full(grey.shape, 255, np.uint8)
    mask[round(BORDER * h):round((1 - BORDER) * h), round(BORDER * w):round((1 - BORDER) * w)] = 0
    points = cv2.goodFeaturesToTrack(previous_grey, maxCorners=200, qualityLevel=0.01,
                                     minDistance=max(4, w // 80), mask=mask)
    if points is None or len(points) < MIN_RING_POINTS:
        return None
    moved, keep = follow_points(previous_grey, grey, points)
    if keep.sum() < MIN_RING_POINTS:
        return None
    homography, _ = cv2.findHomography(points.reshape(-1, 2)[keep], moved[keep], cv2.RANSAC,
                                       2.0 * scale)
    if homography is None:
        return None
    to_small = np.diag([scale, scale, 1.0])
    return np.linalg.inv(to_small) @ homography @ to_small


@dataclass
class RigidRegion:
    """Is the face glued to a rigid region moving against the scene? Corner features in a
    ring around the face are followed frame to frame (Lucas-Kanade); from the ring's seeding
    to each later observation one homography is fitted to them (RANSAC). A face on a phone or
    monitor moves with the screen around it, which moves against the scene; a real head sits
    before a background that moves with the scene (or, for the body below it, does not
    surround the face), and a real face moves against it."""

    reference: np.ndarray | None = None
    current: np.ndarray | None = None
    reference_box: np.ndarray | None = None
    scene: np.ndarray = field(default_factory=lambda: np.eye(3))
    """The scene's motion since the seeding (the frame-to-frame homographies chained)."""
    observed: int = 0
    fits: list[tuple[float, float, int, float]] = field(default_factory=list)
    """(ring motion against the scene, face off the ring's motion: both in face widths,
    fewest inliers on a side, inlier share) per observation where the ring moved."""

    def observe(self, previous_grey: np.ndarray | None, grey: np.ndarray, box: np.ndarray,
                scene_step: np.ndarray | None) -> None:
        """Follow the ring from `previous_grey` into `grey` (the face at `box`; the scene
        moved by `scene_step` between them) and record the fit; else seed it again."""
        width = float(max(box[2] - box[0], 1.0))
        self.observed += 1
        if (self.current is not None and previous_grey is not None and scene_step is not None
                and self.observed <= RESEED):
            # Only the face's surroundings (a face's worth of room to move): a 1080p frame
            # costs what a small one does.
            moved, keep = follow_points(previous_grey, grey, self.current,
                                        _window(box, RING + 1.0, grey.shape))
            assert self.reference is not None
            self.reference, self.current = self.reference[keep], moved[keep]
            self.scene = scene_step @ self.scene
            if len(self.current) >= MIN_RING_POINTS:
                self._fit(box, width)
                return
        self._seed(grey, box)

    def _fit(self, box: np.ndarray, width: float) -> None:
        assert self.reference is not None and self.current is not None
        assert self.reference_box is not None
        ring, inliers = cv2.findHomography(self.reference, self.current, cv2.RANSAC,
                                           max(1.0, 0.03 * width))
        if ring is None or inliers is None or not inliers.any():
            return  # points collapsed (Lucas-Kanade lost them): RANSAC keeps none
        inlying = self.reference[inliers.ravel() == 1]
        by_ring = cv2.perspectiveTransform(inlying.reshape(-1, 1, 2), ring).reshape(-1, 2)
        by_scene = cv2.perspectiveTransform(inlying.reshape(-1, 1, 2), self.scene).reshape(-1, 2)
        against = float(np.median(np.linalg.norm(by_ring - by_scene, axis=1))) / width
        if against < MOVED:
            return
        x1, y1, x2, _ = self.reference_box
        clear = RING_CLEAR * max(x2 - x1, 1.0)
        sides = [inlying[:, 1] < y1 - clear, inlying[:, 0] < x1 - clear,
                 inlying[:, 0] > x2 + clear]
        centre = ((self.reference_box[:2] + self.reference_box[2:]) / 2).reshape(1, 1, 2)
        carried = cv2.perspectiveTransform(centre, ring).reshape(2)
        off = float(np.linalg.norm(carried - (box[:2] + box[2:]) / 2)) / width
        self.fits.append((against, off, int(min(s.sum() for s in sides)),
                          float(inliers.mean())))

    def _seed(self, grey: np.ndarray, box: np.ndarray) -> None:
        self.observed, self.scene = 1, np.eye(3)
        x1, y1, x2, y2 = (float(v) for v in box)
        size = max(x2 - x1, y2 - y1, 1.0)
        left, top, right, bottom = _window(box, RING, grey.shape)
        mask = np.zeros((bottom - top, right - left), np.uint8)
        outer = [x1 - RING * size, y1 - RING * size, x2 + RING * size, y2]
        inner = [x1 - RING_CLEAR * size, y1 - RING_CLEAR * size, x2 + RING_CLEAR * size, y2]
        for value, (a, b, c, d) in ((255, outer), (0, inner)):
            mask[max(round(b) - top, 0):max(round(d) - top, 0),
                 max(round(a) - left, 0):max(round(c) - left, 0)] = value
        points = None if mask.size == 0 else cv2.goodFeaturesToTrack(
            grey[top:bottom, left:right], maxCorners=120, qualityLevel=0.01,
            minDistance=max(2, round(size / 8)), mask=mask)
        if points is None or len(points) < MIN_RING_POINTS:
            self.reference = self.current = self.reference_box = None
            return
        self.reference = self.current = points.reshape(-1, 2) + np.array([left, top],
                                                                          np.float32)
        self.reference_box = np.asarray(box, float).copy()

    def glued_fits(self) -> list[bool]:
        """Per informative fit: did the face move with a ring that surrounds it?"""
        return [off <= FOLLOWS and fewest >= SIDE_POINTS for _, off, fewest, _ in self.fits]

    @property
    def rigid(self) -> bool:
        glued = self.glued_fits()
        return sum(glued) >= MIN_GLUED and sum(glued) >= GLUED_SHARE * len(glued)


def _window(box: np.ndarray, reach: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The face box grown by `reach` face sizes on every side, within the frame (px)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    size = max(x2 - x1, y2 - y1, 1.0)
    h, w = shape[:2]
    return (int(min(max(x1 - reach * size, 0), w)), int(min(max(y1 - reach * size, 0), h)),
            int(min(max(x2 + reach * size, 0), w)), int(min(max(y2 + reach * size, 0), h)))


class RegionFollower:
    """The rigid region of every track of a frame sequence, frame by frame, as the watch
    pipeline follows them (for evaluation and tests, which track without a Watcher)."""

    def __init__(self) -> None:
        self.regions: dict[int, RigidRegion] = {}
        self._last: dict[int, int] = {}
        self._previous: np.ndarray | None = None
        self._tick = 0

    def observe(self, grey: np.ndarray, seen: list[tuple[int, np.ndarray]]) -> None:
        """One processed frame: (track id, face box) of each track seen in it."""
        previous = self._previous
        step = scene_motion(previous, grey) if seen and previous is not None else None
        for track_id, box in seen:
            consecutive = self._last.get(track_id) == self._tick - 1
            self.regions.setdefault(track_id, RigidRegion()).observe(
                previous if consecutive else None, grey, box, step)
            self._last[track_id] = self._tick
        self._previous, self._tick = grey, self._tick + 1
