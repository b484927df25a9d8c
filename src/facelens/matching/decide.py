"""The 1:N decision for one face: which search results are candidates, and how sure each is.

A result is a candidate when its score clears the open-set threshold (matching/open_set.py);
its confidence band (`Calibration.confidence_band`) is computed here and nowhere else, so the
REST API, the CLI and the console only format it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facelens.matching.calibration import Calibration


@dataclass(frozen=True)
class Hit:
    """One search result above the threshold."""

    id: int
    """The index id of the vector found."""
    score: float
    band: str
    """"high", "medium" or "low": the strictest band FPIR whose threshold the score clears;
    "none" when a search at an FPIR laxer than 1e-2 admits a score no band's threshold does."""
    fpir: float | None
    """The band's FPIR; None for "none"."""


def decide(ids: np.ndarray, scores: np.ndarray, threshold: float, calibration: Calibration,
           embedder: str, comparisons: int) -> list[Hit]:
    """The results of one face's search (`ids`, `scores`; id -1 is no result) that clear
    `threshold`, best first, each with its band over `comparisons` comparisons (the gallery
    size)."""
    keep = (ids >= 0) & (scores > threshold)
    hits = [Hit(int(i), float(score), *calibration.confidence_band(embedder, float(score),
                                                                   comparisons))
            for score, i in zip(scores[keep], ids[keep], strict=True)]
    return sorted(hits, key=lambda h: -h.score)
