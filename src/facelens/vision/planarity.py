"""Poster and screen suppression: is a face a flat picture moving as one rigid plane?

Corner features inside the face are tracked (pyramidal Lucas-Kanade) from a reference
observation through the track's later observations; at each one a homography from the
reference points is fitted with RANSAC. A printed face (on a bus, a poster, a screen) moves
as a plane, so one homography explains every point to within the tracker's noise, however it
moves, and a still picture is the trivial case. A real head turns in 3D (the nose moves
against the cheeks) and its mouth and eyes move on their own, so the fit degrades as the
track goes on. Too few features (a small or blurred face) means no evidence, not a verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from facelens.geometry import margin_box

MIN_POINTS = 12
MIN_FITS = 5
DEFORMED = 0.03
"""A fit is informative when no similarity explains the points to within this fraction of the
face width: the face was foreshortened, turned or changed expression."""
PLANE_RATIO = 0.3
"""…and planar when one homography explains them this much better (median of homography
error / similarity error). Measured: synthetic posters 0.15–0.26, real faces in the Hamilton
clip 0.36–1.4 (tests/test_video.py keeps both sides checked)."""
STILL_FITS, STILL = 90, 0.01
"""Static: this many observations without any point moving 1% of the face width."""
FOLLOW_REACH = 2.0
"""Points are followed within the face box grown by this many face sizes (a face moves less
between processed frames; LK's coarsest level reads ~60 px round a point), not the frame."""
SEED_RIM = 4
"""Pixels round the box that the corner measure (3×3 Sobel, 3×3 block, 3×3 maximum) reads."""
HOMOGRAPHY_ITERATIONS = 200
"""RANSAC's cap for cameras (OpenCV's default, 2000, is what liveness keeps: its figures were
measured with it). A real head's points fit no plane well, so RANSAC ran all 2000 rounds: 8 ms
per fit, a third of the watch loop's CPU on the Hamilton clip. On the watch loop's 4,471 fits
of 56 tracks (16 synthetic posters; the Hamilton clip, liveness and street clips) every track's
ratio under 0.5 was unchanged to 3 digits by the cap (posters 0.106–0.290, the nearest real
face 0.383); above it real faces moved by up to ±0.22, as likely up as down."""


def tracking_image(grey: np.ndarray) -> np.ndarray:
    """Local contrast normalisation: features keep their look when the light changes (a lamp,
    a passing shadow, a screen's brightness), which plain Lucas-Kanade cannot follow."""
    image = grey.astype(np.float32)
    mean = cv2.GaussianBlur(image, (0, 0), 6)
    spread = np.sqrt(cv2.GaussianBlur((image - mean) ** 2, (0, 0), 6))
    return np.clip(128 + 48 * (image - mean) / (spread + 4), 0, 255).astype(np.uint8)


def follow_points(previous_grey: np.ndarray, grey: np.ndarray, points: np.ndarray,
                  window: tuple[int, int, int, int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """`points` (N, 2 or N, 1, 2; frame px) followed from `previous_grey` into `grey` by
    pyramidal Lucas-Kanade (15 px window, 3 levels): their new places (N, 2) and which were
    followed (N,) bool. With `window` (left, top, right, bottom) only that part of both frames
    is searched (a 1080p frame then costs what its face's surroundings do)."""
    left, top, right, bottom = window or (0, 0, grey.shape[1], grey.shape[0])
    offset = np.array([left, top], np.float32)
    moved, status, _ = cv2.calcOpticalFlowPyrLK(
        previous_grey[top:bottom, left:right], grey[top:bottom, left:right],
        (points.reshape(-1, 2) - offset).reshape(-1, 1, 2).astype(np.float32), None,
        winSize=(15, 15), maxLevel=3)
    return moved.reshape(-1, 2) + offset, status.ravel() == 1


@dataclass
class PlanarityEvidence:
    deformed: float = DEFORMED
    plane_ratio: float = PLANE_RATIO
    min_fits: int = MIN_FITS
    iterations: int = HOMOGRAPHY_ITERATIONS
    reference: np.ndarray | None = None
    """(N, 2) feature positions at the reference observation."""
    current: np.ndarray | None = None
    fits: list[tuple[float, float, float]] = field(default_factory=list)
    """(homography residual, similarity residual, largest displacement), each over the face
    width, from the reference to each later observation. The homography's is NaN when the
    fit is not informative: nothing reads it then, and it is the costly part."""

    def observe(self, previous_grey: np.ndarray | None, grey: np.ndarray, box: np.ndarray
                ) -> None:
        """Follow the points from the previous processed frame into `grey` (the face at
        `box`), fit the homography from the reference, and record its residual. Cameras pass
        plain grey frames (measured better on posters); liveness passes tracking_image()s,
        whose attacks change the light."""
        width = float(box[2] - box[0])
        if (self.current is not None and previous_grey is not None
                and previous_grey.shape == grey.shape):
            moved, keep = follow_points(previous_grey, grey, self.current,
                                        margin_box(box, grey.shape, FOLLOW_REACH))
            assert self.reference is not None
            self.reference, self.current = self.reference[keep], moved[keep]
            inside = _inside(self.current, box, margin=0.15)
            self.reference, self.current = self.reference[inside], self.current[inside]
            if len(self.current) >= MIN_POINTS:
                fit = _fit(self.reference, self.current, width, self.deformed,
                           self.iterations)
                if fit is not None:
                    self.fits.append(fit)
                    return
        self._seed(grey, box)

    def _seed(self, grey: np.ndarray, box: np.ndarray) -> None:
        x1, y1, x2, y2 = np.round(box).astype(int).tolist()
        # Corners inside the box, found in the box and a rim as wide as the corner measure's
        # reach: the whole frame's corners up to float rounding (a 1080p frame: 19 ms a seed).
        left, top = max(x1 - SEED_RIM, 0), max(y1 - SEED_RIM, 0)
        region = grey[top:max(y2 + SEED_RIM, 0), left:max(x2 + SEED_RIM, 0)]
        mask = np.zeros(region.shape, np.uint8)
        mask[max(y1, 0) - top:max(y2, 0) - top, max(x1, 0) - left:max(x2, 0) - left] = 255
        points = None if not mask.any() else cv2.goodFeaturesToTrack(
            region, maxCorners=80, qualityLevel=0.01, minDistance=max(2, int((x2 - x1) / 25)),
            mask=mask)
        if points is None or len(points) < MIN_POINTS:
            self.reference = self.current = None
            return
        self.reference = self.current = points.reshape(-1, 2) + np.float32([left, top])

    @property
    def informative(self) -> list[tuple[float, float, float]]:
        """Fits where the face changed shape (not only moved, scaled or turned in its own
        plane): only these can tell a flat card from a head."""
        return [f for f in self.fits if f[1] >= self.deformed]

    @property
    def decided(self) -> bool:
        return len(self.informative) >= self.min_fits or self.static

    @property
    def static(self) -> bool:
        """Never moved against the scene: a long track whose points all stayed put."""
        return len(self.fits) >= STILL_FITS and max(f[2] for f in self.fits) < STILL

    @property
    def planar(self) -> bool:
        """True when the evidence says "a flat picture": still for long, or reshaped as a
        plane is reshaped (one homography explains it far better than any similarity)."""
        informative = self.informative
        if len(informative) >= self.min_fits:
            return float(np.median([h / d for h, d, _ in informative])) < self.plane_ratio
        return self.static


def _fit(reference: np.ndarray, current: np.ndarray, width: float, deformed: float,
         iterations: int) -> tuple[float, float, float] | None:
    """(homography residual, similarity residual, largest displacement) over the face width;
    the homography is fitted (RANSAC, at most `iterations` rounds) only when the similarity
    leaves at least `deformed`."""
    similarity, _ = cv2.estimateAffinePartial2D(reference, current, method=cv2.LMEDS)
    if similarity is None:
        return None
    scale = max(width, 1.0)
    by_similarity = reference @ similarity[:, :2].T + similarity[:, 2]
    by_similarity_error = float(np.median(np.linalg.norm(by_similarity - current, axis=1))) / scale
    moved = float(np.max(np.linalg.norm(current - reference, axis=1))) / scale
    if by_similarity_error < deformed:
        return math.nan, by_similarity_error, moved
    homography, _ = cv2.findHomography(reference, current, cv2.RANSAC, max(1.0, 0.02 * width),
                                       maxIters=iterations)
    if homography is None:
        return None
    by_plane = cv2.perspectiveTransform(reference.reshape(-1, 1, 2), homography).reshape(-1, 2)
    return (float(np.median(np.linalg.norm(by_plane - current, axis=1))) / scale,
            by_similarity_error, moved)


def _inside(points: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    return ((points[:, 0] >= box[0] - margin * w) & (points[:, 0] <= box[2] + margin * w)
            & (points[:, 1] >= box[1] - margin * h) & (points[:, 1] <= box[3] + margin * h))
