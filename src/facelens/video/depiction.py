"""Faces shown by something that shows pictures (a phone, monitor, TV, laptop, a printed
page) are depictions, not people: NanoDet (scene/detect.py) finds the object, and a face box
lying inside it is one. The detector runs only on the frames of a track about to alert."""

from __future__ import annotations

import numpy as np

from facelens.scene.detect import detect_objects

DEPICTING = ("cell phone", "tv", "laptop", "book")
INSIDE = 0.6
"""Share of the face box inside the object's box that makes the face part of the object."""
THRESHOLD = 0.2
"""NanoDet score for these objects (a screen seen at a slant scores low; the face must still
lie inside its box, so a stray box costs little)."""
MAX_FRAME_SHARE = 0.6
"""Boxes covering more of the frame are NanoDet's low-score guesses at the whole scene."""


def inside_share(face: np.ndarray, box: np.ndarray) -> float:
    """The share of `face`'s area (x1y1x2y2) that lies inside `box`."""
    w = max(0.0, min(face[2], box[2]) - max(face[0], box[0]))
    h = max(0.0, min(face[3], box[3]) - max(face[1], box[1]))
    area = max((face[2] - face[0]) * (face[3] - face[1]), 1e-6)
    return float(w * h / area)


def depicting_object(rgb: np.ndarray, face_box: np.ndarray) -> str | None:
    """The name of the picture-showing object the face lies inside in this frame, if any."""
    objects = detect_objects(rgb, THRESHOLD).of(*DEPICTING)
    face_area = (face_box[2] - face_box[0]) * (face_box[3] - face_box[1])
    frame_area = rgb.shape[0] * rgb.shape[1]
    for box, name in zip(objects.boxes, objects.names, strict=True):
        area = (box[2] - box[0]) * (box[3] - box[1])
        plausible = 1.5 * face_area < area <= MAX_FRAME_SHARE * frame_area
        if plausible and inside_share(face_box, box) >= INSIDE:
            return name
    return None
