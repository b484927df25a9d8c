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


def _smooth_pose(rng: np.random.Generator, count: int, sway: float) -> list[tuple[float, ...]]:
    """(yaw, pitch, roll, dx, dy) per frame: slow random sinusoids, like a hand-held card."""
    amplitude = np.array([35, 20, 12, 15, 10]) * sway
    speed = rng.uniform(0.5, 1.5, 5)
    phase = rng.uniform(0, 2 * math.pi, 5)
    return [tuple(amplitude * np.sin(speed * i / 15 + phase)) for i in range(count)]


def print_attack(background: np.ndarray, face_photo: np.ndarray, *, frames: int,
                 rng: np.random.Generator, face_px: float = 110.0) -> list[np.ndarray]:
    """A still photo printed on paper (duller, grainy, slightly blurred) held in front of the
    camera: moved by random smooth homographies under a changing light."""
    paper = cv2.GaussianBlur(face_photo, (0, 0), rng.uniform(0.4, 1.0)).astype(np.float32)
    paper = 40 + 0.75 * paper + rng.normal(0, 4, paper.shape)  # ink on paper: less contrast
    grey = paper.mean(axis=2, keepdims=True)
    paper = np.clip(grey + rng.uniform(0.6, 0.9) * (paper - grey), 0, 255).astype(np.uint8)
    h, w = background.shape[:2]
    scale = face_px / (0.45 * face_photo.shape[1])
    out = []
    for i, (yaw, pitch, roll, dx, dy) in enumerate(_smooth_pose(rng, frames, 1.0)):
        homography = plane_homography(paper.shape[1], paper.shape[0], yaw=yaw, pitch=pitch,
                                      roll=roll, scale=scale, center=(w / 2 + dx, h / 2 + dy),
                                      focal=1.2 * w)
        frame = paste_plane(background, paper, homography)
        light = 0.8 + 0.3 * math.sin(i / 7 + rng.uniform(0, 6))  # a lamp, a passing shadow
        out.append(np.clip(frame.astype(np.float32) * light, 0, 255).astype(np.uint8))
    return out


def replay_attack(background: np.ndarray, video: list[np.ndarray], *,
                  rng: np.random.Generator, screen_px: float = 300.0) -> list[np.ndarray]:
    """Real video re-shown on a screen held in front of the camera: a gamma shift, a black
    bezel, the screen's own motion, and moiré: the screen's pixel grid is sampled by the
    camera's pixels (point-sampled through the homography, so it aliases as a real camera
    does)."""
    h, w = background.shape[:2]
    out = []
    gamma = rng.uniform(0.7, 1.4)
    pitch = rng.uniform(1.0, 2.5)  # screen pixel pitch, in pixels of the shown video
    depth = rng.uniform(0.12, 0.25)
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    camera_pixels = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w, np.float32)])
    for (yaw, pitch_deg, roll, dx, dy), rgb in zip(_smooth_pose(rng, len(video), 0.5), video,
                                                   strict=True):
        screen = np.clip(255 * (rgb.astype(np.float32) / 255) ** gamma, 0, 255).astype(np.uint8)
        bezel = max(6, screen.shape[1] // 30)
        screen = cv2.copyMakeBorder(screen, bezel, bezel, bezel, bezel, cv2.BORDER_CONSTANT,
                                    value=(12, 12, 12))
        homography = plane_homography(screen.shape[1], screen.shape[0], yaw=yaw,
                                      pitch=pitch_deg, roll=roll,
                                      scale=screen_px / screen.shape[1],
                                      center=(w / 2 + dx, h / 2 + dy), focal=1.2 * w)
        frame = paste_plane(background, screen, homography).astype(np.float32)
        where = np.linalg.inv(homography) @ camera_pixels
        u, v = (where[:2] / where[2]).reshape(2, h, w)
        grid = (1 - depth) + depth * (np.cos(2 * math.pi * u / pitch)
                                      * np.cos(2 * math.pi * v / pitch)) ** 2
        inside = (u >= 0) & (v >= 0) & (u < screen.shape[1]) & (v < screen.shape[0])
        frame[inside] *= grid[inside][:, None]
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return out


def paste_plane(background: np.ndarray, picture: np.ndarray, homography: np.ndarray
                ) -> np.ndarray:
    """`picture` warped by `homography` over a copy of `background` (opaque where it lands)."""
    size = (background.shape[1], background.shape[0])
    warped = cv2.warpPerspective(picture, homography, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full(picture.shape[:2], 255, np.uint8), homography, size)
    frame = background.copy()
    frame[mask > 127] = warped[mask > 127]
    return frame
