"""Calibration cells: a pair keyed on the quality bands of both its faces, not its worse one.

Within a band, two degraded faces pass about twice the impostors a degraded face against a
sharp one does (cctv-18 × cctv-18 at the fair band's thresholds: 1.8× / 2.0× the FAR asked at
1e-3 / 1e-4), so each band is split by its better face's band: cell (worse, better). A cell is
fitted (fusion weight, thresholds) only with `MIN_CELL_IMPOSTORS` impostor and
`MIN_CELL_GENUINE` genuine pairs; a smaller one borrows the nearest cell whose better face is
worse (`fallbacks`), whose impostors score higher, so it errs strict; failing those, the
band's own fit. Held out as the bands are: fitted on one identity fold, measured on the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from facelens.eval.calibrate import MIN_IMPOSTORS_ABOVE
from facelens.eval.demographics import wilson
from facelens.matching.operating_points import far_key
from facelens.matching.quality_bands import QualityBand, cell_name

MIN_CELL_IMPOSTORS = round(MIN_IMPOSTORS_ABOVE / 1e-4)
"""100,000: FAR 1e-4 is measured with >= 10 impostor pairs above its threshold."""
MIN_CELL_GENUINE = 100
"""Enough genuine pairs to choose a fusion weight on."""
REPORTED_FARS = (1e-3, 1e-4)

Cell = tuple[int, int]
"""(worse face's band, better face's band), indices into the bands, best first."""
Fit = tuple[float, dict[str, float]]
"""A fusion weight and the fused thresholds per FAR key."""


def all_cells(bands: int) -> list[Cell]:
    return [(worse, better) for worse in range(bands) for better in range(worse + 1)]


def fallbacks(cell: Cell) -> list[Cell]:
    """The cell itself, then those of the same worse band with the better face one band worse
    each step, up to both faces in the worse band."""
    worse, better = cell
    return [(worse, b) for b in range(better, worse + 1)]


def fitted(gen: np.ndarray, imp: np.ndarray, best_weight: Callable[..., float],
           thresholds: Callable[..., dict[str, float]]) -> Fit | None:
    """The cell's weight and thresholds, or None when its pairs are too few."""
    if len(imp) < MIN_CELL_IMPOSTORS or len(gen) < MIN_CELL_GENUINE:
        return None
    weight = best_weight(gen, imp)
    return weight, thresholds(imp, weight)


def resolve(fits: dict[Cell, Fit | None], cell: Cell, band_fit: Fit,
            bands: tuple[QualityBand, ...]) -> tuple[Fit, str | None]:
    """The fit a cell decides with and, when borrowed, whose (the band's own: "band")."""
    for other in fallbacks(cell):
        if (fit := fits.get(other)) is not None:
            return fit, None if other == cell else cell_name(bands, *other)
    return band_fit, "band"


def rate(hits: int, n: int) -> dict[str, Any]:
    return {"rate": hits / n if n else float("nan"), "hits": hits, "pairs": n,
            "interval_95": [round(v, 7) for v in wilson(hits, n)]}


def held_out_cells(get: Callable[..., np.ndarray], bands: tuple[QualityBand, ...],
                   band_folds: dict[tuple[int, int], Fit],
                   best_weight: Callable[..., float],
                   thresholds: Callable[..., dict[str, float]],
                   fused: Callable[[np.ndarray, float], np.ndarray]) -> dict[str, Any]:
    """Per cell: fit every cell on one fold (with fallbacks), count on the other fold's pairs
    of that cell the impostors and genuine pairs accepted, both ways, pooled; beside it the
    band-only fit (worse face's band) on the same pairs. `get(genuine, band, fold, better)`
    returns score rows; `band_folds[(band, fold)]` is the band's fit on that fold."""
    cells = all_cells(len(bands))
    counts: dict[Cell, dict[str, Any]] = {c: {"fallback": [], "imp": 0, "gen": 0,
                                              "cell": {}, "band": {}} for c in cells}
    for fit_fold, test_fold in ((0, 1), (1, 0)):
        fits = {c: fitted(get(True, c[0], fit_fold, c[1]), get(False, c[0], fit_fold, c[1]),
                          best_weight, thresholds) for c in cells}
        for cell in cells:
            (weight, chosen), borrowed = resolve(fits, cell, band_folds[(cell[0], fit_fold)],
                                                 bands)
            band_weight, band_thresholds = band_folds[(cell[0], fit_fold)]
            gen = get(True, cell[0], test_fold, cell[1])
            imp = get(False, cell[0], test_fold, cell[1])
            tally = counts[cell]
            tally["fallback"].append(borrowed)
            tally["imp"] += len(imp)
            tally["gen"] += len(gen)
            for kind, w, table in (("cell", weight, chosen),
                                   ("band", band_weight, band_thresholds)):
                f_gen, f_imp = fused(gen, w), fused(imp, w)
                for far in map(far_key, REPORTED_FARS):
                    was = tally[kind].setdefault(far, [0, 0])
                    was[0] += int(np.sum(f_imp > table[far]))
                    was[1] += int(np.sum(f_gen > table[far]))
    out = {}
    for cell, tally in counts.items():
        entry: dict[str, Any] = {"impostor_pairs": tally["imp"], "genuine_pairs": tally["gen"],
                                 "fallback_per_fold": tally["fallback"]}
        for kind in ("cell", "band"):
            entry[kind] = {}
            for far in REPORTED_FARS:
                imp_hits, gen_hits = tally[kind][far_key(far)]
                measured = rate(imp_hits, tally["imp"])
                entry[kind][far_key(far)] = {
                    "far": measured, "far_over_asked": measured["rate"] / far,
                    "tar": gen_hits / tally["gen"] if tally["gen"] else float("nan")}
        out[cell_name(bands, *cell)] = entry
    return out


def cell_entries(get: Callable[..., np.ndarray], bands: tuple[QualityBand, ...],
                 best_weight: Callable[..., float], thresholds: Callable[..., dict[str, float]],
                 table: Callable[[np.ndarray, np.ndarray, float], dict[str, Any]]
                 ) -> dict[int, dict[str, Any]]:
    """Per worse band: its cells as the calibration file stores them, keyed by the better
    face's band name: weight, per-embedder tables and pair counts, or a borrowed cell's with
    "fallback" naming it. A cell that falls back to the band's own fit is left out (the
    band's entry decides)."""
    cells = all_cells(len(bands))
    pairs = {c: (get(True, c[0], None, c[1]), get(False, c[0], None, c[1])) for c in cells}
    fits = {c: fitted(*pairs[c], best_weight, thresholds) for c in cells}
    own = {c: {"fusion_weight": fit[0], "embedders": table(*pairs[c], fit[0]),
               "genuine_pairs": len(pairs[c][0]), "impostor_pairs": len(pairs[c][1])}
           for c, fit in fits.items() if fit is not None}
    out: dict[int, dict[str, Any]] = {w: {} for w in range(len(bands))}
    for cell in cells:
        source = next((c for c in fallbacks(cell) if c in own), None)
        if source is None:
            continue
        entry = dict(own[source])
        if source != cell:
            entry |= {"fallback": cell_name(bands, *source),
                      "own_pairs": [len(pairs[cell][0]), len(pairs[cell][1])]}
        out[cell[0]][bands[cell[1]].name] = entry
    return out



def measured_cells(get: Callable[..., np.ndarray], entries: list[dict[str, Any]],
                   fused: Callable[[np.ndarray, float], np.ndarray]) -> dict[str, Any]:
    """FAR and TAR per cell of a calibration's band `entries` (as stored) on these pairs:
    out of sample for copies it was not fitted on. The best band's pairs are left out (the
    clean calibration decides them)."""
    bands = tuple(QualityBand(str(b["name"]), float(b["min_interocular_px"]),
                              float(b["min_sharpness"])) for b in entries)
    out = {}
    for worse, better in all_cells(len(bands)):
        if worse == 0:
            continue
        band = entries[worse]
        cell = band.get("cells", {}).get(bands[better].name, band)
        gen, imp = get(True, worse, None, better), get(False, worse, None, better)
        f_gen, f_imp = fused(gen, cell["fusion_weight"]), fused(imp, cell["fusion_weight"])
        out[cell_name(bands, worse, better)] = {
            far_key(far): {"far": rate(int(np.sum(f_imp > t)), len(imp)),
                           "far_over_asked": float(np.mean(f_imp > t)) / far if len(imp)
                           else float("nan"),
                           "tar": float(np.mean(f_gen > t)) if len(gen) else float("nan")}
            for far in REPORTED_FARS
            for t in (cell["embedders"]["fusion"]["thresholds"][far_key(far)],)}
    return out
