"""Per-face quality: size, sharpness, pose and exposure → one score in [0, 1] and reasons.

Pose comes from the 5 landmarks only (no 3D model), so it is coarse: good enough to refuse a
face turned away, not to measure angles precisely.
"""

from __future__ import annotations

import cv2
import numpy as np

from facelens.face import Face, Quality
from facelens.vision.align import TEMPLATE, align, align_matrix

# Where the nose sits between the eye line (0) and the mouth line (1) on a frontal face.
_FRONTAL_NOSE_DROP = (TEMPLATE[2, 1] - TEMPLATE[:2, 1].mean()) / (
    TEMPLATE[3:, 1].mean() - TEMPLATE[:2, 1].mean())
_NOSE_DEPTH = 0.8
_CENTRE_ROWS, _CENTRE_COLS = (24, 104), (20, 92)
"""The chip's centre: skin and features, little background."""
MAX_OUTSIDE = 0.2
"""A face is cut by the image edge when more of its centre than this lies outside. Measured on
tests/fixtures/obama.jpg cut upright through the face, fusion similarity to the whole photo:
through the cheek 17% outside (0.89), the near eye 28% (0.86), the nose 39% (0.74), the far eye
48% (0.55). lfw-dev: see docs/decisions.md."""


def _ramp(value: float, bad: float, good: float) -> float:
    """0 at `bad`, 1 at `good`, linear between (works in either direction)."""
    return float(np.clip((value - bad) / (good - bad), 0.0, 1.0))


def head_pose_from_landmarks(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from the 5 landmarks, measured in the de-rotated face
    frame: coarse, but free (vision/mesh.py's `head_pose_from_mesh` runs FaceMesh)."""
    dx, dy = np.asarray(landmarks[1], np.float64) - landmarks[0]
    roll = float(np.degrees(np.arctan2(dy, dx)))
    # Undo roll and scale with the alignment transform, then compare with the template.
    m = align_matrix(landmarks)
    pts = np.column_stack([landmarks, np.ones(5)]) @ m.T
    eye_mid, mouth_mid = pts[:2].mean(0), pts[3:].mean(0)
    half_span = max(abs(pts[1, 0] - pts[0, 0]) / 2, 1e-6)
    # The nose tip stands ~0.8 half-eye-spans in front of the eyes: its sideways shift over
    # the (foreshortened) half span is 0.8·tan(yaw); likewise for pitch over the face height.
    yaw = float(np.degrees(np.arctan((pts[2, 0] - eye_mid[0]) / half_span / _NOSE_DEPTH)))
    drop = (pts[2, 1] - eye_mid[1]) / max(mouth_mid[1] - eye_mid[1], 1e-6)
    pitch = float(np.degrees(np.arctan((drop - _FRONTAL_NOSE_DROP) / _NOSE_DEPTH * 2)))
    return yaw, pitch, roll


def outside_share(shape: tuple[int, ...], landmarks: np.ndarray) -> float:
    """Share of the aligned chip's centre (eyes, nose, mouth, cheeks) that lies beyond the
    image's edges: a face cut by the edge. Alignment fills that part with black."""
    inverse = cv2.invertAffineTransform(align_matrix(landmarks))
    ys, xs = np.mgrid[_CENTRE_ROWS[0]:_CENTRE_ROWS[1]:4, _CENTRE_COLS[0]:_CENTRE_COLS[1]:4]
    points = np.column_stack([xs.ravel(), ys.ravel(), np.ones(xs.size)]) @ inverse.T
    height, width = shape[:2]
    outside = ((points[:, 0] < 0) | (points[:, 0] > width - 1)
               | (points[:, 1] < 0) | (points[:, 1] > height - 1))
    return float(outside.mean())


def assess(rgb: np.ndarray, face: Face, *, chip: np.ndarray | None = None,
           min_interocular_px: float = 20.0, min_sharpness: float = 25.0,
           max_yaw: float = 40.0, max_pitch: float = 30.0) -> Quality:
    """Measure one face and say what, if anything, makes it a poor sample. `chip` is the
    face's 112×112 aligned chip when the caller has cut it already."""
    landmarks = face.landmarks
    interocular = float(np.linalg.norm(landmarks[1] - landmarks[0]))
    yaw, pitch, roll = head_pose_from_landmarks(landmarks)
    grey = cv2.cvtColor(align(rgb, landmarks) if chip is None else chip, cv2.COLOR_RGB2GRAY)
    centre = grey[slice(*_CENTRE_ROWS), slice(*_CENTRE_COLS)]
    # Sharpness is judged at the face's own resolution: a small face upsampled to 112 px
    # is blurred by the upsampling, which is a size problem, reported as such.
    sharpness = float(cv2.Laplacian(centre, cv2.CV_64F).var())
    brightness = float(centre.mean())

    reasons = []
    if interocular < min_interocular_px:
        reasons.append(
            f"too small (eyes {interocular:.0f} px apart, need {min_interocular_px:.0f})")
    if sharpness < min_sharpness:
        reasons.append("blurred")
    if abs(yaw) > max_yaw:
        reasons.append(f"turned away (yaw {yaw:+.0f}°)")
    if abs(pitch) > max_pitch:
        reasons.append(f"looking up or down (pitch {pitch:+.0f}°)")
    outside = outside_share(rgb.shape, landmarks)
    if outside > MAX_OUTSIDE:
        reasons.append(f"cut by the image edge ({outside:.0%} of the face outside)")
    if brightness < 40:
        reasons.append("too dark")
    elif brightness > 215:
        reasons.append("overexposed")

    score = (_ramp(interocular, min_interocular_px * 0.5, min_interocular_px * 2)
             * _ramp(sharpness, min_sharpness * 0.4, min_sharpness * 3)
             * _ramp(abs(yaw), 70, 15) * _ramp(abs(pitch), 50, 15)
             * _ramp(abs(brightness - 128), 110, 60))
    return Quality(score=score, interocular_px=interocular, sharpness=sharpness, yaw=yaw,
                   pitch=pitch, roll=roll, brightness=brightness, reasons=tuple(reasons))
