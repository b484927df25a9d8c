"""`facelens eval identify ROOT`: open-set 1:N identification on an LFW-layout folder.

Gallery: one image (the first of the seeded sample) of every person with >= 2 images.
Mated probes: those people's other images. Non-mated searches: every single-image person, and
every mated probe again against the gallery without its own person (so FPIR 1e-3 is measured
on ~4,000 searches, not ~2,000). LFW names a few people twice (`ALIASES`); they count as one.

Reports rank-1 (closed set) and FNIR at FPIR 1e-2 / 1e-3: at the threshold the open-set
formula predicts from the shipped 1:1 calibration (matching/open_set.py), with the FPIR it
really gives, and at the threshold the non-mated searches themselves set (the best any
threshold can do). Held out: the identities split in two halves by a hash of the name; on
each half, raw scores and cohort-normalised ones (T-norm, a cohort of the other half's
single-image people) with thresholds fitted on the other half only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facelens.api import Engine
from facelens.errors import FacelensError
from facelens.eval.lfw import build_protocol, fuse, stack
from facelens.eval.lfw_report import Progress, facelens_cached, impostor_tail
from facelens.geometry import l2_normalize
from facelens.matching.calibration import Calibration
from facelens.matching.open_set import cohort_stats, per_comparison_far, t_normalised

FPIRS = (1e-2, 1e-3)
ALIASES = {"Sung_Hong_Choi": "Choi_Sung-hong", "Yingfan_Wang": "Wang_Yingfan",
           "Mireya_Elisa_Moscoso_Rodriguez": "Mireya_Moscoso"}
"""lfw-dev people filed under two names (name order, a second surname), checked by eye: each
single image was the top non-mated search result at cosine 0.81-0.88, i.e. a genuine match."""
COHORT_TOP_K = 200
Normalise = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(probe rows, probes × gallery scores) -> the scores thresholds apply to."""


def raw(_rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return scores


TAIL_PAIRS = 50
"""Impostor pairs a half needs to fit the other's thresholds: impostor_scores holds each pair
both ways, and impostor_tail's first point (FAR 1e-1) wants 10 of those 100 scores above it."""


def person_names(files: list[Path]) -> np.ndarray:
    """Each photo's person (its folder), aliases merged."""
    return np.array([ALIASES.get(f.parent.name, f.parent.name) for f in files])


def half_of(name: str) -> int:
    """The held-out half (0 or 1) a person falls in, by a hash of the name."""
    return hashlib.sha256(b"open-set halves:" + name.encode()).digest()[0] % 2


def require_open_set(root: Path, files: list[Path]) -> None:
    """Bad input (exit 2) unless someone has 3 photos (enrolment_photos) and each half holds
    TAIL_PAIRS impostor pairs among its people with 2+ photos and a single-photo person (the
    other half's cohort): checked before any feature is computed."""
    names, counts = np.unique(person_names(files), return_counts=True)
    if not (counts >= 3).any():
        raise FacelensError(f"{root}: nobody has 3 photos; searches after enrolling 2 need "
                            "one person who has")
    for half in (0, 1):
        mine = np.array([half_of(n) == half for n in names])
        multi = counts[mine & (counts >= 2)]
        pairs = int((multi.sum() ** 2 - (multi ** 2).sum()) // 2)
        singles = int((mine & (counts == 1)).sum())
        if pairs < TAIL_PAIRS or not singles:
            raise FacelensError(
                f"{root}: too few people for held-out half {half} (people split by a hash "
                f"of the name): {pairs} impostor pairs among people with 2+ photos (needs "
                f"{TAIL_PAIRS}), {singles} people with one photo (needs 1)")


class OpenSetProtocol:
    """Identities (aliases merged), the gallery / mated / non-mated masks, and the halves."""

    def __init__(self, files: list[Path], emb: np.ndarray) -> None:
        names = person_names(files)
        _, self.labels = np.unique(names, return_inverse=True)
        self.emb = emb
        found = ~np.isnan(emb[:, 0])
        counts = np.bincount(self.labels)
        first = np.zeros(len(files), bool)
        first[np.unique(self.labels, return_index=True)[1]] = True
        self.multi = counts[self.labels] >= 2
        self.gallery = first & self.multi & found
        self.enrol_missed = int((first & self.multi & ~found).sum())
        self.mated = self.multi & ~first
        self.half = np.array([half_of(n) for n in names])

    def searches(self, where: np.ndarray, normalise: Normalise = raw,
                 probes: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Per mated probe in `where`: its top score and whether rank 1 is its person; the top
        score of every non-mated search (single-image people, then the mated probes without
        their own person); the gallery size. `probes`: the probe side's vectors (row-aligned,
        e.g. CCTV-like copies) when they are not the gallery's."""
        e = np.nan_to_num(self.emb)
        p_raw = self.emb if probes is None else probes
        p = np.nan_to_num(p_raw)
        g, m = self.gallery & where, self.mated & where
        single = ~self.multi & where
        gallery_ids = self.labels[g]
        mated = normalise(np.flatnonzero(m), p[m] @ e[g].T)
        mated[np.isnan(p_raw[m, 0])] = -np.inf  # no face: nothing is returned
        own = gallery_ids[None, :] == self.labels[m][:, None]
        hit = gallery_ids[mated.argmax(1)] == self.labels[m]
        nonmated = normalise(np.flatnonzero(single), p[single] @ e[g].T)
        nonmated[np.isnan(p_raw[single, 0])] = -np.inf
        non = np.r_[nonmated.max(1), np.where(own, -np.inf, mated).max(1)]
        return mated.max(1), hit, non, int(g.sum())

    def impostor_scores(self, where: np.ndarray, normalise: Normalise = raw) -> np.ndarray:
        """Every cross-identity pair among the people with >= 2 images in `where` (probe
        rows normalised): what a threshold is fitted on."""
        rows = np.flatnonzero(self.multi & where & ~np.isnan(self.emb[:, 0]))
        e = self.emb[rows]
        scores = normalise(rows, e @ e.T)
        return scores[self.labels[rows][:, None] != self.labels[rows][None, :]]


def fnir_at(top: np.ndarray, hit: np.ndarray, non: np.ndarray,
            thresholds: dict[str, float] | None = None, fpirs: tuple[float, ...] = FPIRS
            ) -> dict[str, Any]:
    """FNIR and measured FPIR per FPIR at `thresholds` (default: set by `non` itself)."""
    ordered = np.sort(non)[::-1]
    out = {}
    for fpir in fpirs:
        key = f"{fpir:.0e}"
        t = (thresholds[key] if thresholds is not None
             else float(ordered[min(int(np.floor(fpir * len(ordered))), len(ordered) - 1)]))
        out[key] = {"threshold": round(t, 4), "fnir": round(float(1 - np.mean(hit & (top > t))), 4),
                    "measured_fpir": round(float(np.mean(non > t)), 5),
                    "nonmated_above": int((non > t).sum())}
    return out


def fitted_thresholds(impostor: np.ndarray, gallery_size: int,
                      fpirs: tuple[float, ...] = FPIRS) -> dict[str, float]:
    """Per FPIR, the 1:1 threshold at the open-set formula's per-comparison FAR for
    `gallery_size`, read off (or extrapolated along) the tail of `impostor`; needs >= 30
    pairs."""
    tail = impostor_tail(impostor)
    fars = np.log10([p[0] for p in tail["tail"]])
    values = np.array([p[1] for p in tail["tail"]])
    # Too few pairs to reach 1e-3: the line through the rarest three points measured.
    slope, intercept = tail["tail_fit"] or np.polyfit(fars[-3:], values[-3:], 1)
    out = {}
    for fpir in fpirs:
        x = np.log10(per_comparison_far(fpir, gallery_size))
        out[f"{fpir:.0e}"] = float(np.interp(x, fars[::-1], values[::-1]) if x >= fars[-1]
                                   else intercept + slope * x)
    return out


def held_out(protocol: OpenSetProtocol, measured: int) -> dict[str, Any]:
    """On half `measured`: raw and T-normalised scores, thresholds fitted on the other half
    (and the best the measured half's own non-mated searches allow, for reference)."""
    here, other = protocol.half == measured, protocol.half != measured
    e = np.nan_to_num(protocol.emb)
    cohort = e[~protocol.multi & other & ~np.isnan(protocol.emb[:, 0])]
    mean, spread = cohort_stats(e, cohort, COHORT_TOP_K)

    def tnorm(rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return t_normalised(scores, mean[rows], spread[rows])

    out: dict[str, Any] = {}
    for name, normalise in (("raw", raw), (f"tnorm_top{COHORT_TOP_K}", tnorm)):
        top, hit, non, size = protocol.searches(here, normalise)
        fitted = fitted_thresholds(protocol.impostor_scores(other, normalise), size)
        out[name] = {"gallery_size": size, "mated_probes": len(top),
                     "nonmated_searches": len(non), "rank1": round(float(np.mean(hit)), 4),
                     "fitted_on_other_half": fnir_at(top, hit, non, fitted),
                     "best_threshold": fnir_at(top, hit, non)}
    return out | {"cohort_size": len(cohort)}


def banded(protocol: OpenSetProtocol, rows: list[dict[str, Any]], calibration: Calibration,
           stored_weight: float) -> dict[str, Any]:
    """Fused searches as gallery identify runs them: each probe (features `rows`, clean or
    CCTV-like, row-aligned with the protocol; the gallery stays clean) in its quality cell,
    searched at that cell's fusion weight against the open-set threshold of its calibration
    for this gallery size (matching.calibration.probe_in_band)."""
    sface, dlib = stack(rows, "sface-flip", 128), stack(rows, "dlib", 128)
    cells = [calibration.for_faces((r["interocular"], r["sharpness"])) if "interocular" in r
             else ("", calibration) for r in rows]
    weights = np.array([c.fusion_weight(stored_weight) for _, c in cells])[:, None]
    probes = np.concatenate([sface * (weights / np.sqrt(stored_weight)),
                             dlib * ((1 - weights) / np.sqrt(1 - stored_weight))], 1)
    everyone = np.ones(len(rows), bool)
    top, hit, non, size = protocol.searches(everyone, probes=probes)
    mated_rows = np.flatnonzero(protocol.mated)
    non_rows = np.r_[np.flatnonzero(~protocol.multi), mated_rows]
    names = np.array([name for name, _ in cells])
    out: dict[str, Any] = {"probes_per_cell": {str(n): int(c) for n, c in zip(
        *np.unique(names[np.r_[mated_rows, np.flatnonzero(~protocol.multi)]],
                   return_counts=True), strict=True)}}
    by_cell = {name: cell for name, cell in cells}
    for fpir in FPIRS:
        limit = {name: cell.open_set_threshold("fusion", fpir, size).value
                 for name, cell in by_cell.items()}
        t = np.array([limit[name] for name in names])
        out[f"{fpir:.0e}"] = {
            "fnir": round(float(1 - np.mean(hit & (top > t[mated_rows]))), 4),
            "measured_fpir": round(float(np.mean(non > t[non_rows])), 5),
            "nonmated_above": int((non > t[non_rows]).sum()),
            "thresholds": {name: round(v, 4) for name, v in limit.items()}}
    return out


def enrolment_photos(files: list[Path], emb: np.ndarray, calibration: Calibration,
                     embedder: str, photos: int) -> dict[str, Any]:
    """FNIR and measured FPIR when `photos` images of each person with >= 3 are enrolled and
    each subject is searched by one vector: the plain mean of its templates (the mean
    template score), as gallery identify does (gallery/templates.centroid), and, for
    comparison, that mean renormalised, at the open-set formula's thresholds (N = subjects) and at
    the best threshold. Mated probes: their images from the third on, the same for any
    `photos` <= 2; non-mated: single-image people and the mated probes without their own
    person."""
    _, labels = np.unique(person_names(files), return_inverse=True)
    found = ~np.isnan(emb[:, 0])
    e = np.nan_to_num(emb)
    order = np.zeros(len(files), int)  # each image's place among its person's
    for label in np.unique(labels):
        order[labels == label] = np.arange(int((labels == label).sum()))
    counts = np.bincount(labels)
    enrolled = (counts[labels] >= 3) & (order < photos) & found
    people = np.unique(labels[enrolled])
    means = np.stack([e[enrolled & (labels == p)].mean(0) for p in people])
    mated = (counts[labels] >= 3) & (order >= 2)
    single = counts[labels] == 1
    formula = {f"{f:.0e}": calibration.open_set_threshold(embedder, f, len(people)).value
               for f in FPIRS}
    out: dict[str, Any] = {"people": len(people), "templates": int(enrolled.sum())}
    for kind, subjects in (("mean_of_templates", means),
                           ("renormalised_mean", l2_normalize(means))):
        scores = e[mated] @ subjects.T
        scores[~found[mated]] = -np.inf
        own = people[None, :] == labels[mated][:, None]
        top, hit = scores.max(1), people[scores.argmax(1)] == labels[mated]
        strangers = e[single] @ subjects.T
        strangers[~found[single]] = -np.inf
        non = np.r_[strangers.max(1), np.where(own, -np.inf, scores).max(1)]
        out |= {"mated_probes": len(top), "nonmated_searches": len(non)}
        out[kind] = {"open_set_formula": fnir_at(top, hit, non, formula),
                     "best_threshold": fnir_at(top, hit, non)}
    return out


def evaluate_identification(engine: Engine, root: Path, *, embedder: str = "sface-flip",
                            workers: int = 2, cache: Path = Path("out/eval"),
                            max_per_person: int = 8, seed: int = 0,
                            progress: Progress | None = None, degrade: tuple[str, ...] = ()
                            ) -> dict[str, Any]:
    """Embeddings as `engine`'s runtime computes them; the predicted thresholds from its
    calibration. For "fusion", also the searches by quality cell (`banded`), with clean
    probes and with probes made CCTV-like at each `degrade` level (eval/degrade.py)."""
    proto = build_protocol(root, max_per_person=max_per_person, singles=10**9, seed=seed)
    proto.require(root, genuine=True)
    require_open_set(root, proto.files)
    shift_tta = engine.settings.sface_shift_tta
    feats = facelens_cached(proto.files, engine.settings.runtime, cache, workers, progress,
                            shift_tta=shift_tta)
    rows = [feats[f] for f in proto.files]
    if embedder == "fusion":
        emb = fuse(stack(rows, "sface-flip", 128), stack(rows, "dlib", 128),
                   engine.fusion_weight())
    else:
        emb = stack(rows, embedder, 128)
    protocol = OpenSetProtocol(proto.files, emb)
    everyone = np.ones(len(proto.files), bool)
    top, hit, non, size = protocol.searches(everyone)
    formula = {f"{fpir:.0e}": engine.calibration.open_set_threshold(embedder, fpir, size).value
               for fpir in FPIRS}
    by_cell = {}
    if embedder == "fusion":
        for level in ("clean", *degrade):
            probe_feats = feats if level == "clean" else facelens_cached(
                proto.files, engine.settings.runtime, cache, workers, progress, degrade=level,
                shift_tta=shift_tta)
            by_cell[level] = banded(protocol, [probe_feats[f] for f in proto.files],
                                    engine.calibration, engine.fusion_weight())
    photos = {f"{k}_per_person": enrolment_photos(proto.files, emb, engine.calibration,
                                                  embedder, k) for k in (1, 2)}
    return {"embedder": embedder, "aliases_merged": ALIASES, "gallery_size": size,
            **({"by_quality_cell": by_cell} if by_cell else {}),
            "enrolment_photos_people_with_3_or_more": photos,
            "mated_probes": len(top), "nonmated_searches": len(non),
            "rank1": round(float(np.mean(hit)), 4),
            "open_set_formula": fnir_at(top, hit, non, formula),
            "best_threshold": fnir_at(top, hit, non),
            "enrolment_images_without_face": protocol.enrol_missed,
            "held_out": {f"half_{h}": held_out(protocol, h) for h in (0, 1)}}
