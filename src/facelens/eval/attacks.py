"""Synthetic presentation attacks built from real faces: a printed photo moved in front of
a camera is a plane seen through a changing homography (poster and print attacks)."""

from __future__ import annotations

import math

import cv2
import numpy as np


def plane_homography(width: int, height: int, *, yaw: float, pitch: float, roll: float,
                     scale: float, center: tuple[float, float], focal: float) -> np.ndarray:
    """The homography that shows a `width`×`height` picture as a flat card turned by
    yaw/pitch/roll (degrees), `scale` pixels per picture pixel at the card's distance, centred
    at `center`, through a pinhole camera of focal length `focal` (pixels)."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    rotation = rz @ rx @ ry
    distance = focal / scale  # the card's distance that makes it `scale` px per pixel
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    card = np.c_[corners - [width / 2, height / 2], np.zeros(4)]
    seen = card @ rotation.T + [0, 0, distance]
    projected = seen[:, :2] / seen[:, 2:] * focal + np.asarray(center)
    return cv2.getPerspectiveTransform(corners.astype(np.float32),
                                       projected.astype(np.float32))


def poster_sequence(backgrounds: list[np.ndarray], picture: np.ndarray, *,
                    center: tuple[float, float], scale: float, seed: int = 0,
                    sway: float = 1.0) -> list[np.ndarray]:
    """`picture` pasted as a flat card into each background frame, its pose drifting smoothly
    (yaw/pitch up to ±25°·sway, roll ±10°·sway, a few pixels of travel): a poster on a moving
    bus, or a print waved at a camera."""
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * math.pi, 5)
    h, w = picture.shape[:2]
    frames = []
    for i, background in enumerate(backgrounds):
        t = i / 30.0
        yaw = 25 * sway * math.sin(0.9 * t + phases[0])
        pitch = 15 * sway * math.sin(0.7 * t + phases[1])
        roll = 10 * sway * math.sin(0.5 * t + phases[2])
        shift = (12 * sway * math.sin(0.4 * t + phases[3]),
                 8 * sway * math.sin(0.6 * t + phases[4]))
        homography = plane_homography(w, h, yaw=yaw, pitch=pitch, roll=roll, scale=scale,
                                      center=(center[0] + shift[0], center[1] + shift[1]),
                                      focal=1.2 * background.shape[1])
        size = (background.shape[1], background.shape[0])
        warped = cv2.warpPerspective(picture, homography, size, flags=cv2.INTER_LINEAR)
        mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), homography, size)
        frame = background.copy()
        frame[mask > 127] = warped[mask > 127]
        frames.append(frame)
    return frames
