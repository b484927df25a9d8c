"""Draw faces on a picture: box, 5 landmarks, detector score and quality (with reasons)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelens.errors import BadImageError
from facelens.face import Face

_GOOD, _POOR = (40, 200, 80), (230, 150, 30)  # RGB: green for usable faces, orange for poor
_MARKS = ((255, 60, 60), (60, 60, 255), (255, 255, 0), (255, 60, 255), (60, 255, 255))


def draw_faces(rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
    """A copy of `rgb` with every face annotated."""
    out = rgb.copy()
    thick = max(1, round(max(rgb.shape[:2]) / 500))
    scale = max(0.4, max(rgb.shape[:2]) / 1400)
    for face in faces:
        ok = face.quality is None or face.quality.acceptable
        colour = _GOOD if ok else _POOR
        x1, y1, x2, y2 = (round(v) for v in face.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
        for (x, y), mark in zip(face.landmarks, _MARKS, strict=True):
            cv2.circle(out, (round(x), round(y)), thick + 1, mark, -1, cv2.LINE_AA)
        lines = [f"det {face.score:.2f}"]
        if face.quality is not None:
            lines.append(f"q {face.quality.score:.2f}")
            lines.extend(face.quality.reasons)
        if face.attributes is not None:
            lines.append(f"{face.attributes.sex} ~{face.attributes.age:.0f}y")
        y = max(y1 - 6, 12)
        for text in reversed(lines):
            (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            cv2.rectangle(out, (x1, y - h - 4), (x1 + w + 4, y + 2), colour, -1)
            cv2.putText(out, text, (x1 + 2, y - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (0, 0, 0), thick, cv2.LINE_AA)
            y -= h + 8
    return out


WRITABLE = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def save_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB image; the format follows the extension."""
    if path.suffix.lower() not in WRITABLE:
        raise BadImageError(f"cannot write {path.name}: use one of {', '.join(WRITABLE)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise BadImageError(f"could not write {path}")


def draw_labels(rgb: np.ndarray, labels: list[tuple[np.ndarray, str, bool]]) -> np.ndarray:
    """A copy of `rgb` with a box and a label per (box, text, named) — camera views."""
    out = rgb.copy()
    thick = max(1, round(max(rgb.shape[:2]) / 500))
    scale = max(0.4, max(rgb.shape[:2]) / 1400)
    for box, text, named in labels:
        colour = _GOOD if named else (200, 200, 200)
        x1, y1, x2, y2 = (round(v) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        y = max(y1 - 4, h + 4)
        cv2.rectangle(out, (x1, y - h - 4), (x1 + w + 4, y + 2), colour, -1)
        cv2.putText(out, text, (x1 + 2, y - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                    thick, cv2.LINE_AA)
    return out
