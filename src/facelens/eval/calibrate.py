"""`facelens calibrate FOLDER`: operating points fitted on the deployment's own population.

The folder holds photos of many different people: one folder per person (LFW layout, the same
protocol as `facelens eval lfw`, so lfw-dev gives the same thresholds), or one photo per person
in a flat folder. Impostor pairs need no label beyond "these are different people". Each FAR
is supported only when at least `MIN_IMPOSTORS_ABOVE` impostor pairs score above its threshold;
below that the threshold is one of the few highest impostor scores and the report warns.

With groups (person-folder names per group, from the data set's own labels), each group and
the rest are fitted on their own within-group impostor pairs, and every threshold written is
the highest among the whole set and the groups that support that FAR: the FAR asked for then
holds for each measured group.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from facelens.eval.lfw import (
    Protocol,
    build_protocol,
    fuse,
    pair_scores,
    require_pairs,
    stack,
)
from facelens.eval.lfw_report import (
    Progress,
    cascade_bands,
    facelens_cached,
    fusion_weight_for,
    impostor_tail,
    tail_line,
)
from facelens.matching.calibration import Calibration
from facelens.matching.operating_points import FARS, far_key, threshold_at_far
from facelens.models.runtime import runtime_label
from facelens.settings import Runtime

MIN_IMPOSTORS_ABOVE = 10
"""A FAR is measured when this many impostor pairs lie above its threshold (n >= 10 / FAR)."""
EMBEDDERS = ("sface", "sface-flip", "dlib", "fusion")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def population(root: Path, *, max_per_person: int = 8, singles: int = 1000,
               seed: int = 0) -> Protocol:
    """The photos and identity labels of `root`: LFW layout (a folder per person) through the
    `eval lfw` protocol, else every image in the flat folder a different person."""
    images = root / "images" if (root / "images").is_dir() else root
    if any(p.is_dir() for p in images.iterdir()):
        return build_protocol(root, max_per_person=max_per_person, singles=singles, seed=seed)
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return Protocol(files, np.arange(len(files), dtype=np.int32))


def supported(impostor_pairs: int, far: float) -> bool:
    return impostor_pairs * far >= MIN_IMPOSTORS_ABOVE


def fit(embeddings: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    """Per embedder: thresholds at FARS (with TAR where there are genuine pairs), the pair
    counts, which FARS the impostor pairs support, and the impostor tail."""
    variants: dict[str, Any] = {}
    for name, emb in embeddings.items():
        genuine, impostor = pair_scores(emb, labels)
        ordered = np.sort(impostor)[::-1]
        points = {}
        for far in FARS:
            t = threshold_at_far(ordered, far, presorted=True)
            points[far_key(far)] = {"threshold": t, "tar": float(np.mean(genuine > t))
                                    if len(genuine) else None}
        variants[name] = {"tar_at_far": points, "impostor_pairs": len(impostor),
                          "genuine_pairs": len(genuine),
                          "supported": {far_key(f): supported(len(impostor), f) for f in FARS}
                          } | impostor_tail(impostor)
    return variants


def calibrate(root: Path, *, runtime: Runtime, default_weight: float,
              groups: dict[str, set[str]] | None = None, workers: int = 2,
              cache: Path = Path("out/eval"), progress: Progress | None = None,
              max_per_person: int = 8, singles: int = 1000, seed: int = 0,
              keep_bands: Calibration | None = None, shift_tta: bool = False
              ) -> dict[str, Any]:
    """The calibration report of `root`: the thresholds to write ("variants", in the form
    `lfw_report.write_calibration` takes), each group's own fit, and warnings. The fusion
    weight is fitted where there are genuine pairs, else `default_weight` (the active one).
    Sharp photos cannot fit the low-quality cells, so those of `keep_bands` (the calibration
    in force) are kept as they are; the best band's pairs are decided by the thresholds fitted
    here (matching/calibration.py)."""
    proto = population(root, max_per_person=max_per_person, singles=singles, seed=seed)
    proto.require(root, genuine=False)
    feats = facelens_cached(proto.files, runtime, cache, workers, progress, shift_tta=shift_tta)
    rows = [feats[f] for f in proto.files]
    embeddings = {k: stack(rows, k, 128) for k in ("sface", "sface-flip", "dlib")}
    require_pairs(root, proto.labels[~np.isnan(embeddings["sface"][:, 0])], genuine=False,
                  what="faces found")
    has_genuine = len(proto.labels) > len(np.unique(proto.labels))
    weight = fusion_weight_for(embeddings, proto.labels) if has_genuine else default_weight
    embeddings["fusion"] = fuse(embeddings["sface-flip"], embeddings["dlib"], weight)

    whole = fit(embeddings, proto.labels)
    if has_genuine:
        whole["fusion"]["cascade"] = cascade_bands(
            pair_scores(embeddings["sface"], proto.labels),
            pair_scores(embeddings["fusion"], proto.labels))
    per_group: dict[str, Any] = {}
    if groups:
        person = np.array([f.parent.name if f.parent != root else f.stem for f in proto.files])
        members = {name: np.isin(person, sorted(people)) for name, people in groups.items()}
        members["rest"] = ~np.any(np.stack(list(members.values())), axis=0)
        for name, mask in members.items():
            if mask.sum() >= 2:
                per_group[name] = fit({k: v[mask] for k, v in embeddings.items()},
                                      proto.labels[mask])
    variants = conservative(whole, list(per_group.values()))
    kept = {"quality_bands": {"calibration": keep_bands.data["quality_bands"],
                              "source": keep_bands.data.get("quality_bands_source",
                                                            keep_bands.source),
                              "kept_from": keep_bands.origin}
            } if keep_bands is not None and keep_bands.quality_bands else {}
    return kept | {"root": str(root), "images": len(proto.files),
            "identities": len(np.unique(proto.labels)),
            "faces_not_found": int(np.isnan(embeddings["sface"][:, 0]).sum()),
            "fusion_weight": weight, "fusion_weight_fitted": has_genuine,
            "sface_runtime": runtime_label(runtime), "variants": variants,
            "groups": {name: _group_summary(fitted) for name, fitted in per_group.items()},
            "warnings": warnings(variants)}


def conservative(whole: dict[str, Any], groups: list[dict[str, Any]]) -> dict[str, Any]:
    """`whole` with each threshold (and tail point) raised to the highest among the groups
    that support its FAR. A raised FAR loses its cascade band (fitted for the old threshold):
    verify then runs the full fusion there."""
    out: dict[str, Any] = {}
    for name, variant in whole.items():
        merged = {k: dict(v) for k, v in variant["tar_at_far"].items()}
        raised: set[str] = set()
        for group in groups:
            g = group[name]
            for key, point in g["tar_at_far"].items():
                if g["supported"][key] and point["threshold"] > merged[key]["threshold"]:
                    merged[key]["threshold"] = point["threshold"]
                    merged[key]["tar"] = None  # not measured at this threshold
                    raised.add(key)
        running = -np.inf  # a stricter FAR never gets a lower threshold than a looser one
        for key in (far_key(f) for f in FARS):
            if merged[key]["threshold"] < running:
                merged[key] |= {"threshold": running, "tar": None}
                raised.add(key)
            running = merged[key]["threshold"]
        tail = [list(p) for p in variant["tail"]]
        for group in groups:
            theirs = {round(f, 12): t for f, t in group[name]["tail"]}
            for p in tail:
                p[1] = max(p[1], theirs.get(round(p[0], 12), p[1]))
        for looser, stricter in pairwise(tail):  # FAR descends
            stricter[1] = max(stricter[1], looser[1])
        entry = variant | {"tar_at_far": merged, "tail": tail,
                           "tail_fit": tail_line(tail) if groups else variant["tail_fit"],
                           "raised": sorted(raised)}
        if "cascade" in variant:
            entry["cascade"] = {k: v for k, v in variant["cascade"].items()
                                if k not in raised}
        out[name] = entry
    return out


def warnings(variants: dict[str, Any]) -> list[str]:
    """One line per embedder whose impostor pairs cannot measure some FARS (variants of a
    `calibrate` or an `eval lfw` report)."""
    out = []
    for name, variant in variants.items():
        n = variant["impostor_pairs"]
        short = [far_key(f) for f in FARS if not supported(n, f)]
        if short:
            needs = ", ".join(f"{round(MIN_IMPOSTORS_ABOVE / float(k)):,}" for k in short)
            out.append(f"{name} @ FAR {', '.join(short)}: {n:,} impostor pairs cannot measure "
                       f"{'it' if len(short) == 1 else 'them'} (needs {needs}); those "
                       "thresholds are only the highest impostor scores: add more people")
    return out


def _group_summary(fitted: dict[str, Any]) -> dict[str, Any]:
    return {name: {"impostor_pairs": v["impostor_pairs"], "genuine_pairs": v["genuine_pairs"],
                   "thresholds": {k: p["threshold"] for k, p in v["tar_at_far"].items()},
                   "supported": v["supported"]}
            for name, v in fitted.items()}


def read_group(path: Path) -> set[str]:
    """Person-folder names, one a line; '#' starts a comment."""
    lines = (line.split("#", 1)[0].strip()
             for line in path.read_text(errors="replace").splitlines())
    return {line for line in lines if line}
