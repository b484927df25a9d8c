"""Run the lfw protocol end to end: extract (cached), score every variant, report, save."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from facelens.eval.lfw import (
    FUSION_GRID,
    build_protocol,
    facelens_features,
    fuse,
    pair_scores,
    pairs_accuracy,
    peer_features,
    require_pairs,
    roc,
    run_all,
    stack,
    tar_at_far,
)
from facelens.matching.operating_points import FARS, far_key, threshold_at_far
from facelens.models.registry import MEASURED_FILE
from facelens.models.runtime import runtime_label
from facelens.settings import Runtime

Progress = Callable[[str, int], Callable[[int], None]]
"""progress(label, total) -> advance(n): the CLI passes a Rich progress bar."""


def features_cache_kind(runtime: Runtime) -> str:
    """Cache name of facelens features: SFace's numbers depend on what runs it (settings.runtime
    and, for OpenVINO, the precision), so each runtime keeps its own cache; dlib's ResNet runs
    in OpenVINO fp32."""
    return f"facelens-{runtime_label(runtime)}-dlib-openvino"


def facelens_cached(files: list[Path], runtime: Runtime, cache: Path, workers: int,
                    progress: Progress | None, degrade: str | None = None,
                    shift_tta: bool = False) -> dict[Path, dict[str, Any]]:
    """facelens features of `files` (SFace on `runtime`, made CCTV-like at the `degrade` level
    first if given, shifted chips averaged with `shift_tta`), computed once per cache."""
    kind = (features_cache_kind(runtime) + ("-shift-tta" if shift_tta else "")
            + (f"-{degrade}" if degrade else ""))
    return _cached(kind, partial(facelens_features, runtime=runtime, degrade=degrade,
                                 shift_tta=shift_tta), files, cache, workers, progress)


def _cached(kind: str, fn: Callable[[Path], dict[str, Any]], files: list[Path], cache: Path,
            workers: int, progress: Progress | None) -> dict[Path, dict[str, Any]]:
    store = cache / f"{kind}.pkl"
    known: dict[Path, dict[str, Any]] = pickle.loads(store.read_bytes()) if store.is_file() else {}
    todo = [f for f in dict.fromkeys(files) if f not in known]
    if todo:
        advance = progress(f"{kind}: {len(todo)} images", len(todo)) if progress else None
        known.update(zip(todo, run_all(fn, todo, workers, advance), strict=True))
        cache.mkdir(parents=True, exist_ok=True)
        store.write_bytes(pickle.dumps(known))
    return known


def _summary(genuine: np.ndarray, impostor: np.ndarray) -> dict[str, Any]:
    return {"tar_at_far": tar_at_far(genuine, impostor), "genuine_pairs": len(genuine),
            "impostor_pairs": len(impostor)}


CASCADE_MARGIN = 0.02


def cascade_bands(first: tuple[np.ndarray, np.ndarray], fused: tuple[np.ndarray, np.ndarray]
                  ) -> dict[str, Any]:
    """Per FAR, the band of plain sface scores inside which the fused decision can differ.

    Outside [low, high] every lfw-dev pair got the same decision from the fused score as from
    plain sface alone (plus a margin), so verify runs the mirror pass and dlib only inside.
    Also reports the share of genuine and impostor pairs that needed them."""
    s_gen, s_imp = first
    f_gen, f_imp = fused
    out: dict[str, Any] = {}
    ordered = np.sort(f_imp)[::-1]
    for far in FARS:
        t = threshold_at_far(ordered, far, presorted=True)
        accepted = np.concatenate([s_gen[f_gen > t], s_imp[f_imp > t]])
        rejected = np.concatenate([s_gen[f_gen <= t], s_imp[f_imp <= t]])
        finite = rejected[np.isfinite(rejected)]
        low = float(accepted.min()) - CASCADE_MARGIN
        high = float(finite.max()) + CASCADE_MARGIN
        out[far_key(far)] = {
            "band": [low, high],
            "genuine_needing_dlib": float(np.mean((s_gen >= low) & (s_gen <= high))),
            "impostor_needing_dlib": float(np.mean((s_imp >= low) & (s_imp <= high)))}
    return out


def impostor_tail(impostor: np.ndarray) -> dict[str, Any]:
    """Thresholds at FARs down to ~10 impostors above, and a line in log10(FAR) through the
    part from 1e-3 down (used to extrapolate open-set thresholds, see matching/open_set.py)."""
    floor = 10.0 / len(impostor)
    fars = [f for f in np.logspace(-1, -8, 29) if f >= floor]
    ordered = np.sort(impostor)[::-1]
    points = [[float(f), threshold_at_far(ordered, f, presorted=True)] for f in fars]
    return {"tail": points, "tail_fit": tail_line(points)}


def tail_line(points: list[list[float]]) -> list[float] | None:
    """[slope, intercept] of threshold against log10(FAR) through the points at FAR <= 1e-3;
    None with fewer than 3 (too few impostor pairs to say anything about the tail)."""
    fit = np.array([p for p in points if p[0] <= 1e-3])
    if len(fit) < 3:
        return None
    slope, intercept = np.polyfit(np.log10(fit[:, 0]), fit[:, 1], 1)
    return [float(slope), float(intercept)]


def fusion_weight_for(embeddings: dict[str, np.ndarray], labels: np.ndarray) -> float:
    """The fusion weight with the best TAR at FAR 1e-4 (the acceptance target), ties → the
    best mean TAR over FARS; needs genuine pairs."""
    def fusion_quality(w: float) -> tuple[float, float]:
        g, i = pair_scores(fuse(embeddings["sface-flip"], embeddings["dlib"], w), labels)
        tars = tar_at_far(g, i)
        return tars[far_key(1e-4)]["tar"], float(np.mean([v["tar"] for v in tars.values()]))

    return max(FUSION_GRID, key=fusion_quality)


def evaluate(root: Path, *, runtime: Runtime, peer: bool = False, workers: int = 2,
             cache: Path = Path("out/eval"), max_per_person: int = 8, singles: int = 1000,
             seed: int = 0, progress: Progress | None = None, degrade: tuple[str, ...] = (),
             shift_tta: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns (report, curves): the JSON report and the ROC points for plotting, per panel
    ("clean" and each `degrade` level, eval/degrade.py). SFace runs on `runtime`, averaging
    shifted chips with `shift_tta` (Settings.sface_shift_tta)."""
    proto = build_protocol(root, max_per_person=max_per_person, singles=singles, seed=seed)
    proto.require(root, genuine=True)
    pair_files = [p for a, b, _ in proto.pairs for p in (a, b)]
    feats = facelens_cached(proto.files + pair_files, runtime, cache, workers, progress,
                            shift_tta=shift_tta)
    rows = [feats[f] for f in proto.files]
    embeddings = {k: stack(rows, k, 128) for k in ("sface", "sface-flip", "dlib")}
    missing = np.isnan(embeddings["sface"][:, 0])
    require_pairs(root, proto.labels[~missing], genuine=True, what="faces found")

    weight = fusion_weight_for(embeddings, proto.labels)
    embeddings["fusion"] = fuse(embeddings["sface-flip"], embeddings["dlib"], weight)

    variants: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, emb in embeddings.items():
        g, i = pair_scores(emb, proto.labels)
        variants[name] = _summary(g, i) | impostor_tail(i)
        curves[name] = roc(g, i)
        pairs_emb = [(_vec(feats[a], name, weight), _vec(feats[b], name, weight), same)
                     for a, b, same in proto.pairs]
        if pairs_emb:
            threshold = variants[name]["tar_at_far"][far_key(1e-3)]["threshold"]
            variants[name]["lfw_pairs"] = pairs_accuracy(pairs_emb, threshold)

    variants["fusion"]["cascade"] = cascade_bands(
        pair_scores(embeddings["sface"], proto.labels), pair_scores(embeddings["fusion"],
                                                                  proto.labels))
    timing = {stage: float(np.median([r[stage] for r in rows if stage in r]))
              for stage in ("decode", "detect", "align", "embed")}
    report: dict[str, Any] = {
        "root": str(root), "images": len(proto.files), "identities": int(proto.labels.max() + 1),
        "protocol": {"max_per_person": max_per_person, "singles": singles, "seed": seed},
        "failure_to_acquire": float(missing.mean()), "faces_not_found": int(missing.sum()),
        "second_chance_detections": sum(r.get("detector") == "centerface" for r in rows),
        "median_seconds_per_stage": timing,
        "seconds_per_image_sface_flip": sum(timing.values()) + timing["embed"],
        "fusion_weight": weight, "variants": variants,
        "sface_runtime": runtime_label(runtime), "sface_shift_tta": shift_tta,
    }
    if peer:
        peer_feats = _cached("peer", peer_features, proto.files + pair_files, cache, workers,
                             progress)
        prow = [peer_feats[f] for f in proto.files]
        pemb = stack(prow, "peer", 128)
        g, i = pair_scores(pemb, proto.labels, euclidean=True)
        report["peer"] = _summary(g, i) | {
            "name": "face_recognition 1.3.0 (dlib HOG, upsample 1, ResNet, euclidean)",
            "failure_to_acquire": float(np.isnan(pemb[:, 0]).mean()),
            "seconds_per_image": float(np.median([r["seconds"] for r in prow])),
        }
        curves["face_recognition (peer)"] = roc(g, i)
        if proto.pairs:
            pp = [(_vec(peer_feats[a], "peer", 0), _vec(peer_feats[b], "peer", 0), same)
                  for a, b, same in proto.pairs]
            t = report["peer"]["tar_at_far"][far_key(1e-3)]["threshold"]
            report["peer"]["lfw_pairs"] = pairs_accuracy(pp, t, euclidean=True)
    panels = {"clean": curves}
    if degrade:
        report["degraded"] = {}
    for name in degrade:
        level_feats = facelens_cached(proto.files, runtime, cache, workers, progress,
                                      degrade=name, shift_tta=shift_tta)
        report["degraded"][name], panels[name] = degraded_report(
            [level_feats[f] for f in proto.files], proto.labels, weight)
    return report, panels


def degraded_report(rows: list[dict[str, Any]], labels: np.ndarray, clean_weight: float
                    ) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """TAR at FAR on one degraded copy, all-vs-all: sface-flip, dlib, fusion at the clean
    weight and at the weight best for this copy; with its faces' median size and sharpness."""
    emb = {k: stack(rows, k, 128) for k in ("sface-flip", "dlib")}
    best = fusion_weight_for(emb, labels)
    emb["fusion"] = fuse(emb["sface-flip"], emb["dlib"], clean_weight)
    emb[f"fusion w={best:g}"] = fuse(emb["sface-flip"], emb["dlib"], best)
    missing = np.isnan(emb["dlib"][:, 0])
    out: dict[str, Any] = {
        "faces_not_found": int(missing.sum()), "failure_to_acquire": float(missing.mean()),
        "median_interocular_px": float(np.median([r["interocular"] for r in rows
                                                  if "interocular" in r])),
        "median_sharpness": float(np.median([r["sharpness"] for r in rows
                                             if "sharpness" in r])),
        "fusion_weight_best": best, "variants": {}}
    curves = {}
    for name, e in emb.items():
        g, i = pair_scores(e, labels)
        out["variants"][name] = _summary(g, i)
        curves[name] = roc(g, i)
    return out, curves


def _vec(feature: dict[str, Any], name: str, weight: float) -> np.ndarray:
    if name == "fusion":
        if "sface-flip" not in feature:
            return np.full(256, np.nan, np.float32)
        return fuse(feature["sface-flip"][None], feature["dlib"][None], weight)[0]
    return np.asarray(feature.get(name, np.full(128, np.nan)), np.float32)


def plot_roc(panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], out: Path,
             folder: str) -> None:
    """ROC curves, one panel per image set (clean, then each degraded copy) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), sharey=True,
                             squeeze=False)
    floor = min(float(t.min()) for curves in panels.values() for _, t in curves.values())
    names = list(dict.fromkeys(name for curves in panels.values() for name in curves))
    for ax, (title, curves) in zip(axes[0], panels.items(), strict=True):
        for name, (fars, tars) in curves.items():
            ax.semilogx(fars, tars, label=name, color=f"C{names.index(name) % 10}")
        for far in FARS:
            ax.axvline(far, color="grey", lw=0.5, ls=":")
        ax.set(xlabel="false accept rate", ylim=(min(0.8, floor), 1.0),
               title=f"{folder} {title}, all-vs-all")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    axes[0][0].set_ylabel("true accept rate")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_calibration(report: dict[str, Any], source: str, target: Path) -> None:
    """Write the operating points of `report`'s variants (fitted on `source`) to `target`, in
    the form matching.calibration reads."""
    embedders = {
        name: {"thresholds": {k: v["threshold"] for k, v in r["tar_at_far"].items()},
               "tar": {k: v["tar"] for k, v in r["tar_at_far"].items()},
               "impostor_pairs": r["impostor_pairs"], "genuine_pairs": r["genuine_pairs"],
               "tail": r["tail"], "tail_fit": r["tail_fit"]}
        | ({"cascade": {k: v["band"] for k, v in r["cascade"].items()}} if "cascade" in r else {})
        for name, r in report["variants"].items()}
    points = {"source": source, "fusion_weight": report["fusion_weight"], "embedders": embedders}
    if "quality_bands" in report:
        bands = report["quality_bands"]
        points["quality_bands"] = bands["calibration"]
        points["quality_bands_source"] = bands.get("source") or (
            f"{source}, clean + " + " + ".join(report.get("degraded", {}))
            + " copies, pairs in the cell of their two faces' bands")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(points, indent=1) + "\n")


def save_calibration(report: dict[str, Any], target: Path) -> None:
    """Write the operating points to `target` and, beside it, the measured accuracy the model
    cards show (measured.json)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    folder = Path(report["root"]).name  # what the points were fitted on, e.g. lfw-dev
    write_calibration(report, f"{folder} all-vs-all, {stamp}, {report['sface_runtime']}",
                      target)

    def line(name: str) -> str:
        t = report["variants"][name]["tar_at_far"]
        return (f"{folder} all-vs-all ({stamp}, {report['sface_runtime']}): TAR " + " / ".join(
            f"{t[far_key(f)]['tar']:.3f}" for f in FARS[1:]) + " at FAR 1e-3 / 1e-4 / 1e-5")

    fta = f"{report['faces_not_found']} of {report['images']} {folder} images without a face"
    measured_file = target.parent / MEASURED_FILE
    # Other harnesses measured other models (e.g. FaceMesh): keep what LFW does not own, from
    # an earlier save here or else from the package.
    earlier = measured_file if measured_file.is_file() else \
        resources.files("facelens.data").joinpath(MEASURED_FILE)
    kept = json.loads(earlier.read_text()).get("models", {}) if earlier.is_file() else {}
    measured = {"created": stamp, "models": kept | {
        "sface": line("sface") + f"; flip-averaged: {line('sface-flip').split(': ', 1)[1]}",
        "dlib-resnet": line("dlib"),
        "yunet": f"{fta} (CenterFace second chance found "
                 f"{report['second_chance_detections']})",
    }}
    measured_file.write_text(json.dumps(measured, indent=1) + "\n")

