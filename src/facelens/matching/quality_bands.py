"""Quality bands: decisions conditioned on how good the worse face of a comparison is.

On CCTV-like faces (eyes ~20 px apart, blurred, JPEG-compressed) impostor scores bunch up and
dlib's embedding collapses, so one fusion weight and one set of thresholds fitted on sharp
photos is wrong there. A face falls in the first band whose minimum inter-ocular distance and
sharpness it meets (both as `vision.quality.assess` measures them); a pair in the band of its
worse face. Each band carries its own fusion weight and thresholds (matching/calibration.py),
fitted on pairs of that band, and split by the better face's band into cells (a degraded face
against a sharp one, two degraded faces), so the FAR asked is the FAR measured in each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class QualityBand:
    name: str
    min_interocular_px: float
    min_sharpness: float

    def admits(self, interocular_px: float, sharpness: float) -> bool:
        return interocular_px >= self.min_interocular_px and sharpness >= self.min_sharpness

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "min_interocular_px": self.min_interocular_px,
                "min_sharpness": self.min_sharpness}


DEFAULT_BANDS = (QualityBand("good", 30.0, 25.0), QualityBand("fair", 15.0, 14.0),
                 QualityBand("poor", 0.0, 0.0))
"""Best first; the last admits every face. Edges from lfw-dev: ~99% of its clean faces are
"good" (eyes 30-51 px apart, sharpness 37-380, 1st-95th percentile); its cctv-24 copy (eyes
19-30 px, median 26) is mostly "fair" even where sharp: at 25 px, 63% of it passed as good and
two such faces passed 2x the clean FAR; cctv-18 (eyes 13-22 px) is ~90% "fair", cctv-12
mostly "poor"."""


def band_index(bands: Sequence[QualityBand], interocular_px: float, sharpness: float) -> int:
    """Index of the first (best) band admitting a face; the last band when none does."""
    for i, band in enumerate(bands):
        if band.admits(interocular_px, sharpness):
            return i
    return len(bands) - 1


def pair_band_index(bands: Sequence[QualityBand], *faces: tuple[float, float] | None) -> int:
    """The band of a comparison: its worse face's. A side given as None (an enrolled
    reference, whose quality was checked at enrolment) does not lower it."""
    return pair_cell(bands, *faces)[0]


def pair_cell(bands: Sequence[QualityBand], *faces: tuple[float, float] | None
              ) -> tuple[int, int]:
    """The calibration cell of a comparison: (its worse face's band, its better face's). A
    side given as None (an enrolled reference) counts as the best band."""
    found = [band_index(bands, *f) for f in faces if f is not None]
    return max(found, default=0), min(found) if len(found) > 1 else 0


def cell_name(bands: Sequence[QualityBand], worse: int, better: int) -> str:
    """A cell as verdicts name it: the worse face's band, then "/" and the better face's when
    that is not the best band either ("good", "fair", "fair/fair", "poor/fair")."""
    return bands[worse].name if better == 0 else f"{bands[worse].name}/{bands[better].name}"


def band_indices(bands: Sequence[QualityBand], interocular_px: np.ndarray,
                 sharpness: np.ndarray) -> np.ndarray:
    """`band_index` of many faces at once (NaN measurements fall in the last band)."""
    out = np.full(len(interocular_px), len(bands) - 1, np.int8)
    for i in reversed(range(len(bands) - 1)):
        band = bands[i]
        out[(interocular_px >= band.min_interocular_px) & (sharpness >= band.min_sharpness)] = i
    return out


def fused_halves(vector: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """The unit sface-flip and dlib vectors inside a fused vector built with `weight`
    ([√w·sface-flip, √(1−w)·dlib], see vision/embed.py)."""
    if not 0 < weight < 1:
        raise ValueError(f"a fused vector built with weight {weight} has lost one half")
    half = len(vector) // 2
    return vector[:half] / np.sqrt(weight), vector[half:] / np.sqrt(1 - weight)


def reweighted_probe(probe: np.ndarray, stored_weight: float, weight: float) -> np.ndarray:
    """A fused probe rescaled so that its dot product with fused vectors stored with
    `stored_weight` is the fused score at `weight`: w·(sface·sface) + (1−w)·(dlib·dlib). It is
    how a gallery of fused vectors is searched with a band's own weight."""
    sface, dlib = fused_halves(probe, stored_weight)
    return np.concatenate([sface * (weight / np.sqrt(stored_weight)),
                           dlib * ((1 - weight) / np.sqrt(1 - stored_weight))]).astype(
        probe.dtype)


def fused_score(a: np.ndarray, b: np.ndarray, stored_weight: float, weight: float) -> float:
    """The fused score at `weight` of two fused vectors stored with `stored_weight`."""
    return float(reweighted_probe(a, stored_weight, weight) @ b)
