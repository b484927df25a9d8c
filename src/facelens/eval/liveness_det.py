"""The passive detector's error trade-off in ISO/IEC 30107-3 terms: APCER per PAI species
against BPCER as its threshold moves (a DET curve), and APCER at a fixed BPCER."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np


def apcer_at_bpcer(bona_fide: list[float], attacks: list[float], bpcer: float
                   ) -> dict[str, Any]:
    """The threshold refusing `bpcer` of bona fide scores (higher = more live), and the share
    of attacks that still pass it."""
    if not bona_fide or not attacks:
        return {"attacks": len(attacks), "apcer": None}
    threshold = float(np.quantile(bona_fide, bpcer))
    passed = int(sum(a >= threshold for a in attacks))
    return {"bpcer": bpcer, "threshold": round(threshold, 4), "attacks": len(attacks),
            "accepted": passed, "apcer": round(passed / len(attacks), 4)}


def det_points(bona_fide: list[float], attacks: list[float]) -> list[list[float]]:
    """[BPCER, APCER] at every distinct threshold (none without both kinds of score)."""
    if not bona_fide or not attacks:
        return []
    thresholds = np.unique(np.r_[bona_fide, attacks, np.inf])
    bona, attack = np.asarray(bona_fide), np.asarray(attacks)
    return [[round(float((bona < t).mean()), 4), round(float((attack >= t).mean()), 4)]
            for t in thresholds]


def det_plot(curves: dict[str, list[list[float]]], path: Path, title: str) -> None:
    """A DET plot (normal-deviate axes) of each species' curve, written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ticks = [0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99]
    clip = 1e-3
    deviate = np.vectorize(NormalDist().inv_cdf)
    figure, axes = plt.subplots(figsize=(5.5, 5.5))
    for name, points in curves.items():
        xs = deviate(np.clip([p[0] for p in points], clip, 1 - clip))
        ys = deviate(np.clip([p[1] for p in points], clip, 1 - clip))
        axes.plot(xs, ys, label=name)
    axes.set_xticks(deviate(ticks), [f"{t:g}" for t in ticks])
    axes.set_yticks(deviate(ticks), [f"{t:g}" for t in ticks])
    axes.set_xlabel("BPCER")
    axes.set_ylabel("APCER")
    axes.set_title(title, fontsize=9)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
