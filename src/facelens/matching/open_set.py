"""Open-set 1:N decisions: a threshold that keeps false candidates rare however big the gallery.

A query compared with N enrolled templates makes N impostor comparisons when the person is not
enrolled. If each has false-accept probability f and they are independent, the chance that a
query raises at least one false candidate (the false-positive identification rate, FPIR) is
1 − (1 − f)^N. For a requested FPIR F we therefore use, per comparison,

    f = 1 − (1 − F)^(1/N)        (≈ F / N)

Assumptions, stated so they can be checked: comparisons are independent and impostor scores
follow the lfw-dev impostor distribution the thresholds were fitted on. Galleries of look-alike
relatives or one ethnicity-skewed population break the first; a camera far from LFW's news
photos breaks the second. Below the smallest FAR lfw-dev can measure (~1/impostor pairs), the
threshold is extrapolated linearly in log10(FAR) from the measured tail, which for light-tailed
scores errs on the strict side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def per_comparison_far(fpir: float, comparisons: int) -> float:
    """The per-comparison FAR that keeps the per-query false-candidate rate at `fpir`."""
    if not 0 < fpir < 1:
        raise ValueError("FPIR must be in (0, 1)")
    n = max(int(comparisons), 1)
    return -math.expm1(math.log1p(-fpir) / n)


@dataclass(frozen=True)
class Threshold:
    value: float
    far: float
    extrapolated: bool

    def describe(self, embedder: str, gallery_size: int, fpir: float) -> str:
        how = "extrapolated from the lfw-dev tail" if self.extrapolated else "lfw-dev"
        return (f"{embedder}: FPIR {fpir:g} over {gallery_size:,} subjects → per-comparison "
                f"FAR {self.far:.2e} → threshold {self.value:.4f} ({how})")


BANDS = (("high", 1e-4), ("medium", 1e-3), ("low", 1e-2))
"""Confidence bands: the strictest FPIR (or, for 1:1, FAR) whose threshold a score clears
(`Calibration.confidence_band`)."""



def cohort_stats(probes: np.ndarray, cohort: np.ndarray, top_k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each probe's `top_k` highest similarities to a cohort:
    L2-normalised embeddings of people enrolled nowhere (adaptive T-norm). A probe that
    resembles many strangers (a soft, generic or much-photographed face) gets a high mean."""
    k = min(top_k, len(cohort))
    nearest = -np.partition(-(probes @ cohort.T), k - 1, axis=1)[:, :k]
    return nearest.mean(1), nearest.std(1) + 1e-6


def t_normalised(scores: np.ndarray, mean: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Scores (probes × gallery) in standard deviations above each probe's cohort mean:
    s' = (s − μ(probe)) / σ(probe). Measured on lfw-dev it did not beat raw scores at FPIR
    1e-3 (docs/decisions.md), so identification keeps raw scores; `facelens eval identify`
    reports both."""
    return (scores - mean[:, None]) / spread[:, None]
