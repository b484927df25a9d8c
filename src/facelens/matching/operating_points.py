"""Calibrated operating points: the threshold that gives a target false-accept rate.

Thresholds come from the impostor scores of an all-vs-all protocol (`facelens eval lfw`), with
the pair counts behind them; `Calibration` (matching/calibration.py) holds the ones in force.
Callers ask for a FAR, never for a raw threshold.
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
