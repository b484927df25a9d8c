"""The rigid-region cue of depictions (video/depiction.py), followed on every frame of every
track: the face stays glued to a rigid region around it (above and beside the head) that
moves against the scene. A screen held by hand carries the picture's background with the
face; a real head moves against its own, which moves with the scene."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from facelens.geometry import margin_box
from facelens.vision.planarity import follow_points

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


RING_ITERATIONS = 200
"""RANSAC's cap for the ring's homography (OpenCV's default: 2000). A ring over a crowd holds
points on walkers as well as on the scene, so all 2000 rounds ran: 5.5 ms a fit, ~30 ms per
1080p frame of the facenet crowd."""
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
                                        margin_box(box, grey.shape, RING + 1.0))
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
                                           max(1.0, 0.03 * width), maxIters=RING_ITERATIONS)
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
        left, top, right, bottom = margin_box(box, grey.shape, RING)
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
