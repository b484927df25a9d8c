"""Calibrated operating points: the threshold that gives a target false-accept rate.

Thresholds come from `facelens eval lfw ROOT --save`: the impostor scores of the lfw-dev
all-vs-all protocol, stored as package data (src/facelens/data/operating_points*.json) with
the pair counts behind them. Callers ask for a FAR, never for a raw threshold.

Each SFace precision has its own file: bf16 moves scores by ~1e-3, enough to pass ~2% more
impostors than an fp32 threshold allows at FAR 1e-4, so bf16 is calibrated on its own scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from facelens.errors import FacelensError, ModelMissingError

FARS = (1e-2, 1e-3, 1e-4, 1e-5)
_FILES = {"openvino-bf16": "operating_points-bf16.json"}
_F32_FILE = "operating_points.json"  # openvino-f32 and onnxruntime agree to cosine 1 - 2e-7


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


def calibration_file(label: str) -> str:
    """The package-data file holding the operating points of a runtime label
    (`facelens.models.base.runtime_label`)."""
    return _FILES.get(label, _F32_FILE)


def calibration() -> dict[str, Any]:
    """The calibration of the SFace runtime this process uses (settings.runtime)."""
    from facelens.models.base import runtime_label
    from facelens.settings import get_settings

    return _load(calibration_file(runtime_label(get_settings().runtime)))


@lru_cache(maxsize=4)
def _load(name: str) -> dict[str, Any]:
    data = resources.files("facelens.data").joinpath(name)
    if not data.is_file():
        return {}
    return dict(json.loads(data.read_text()))


def operating_point(embedder: str, far: float) -> OperatingPoint:
    """The calibrated point for `embedder` at the largest calibrated FAR not above `far`."""
    table = calibration().get("embedders", {}).get(embedder)
    if not table:
        raise ModelMissingError(f"embedder {embedder!r} has no calibrated thresholds; "
                            "run `facelens eval lfw ROOT --save`")
    usable = [f for f in FARS if f <= far * (1 + 1e-9) and far_key(f) in table["thresholds"]]
    if not usable:
        raise FacelensError(f"FAR {far:g} is stricter than any calibrated point "
                            f"({', '.join(table['thresholds'])})")
    chosen = max(usable)
    band = table.get("cascade", {}).get(far_key(chosen))
    return OperatingPoint(embedder, chosen, float(table["thresholds"][far_key(chosen)]),
                          int(table["impostor_pairs"]), calibration().get("source", "lfw-dev"),
                          (float(band[0]), float(band[1])) if band else None)
