"""`facelens eval demographics ROOT --group NAME=FILE`: false-match rate per demographic group
at the thresholds in force, the way NIST FRVT Part 3 reports it.

Groups come only from the data set's own labels (a file of person-folder names per group);
facelens never infers a group. A group's impostor pairs are pairs of different people both
in the group (the pairs a deployment among that population makes); "rest" is every other
person of the `eval lfw` protocol. A group's photos are all of its people's (at most
`max_per_person` each, fixed seed), not only those the protocol sampled, for more pairs.

The 95% intervals are Wilson score intervals over pairs; pairs sharing a photo are not
independent, so the intervals are somewhat too narrow.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from facelens.errors import FacelensError
from facelens.eval.calibrate import supported
from facelens.eval.lfw import build_protocol, fuse, pair_scores, stack
from facelens.eval.lfw_report import Progress, facelens_cached
from facelens.matching.calibration import Calibration
from facelens.matching.operating_points import FARS, far_key, threshold_at_far
from facelens.settings import Runtime

SHIPPED_FARS = (1e-3, 1e-4)
EMBEDDERS = ("fusion", "sface-flip")


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate `hits` / `n`."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def group_files(root: Path, people: set[str], max_per_person: int, seed: int) -> list[Path]:
    images = root / "images" if (root / "images").is_dir() else root
    rng = random.Random(seed)
    out = []
    for name in sorted(people):
        files = sorted((images / name).glob("*.jpg"))
        out.extend(sorted(rng.sample(files, min(max_per_person, len(files)))))
    return out


def demographic_fmr(root: Path, groups: dict[str, set[str]], calibration: Calibration, *,
                    runtime: Runtime, workers: int = 2, cache: Path = Path("out/eval"),
                    progress: Progress | None = None, max_per_person: int = 8,
                    seed: int = 0) -> dict[str, Any]:
    """Per group and embedder: FMR (with pairs and 95% interval) and FNMR at the calibrated
    FAR 1e-3 and 1e-4 thresholds, and the group's own thresholds where its pairs support them."""
    proto = build_protocol(root, max_per_person=max_per_person, seed=seed)
    proto.require(root, genuine=False)
    labelled = set().union(*groups.values())
    sets = {name: group_files(root, people, max_per_person, seed)
            for name, people in groups.items()}
    sets["rest"] = [f for f in proto.files if f.parent.name not in labelled]
    for name, files in sets.items():
        if (people := len({f.parent.name for f in files})) < 2:
            raise FacelensError(f"{root}: photos of {people} people in group {name!r}; its "
                                "impostor pairs need 2")
    feats = facelens_cached([f for files in sets.values() for f in files], runtime, cache,
                            workers, progress)
    weight = calibration.fusion_weight(0.35)
    report: dict[str, Any] = {"root": str(root), "calibration": calibration.origin,
                              "calibration_source": calibration.source,
                              "fusion_weight": weight, "groups": {}}
    for name, files in sets.items():
        rows = [feats[f] for f in files]
        labels = np.unique([f.parent.name for f in files], return_inverse=True)[1]
        emb = {k: stack(rows, k, 128) for k in ("sface-flip", "dlib")}
        emb["fusion"] = fuse(emb["sface-flip"], emb["dlib"], weight)
        entry: dict[str, Any] = {"people": int(labels.max() + 1), "images": len(files)}
        for embedder in EMBEDDERS:
            genuine, impostor = pair_scores(emb[embedder], labels)
            at: dict[str, Any] = {}
            for far in SHIPPED_FARS:
                t = calibration.operating_point(embedder, far).threshold
                hits = int(np.sum(impostor > t))
                fmr = hits / max(len(impostor), 1)
                at[far_key(far)] = {
                    "threshold": round(t, 4), "false_matches": hits, "fmr": fmr,
                    "fmr_95": [round(v, 6) for v in wilson(hits, len(impostor))],
                    "fmr_over_asked": round(fmr / far, 2),
                    "fnmr": float(np.mean(genuine <= t)) if len(genuine) else None}
            ordered = np.sort(impostor)[::-1]
            entry[embedder] = {
                "impostor_pairs": len(impostor), "genuine_pairs": len(genuine),
                "at_shipped_thresholds": at,
                "own_thresholds": {far_key(f): round(threshold_at_far(ordered, f,
                                                                      presorted=True), 4)
                                   for f in FARS if supported(len(impostor), f)}}
        report["groups"][name] = entry
    return report


SHIPPED_REPORT = "demographics-lfw-dev.json"
"""`facelens eval demographics` on lfw-dev's labelled groups at the package's bf16 thresholds."""


def differential_note(calibration: Calibration) -> str:
    """One line for `facelens models`: the population the thresholds in force were fitted on
    and, when the package measured them per group, each group's false-match rate over the
    asked FAR at them (or that nobody measured this calibration per group)."""
    shipped = resources.files("facelens.data").joinpath(SHIPPED_REPORT)
    report = json.loads(shipped.read_text()) if shipped.is_file() else {}
    head = f"population: {calibration.source}"
    if report.get("calibration") != calibration.origin:
        return (f"{head}; not measured per group (`facelens eval demographics ROOT --group "
                "NAME=FILE`)")
    over = []
    for group, entry in report["groups"].items():
        if group == "rest":
            continue
        for embedder in EMBEDDERS:
            at = entry[embedder]["at_shipped_thresholds"]
            ratios = " / ".join(f"{at[far_key(f)]['fmr_over_asked']:g}×" for f in SHIPPED_FARS)
            over.append(f"{group} {embedder} {ratios}")
    fars = " / ".join(f"{f:g}" for f in SHIPPED_FARS)
    return (f"{head}; false matches per group over the asked FAR {fars}: {', '.join(over)} "
            "(a population scoring higher: `facelens calibrate FOLDER --group NAME=FILE`)")
