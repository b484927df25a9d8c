"""Calibrated operating points: the threshold that gives a target false-accept rate.

Thresholds come from `facelens eval lfw ROOT --save`: the impostor scores of the lfw-dev
all-vs-all protocol, stored as package data (src/facelens/data/operating_points*.json) with
the pair counts behind them. Callers ask for a FAR, never for a raw threshold.

Each SFace precision has its own file: bf16 moves scores by ~1e-3, enough to pass ~2% more
impostors than an fp32 threshold allows at FAR 1e-4, so bf16 is calibrated on its own scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FARS = (1e-2, 1e-3, 1e-4, 1e-5)


def far_key(far: float) -> str:
    return f"{far:.0e}"


@dataclass(frozen=True)
class OperatingPoint:
    embedder: str
    far: float
    threshold: float
    impostor_pairs: int
    source: str
    cascade: tuple[float, float] | None = None
    """For "fusion": plain sface scores outside this band decide alone (see api.verify)."""

    def describe(self) -> str:
        return (f"{self.embedder} @ FAR {far_key(self.far)}: threshold {self.threshold:.4f} "
                f"({self.source}, {self.impostor_pairs:,} impostor pairs)")


def threshold_at_far(impostor_scores: np.ndarray, far: float, *,
                     presorted: bool = False) -> float:
    """The smallest threshold t with (#impostors scoring > t) / n <= far.

    With `presorted`, `impostor_scores` must already be sorted in descending order."""
    scores = impostor_scores if presorted else np.sort(np.asarray(impostor_scores))[::-1]
    allowed = int(np.floor(far * len(scores)))
    return float(scores[min(allowed, len(scores) - 1)])
