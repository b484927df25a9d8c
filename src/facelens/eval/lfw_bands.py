"""Fit and check quality-band calibration on clean + CCTV-like copies of an LFW-layout folder.

The population is every image at every level (clean and each degradation); a pair is any two
of its faces except an image with its own degraded copy, and falls in the quality band of its
worse face (matching/quality_bands.py). Per band: the fusion weight with the best TAR at FAR
1e-4 and the thresholds at each FAR. Honesty check: identities are split in two folds (by
label parity); what is fitted on one fold's pairs is measured on the other's, so the FAR
reported per band is measured on pairs the thresholds never saw. Each band is split into
cells by its better face's band (eval/lfw_cells.py), fitted and checked the same way.

Impostor pairs with a degraded face are kept at a rate of `DEGRADED_KEEP` (seeded), enough
for FAR 1e-5 in every band while keeping the arrays within ~1 GB; clean pairs are all kept,
as in the clean calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelens.eval.lfw import FUSION_GRID, build_protocol, stack, tar_at_far
from facelens.eval.lfw_cells import (
    MIN_CELL_GENUINE,
    MIN_CELL_IMPOSTORS,
    all_cells,
    cell_entries,
    held_out_cells,
    measured_cells,
)
from facelens.eval.lfw_report import cascade_bands, facelens_cached, impostor_tail
from facelens.matching.calibration import Calibration
from facelens.matching.operating_points import FARS, far_key
from facelens.matching.quality_bands import DEFAULT_BANDS, QualityBand, band_indices
from facelens.settings import Runtime

DEGRADED_KEEP = 0.25
BLOCK = 2048


@dataclass
class Population:
    """Every face of every level, row-aligned."""

    plain: np.ndarray
    flip: np.ndarray
    dlib: np.ndarray
    band: np.ndarray
    labels: np.ndarray
    source: np.ndarray
    """Index of the original image: a face is never paired with its own degraded copy."""
    level: np.ndarray
    """0 for a clean face, k for one from the k-th degradation."""


def population(levels: dict[str, dict[Path, dict[str, Any]]], files: list[Path],
               labels: np.ndarray, bands: tuple[QualityBand, ...]) -> Population:
    """`levels` maps a level name to its features per file, "clean" first."""
    rows = [[feats[f] for f in files] for feats in levels.values()]
    flat = [r for level in rows for r in level]
    eyes = np.array([r.get("interocular", np.nan) for r in flat], np.float64)
    sharp = np.array([r.get("sharpness", np.nan) for r in flat], np.float64)
    n = len(files)
    return Population(
        plain=stack(flat, "sface", 128), flip=stack(flat, "sface-flip", 128),
        dlib=stack(flat, "dlib", 128), band=band_indices(bands, eyes, sharp),
        labels=np.tile(labels, len(rows)), source=np.tile(np.arange(n), len(rows)),
        level=np.repeat(np.arange(len(rows), dtype=np.int8), n))


@dataclass
class Scores:
    """Every kept pair: scores (n, 3) of plain sface, sface-flip and dlib (misses: -inf), its
    band, fold (0, 1, or 2 across folds), genuineness, which copies it pairs (`tag`: 0 both
    clean, k both from level k, -1 mixed) and its better face's band."""

    scores: np.ndarray
    band: np.ndarray
    fold: np.ndarray
    genuine: np.ndarray
    tag: np.ndarray
    better: np.ndarray
    """The band of the pair's better face (`band` is its worse face's)."""

    def get(self, genuine: bool, band: int | None = None, fold: int | None = None,
            better: int | None = None, tag: int | None = None) -> np.ndarray:
        sel = self.genuine == genuine
        for values, wanted in ((self.band, band), (self.fold, fold), (self.better, better),
                               (self.tag, tag)):
            if wanted is not None:
                sel &= values == wanted
        return self.scores[sel]


def pair_scores_by_band(pop: Population, seed: int = 0) -> Scores:
    """Scores of every kept pair with what it is."""
    rng = np.random.default_rng(seed)
    missing = np.isnan(pop.flip[:, 0])
    mats = [np.nan_to_num(m) for m in (pop.plain, pop.flip, pop.dlib)]
    parity = pop.labels % 2
    parts: list[tuple[np.ndarray, ...]] = []
    n = len(pop.labels)
    for start in range(0, n, BLOCK):
        rows = np.arange(start, min(start + BLOCK, n))
        cols = np.arange(start, n)
        keep = (cols[None, :] > rows[:, None]) & (
            pop.source[rows][:, None] != pop.source[cols][None, :])
        same = pop.labels[rows][:, None] == pop.labels[cols][None, :]
        degraded = (pop.level[rows][:, None] > 0) | (pop.level[cols][None, :] > 0)
        keep &= same | ~degraded | (rng.random(keep.shape) < DEGRADED_KEEP)
        r, c = np.nonzero(keep)
        i, j = rows[r], cols[c]
        scores = np.stack([(m[rows] @ m[cols].T)[r, c] for m in mats], 1)
        scores[missing[i] | missing[j]] = -np.inf
        parts.append((scores, np.maximum(pop.band[i], pop.band[j]),
                      np.where(parity[i] == parity[j], parity[i], 2).astype(np.int8),
                      pop.labels[i] == pop.labels[j],
                      np.where(pop.level[i] == pop.level[j], pop.level[i], -1).astype(np.int8),
                      np.minimum(pop.band[i], pop.band[j])))
    return Scores(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def threshold(impostor: np.ndarray, far: float) -> float:
    """`operating_points.threshold_at_far` by partial sort: the (floor(far·n)+1)-th largest."""
    n = len(impostor)
    if n == 0:
        return float("inf")
    k = n - 1 - min(int(np.floor(far * n)), n - 1)
    return float(np.partition(impostor, k)[k])


def fused(s: np.ndarray, weight: float) -> np.ndarray:
    """Fused scores; a miss stays -inf (at weight 0 or 1, 0·-inf would make it NaN)."""
    return np.where(np.isneginf(s[:, 1]), -np.inf, weight * s[:, 1] + (1 - weight) * s[:, 2])


def best_weight(gen: np.ndarray, imp: np.ndarray) -> float:
    """The weight with the best TAR at FAR 1e-4, ties → the best TAR at 1e-3."""
    def quality(w: float) -> tuple[float, float]:
        f_imp = fused(imp, w)
        return tuple(float(np.mean(fused(gen, w) > threshold(f_imp, far)))  # type: ignore
                     for far in (1e-4, 1e-3))

    return max(FUSION_GRID, key=quality)


def measured(gen: np.ndarray, imp: np.ndarray, thresholds: dict[str, float]
             ) -> dict[str, dict[str, float]]:
    """FAR and TAR of fixed thresholds on other pairs."""
    return {k: {"far": float(np.mean(imp > t)) if len(imp) else float("nan"),
                "tar": float(np.mean(gen > t)) if len(gen) else float("nan")}
            for k, t in thresholds.items()}


def fused_thresholds(imp: np.ndarray, weight: float) -> dict[str, float]:
    f = fused(imp, weight)
    return {far_key(far): threshold(f, far) for far in FARS}


def fold_fit(scores: Scores, band: int, fold: int) -> tuple[float, dict[str, float]]:
    """A band's weight and thresholds fitted on one identity fold."""
    imp = scores.get(False, band, fold)
    w = best_weight(scores.get(True, band, fold), imp)
    return w, fused_thresholds(imp, w)


def held_out(scores: Scores, band: int, fold_fits: dict[tuple[int, int], tuple[float, Any]],
             global_weight: float, global_thresholds: dict[str, float]) -> dict[str, Any]:
    """Per band: fit on one fold (`fold_fits[(band, fold)]`), measure on the other, both ways;
    and, for comparison, the single clean calibration (`global_*`) on the same pairs."""
    out: dict[str, Any] = {"folds": []}
    for fit, test in ((0, 1), (1, 0)):
        g_test, i_test = scores.get(True, band, test), scores.get(False, band, test)
        w, fitted = fold_fits[(band, fit)]
        banded = measured(fused(g_test, w), fused(i_test, w), fitted)
        single = measured(fused(g_test, global_weight), fused(i_test, global_weight),
                          global_thresholds)
        out["folds"].append({"fitted_on": fit, "fusion_weight": w, "banded": banded,
                             "single_calibration": single,
                             "genuine_pairs": len(g_test), "impostor_pairs": len(i_test)})
    for kind in ("banded", "single_calibration"):
        out[kind] = {k: {m: float(np.mean([f[kind][k][m] for f in out["folds"]]))
                         for m in ("far", "tar")} for k in map(far_key, FARS)}
    return out


def band_table(gen: np.ndarray, imp: np.ndarray, weight: float) -> dict[str, Any]:
    """One band's operating points per embedder, in the form matching.calibration reads."""
    def table(g: np.ndarray, i: np.ndarray) -> dict[str, Any]:
        tars = tar_at_far(g, i)
        return {"thresholds": {k: v["threshold"] for k, v in tars.items()},
                "tar": {k: v["tar"] for k, v in tars.items()},
                "impostor_pairs": len(i), "genuine_pairs": len(g)} | impostor_tail(i)

    out = {name: table(gen[:, col], imp[:, col])
           for name, col in (("sface", 0), ("sface-flip", 1), ("dlib", 2))}
    f_gen, f_imp = fused(gen, weight), fused(imp, weight)
    cascade = cascade_bands((gen[:, 0], imp[:, 0]), (f_gen, f_imp))
    out["fusion"] = table(f_gen, f_imp) | {"cascade": {k: v["band"] for k, v in cascade.items()}}
    return out


def banded_decisions(scores: Scores, tag: int | None, calibration: list[dict[str, Any]]
                     ) -> dict[str, dict[str, float]]:
    """TAR and FAR on the pairs of one copy (`tag`; None: every pair) when each pair is
    decided by its own cell's fusion weight and thresholds (in-sample when `calibration` was
    fitted on these pairs)."""
    names = [str(b["name"]) for b in calibration]
    out = {}
    for far in map(far_key, FARS):
        accepted = {True: 0, False: 0}
        for worse, better in all_cells(len(calibration)):
            band = calibration[worse]
            cell = band.get("cells", {}).get(names[better], band)
            t = cell["embedders"]["fusion"]["thresholds"][far]
            for genuine in (True, False):
                s = scores.get(genuine, worse, better=better, tag=tag)
                accepted[genuine] += int(np.sum(fused(s, cell["fusion_weight"]) > t))
        out[far] = {"tar": accepted[True] / max(len(scores.get(True, tag=tag)), 1),
                    "far": accepted[False] / max(len(scores.get(False, tag=tag)), 1)}
    return out


def evaluate_bands(levels: dict[str, dict[Path, dict[str, Any]]], files: list[Path],
                   labels: np.ndarray, clean: dict[str, Any],
                   bands: tuple[QualityBand, ...] = DEFAULT_BANDS,
                   in_force: tuple[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The quality-band report and calibration for `levels` ("clean" first, then degraded
    copies; features per file); `clean` is the clean report (its single calibration is the
    comparison). `in_force` (origin, its "quality_bands" entries with the same bands) is
    measured on every copy too: out of sample for copies it was not fitted on."""
    pop = population(levels, files, labels, bands)
    scores = pair_scores_by_band(pop)
    single_weight = float(clean["fusion_weight"])
    single = {k: v["threshold"] for k, v in clean["variants"]["fusion"]["tar_at_far"].items()}
    calibration, per_band = [], {}
    fold_fits = {(b, fold): fold_fit(scores, b, fold) for b in range(len(bands))
                 for fold in (0, 1)}
    for b, band in enumerate(bands):
        gen, imp = scores.get(True, b), scores.get(False, b)
        if not len(gen) or not len(imp):
            raise ValueError(f"quality band {band.name!r} has no pairs: add degraded levels")
        weight = best_weight(gen, imp)
        table = band_table(gen, imp, weight)
        calibration.append(band.to_dict() | {"fusion_weight": weight, "embedders": table})
        faces = np.bincount(pop.level[pop.band == b], minlength=len(levels))
        per_band[band.name] = {
            "faces_per_level": dict(zip(levels, map(int, faces), strict=True)),
            "genuine_pairs": len(gen), "impostor_pairs": len(imp), "fusion_weight": weight,
            "tar": table["fusion"]["tar"],
            "held_out": held_out(scores, b, fold_fits, single_weight, single)}
    for b, cells in cell_entries(scores.get, bands, best_weight, fused_thresholds,
                                 band_table).items():
        calibration[b]["cells"] = cells
    per_cell = held_out_cells(scores.get, bands, fold_fits, best_weight, fused_thresholds,
                              fused)
    by_level = {name: {"banded": banded_decisions(scores, k, calibration)}
                for k, name in enumerate(levels)}
    report = {"bands": [b.to_dict() for b in bands], "degraded_keep": DEGRADED_KEEP,
              "min_cell_pairs": {"impostor": MIN_CELL_IMPOSTORS, "genuine": MIN_CELL_GENUINE},
              "per_band": per_band, "per_cell_held_out": per_cell, "by_level": by_level,
              "calibration": calibration}
    if in_force:
        report["in_force"] = {"origin": in_force[0], "by_level": {
            name: banded_decisions(scores, k, in_force[1]) for k, name in enumerate(levels)},
            "per_cell": measured_cells(scores.get, in_force[1], fused)}
    return report


def evaluate_cached(root: Path, clean: dict[str, Any], runtime: Runtime,
                    degrade: tuple[str, ...], cache: Path, workers: int,
                    in_force: Calibration | None = None) -> dict[str, Any]:
    """`evaluate_bands` on `root`'s protocol (as `clean` was run) from the feature caches
    `lfw_report.evaluate` filled; with the calibration `in_force` measured beside it when its
    bands are the same."""
    protocol = clean["protocol"]
    proto = build_protocol(root, max_per_person=protocol["max_per_person"],
                           singles=protocol["singles"], seed=protocol["seed"])
    levels = {name: facelens_cached(proto.files, runtime, cache, workers, None,
                                    degrade=None if name == "clean" else name,
                                    shift_tta=clean.get("sface_shift_tta", False))
              for name in ("clean", *degrade)}
    same = in_force is not None and in_force.quality_bands == DEFAULT_BANDS
    return evaluate_bands(levels, proto.files, proto.labels, clean, in_force=(
        in_force.origin, in_force.data["quality_bands"]) if same and in_force else None)
