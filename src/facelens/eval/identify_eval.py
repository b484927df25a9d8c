"""`facelens eval identify ROOT`: open-set 1:N identification on an LFW-layout folder.

Gallery: one image (the first of the seeded sample) of every person with >= 2 images.
Mated probes: those people's other images. Non-mated probes: every single-image person.
Reports rank-1 (closed set), and FNIR at FPIR 1e-2 / 1e-3 with the threshold taken from the
non-mated searches themselves; alongside, the threshold the open-set formula predicts from
the 1:1 calibration (matching/open_set.py) and the FPIR it really gives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facelens.api import Engine
from facelens.eval.lfw import build_protocol, fuse, stack
from facelens.eval.lfw_report import Progress, facelens_cached

FPIRS = (1e-2, 1e-3)


def identification_metrics(gallery: np.ndarray, gallery_ids: np.ndarray, mated: np.ndarray,
                           mated_ids: np.ndarray, nonmated: np.ndarray) -> dict[str, Any]:
    """Rank-1 and FNIR at FPIR for L2-normalised embeddings (NaN rows = no face found)."""
    def top1(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = np.nan_to_num(queries, nan=0.0) @ gallery.T
        best = scores.argmax(1)
        top = scores[np.arange(len(queries)), best]
        top[np.isnan(queries[:, 0])] = -np.inf  # no face: nothing is returned
        return top, gallery_ids[best]

    m_score, m_id = top1(mated)
    n_score, _ = top1(nonmated)
    hit = m_id == mated_ids
    out: dict[str, Any] = {
        "gallery_size": len(gallery), "mated_probes": len(mated),
        "nonmated_probes": len(nonmated), "rank1": float(np.mean(hit & np.isfinite(m_score))),
        "fnir_at_fpir": {},
    }
    ordered = np.sort(n_score)[::-1]
    for fpir in FPIRS:
        allowed = int(np.floor(fpir * len(ordered)))
        t = float(ordered[min(allowed, len(ordered) - 1)])
        out["fnir_at_fpir"][f"{fpir:.0e}"] = {
            "threshold": t, "fnir": float(1 - np.mean(hit & (m_score > t))),
            "nonmated_above": int((n_score > t).sum())}
    return out | {"_nonmated_scores": n_score, "_mated": (m_score, hit)}


def evaluate_identification(engine: Engine, root: Path, *, embedder: str = "sface-flip",
                            workers: int = 2, cache: Path = Path("out/eval"),
                            max_per_person: int = 8, seed: int = 0,
                            progress: Progress | None = None) -> dict[str, Any]:
    """Embeddings as `engine`'s runtime computes them; the predicted thresholds from its
    calibration."""
    proto = build_protocol(root, max_per_person=max_per_person, singles=10**9, seed=seed)
    feats = facelens_cached(proto.files, engine.settings.runtime, cache, workers, progress)
    rows = [feats[f] for f in proto.files]
    if embedder == "fusion":
        weight = engine.fusion_weight()
        emb = fuse(stack(rows, "sface-flip", 128), stack(rows, "dlib", 128), weight)
    else:
        emb = stack(rows, embedder, 128)
    labels = proto.labels
    counts = np.bincount(labels)
    first = np.r_[True, labels[1:] != labels[:-1]]
    multi = counts[labels] >= 2
    enrol = first & multi & ~np.isnan(emb[:, 0])
    mated = multi & ~first
    report = identification_metrics(emb[enrol], labels[enrol], emb[mated], labels[mated],
                                    emb[~multi])
    n_scores = report.pop("_nonmated_scores")
    m_score, hit = report.pop("_mated")
    predicted = {}
    for fpir in FPIRS:
        t = engine.calibration.open_set_threshold(embedder, fpir, int(enrol.sum()))
        predicted[f"{fpir:.0e}"] = {
            "threshold": t.value, "extrapolated": t.extrapolated,
            "measured_fpir": float(np.mean(n_scores > t.value)),
            "fnir": float(1 - np.mean(hit & (m_score > t.value)))}
    return report | {"embedder": embedder, "open_set_formula": predicted,
                     "enrolment_images_without_face": int((first & multi).sum() - enrol.sum())}
