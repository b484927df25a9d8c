"""`facelens eval lfw ROOT`: verification accuracy on an LFW-layout folder, all-vs-all.

Protocol: people with >= 2 images (at most `max_per_person` each, fixed seed) give genuine
pairs; they plus `singles` single-image people give impostor pairs (every cross-identity
pair). A face not found is a miss: it fails every genuine pair it is in and (correctly)
rejects every impostor pair. Per image we keep the face nearest the image centre, as LFW
images are centred on their subject. The same images are run through every variant, and
optionally through the face_recognition library (`--peer`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from facelens.errors import FacelensError
from facelens.matching.operating_points import FARS, far_key, threshold_at_far
from facelens.settings import Runtime

VARIANTS = ("sface", "sface-flip", "dlib")
"""Embeddings computed per image; "fusion" is derived from sface-flip and dlib."""
FUSION_GRID = tuple(round(w, 2) for w in np.arange(0.0, 1.0001, 0.05))


@dataclass
class Protocol:
    files: list[Path]
    labels: np.ndarray
    """Identity index per file."""
    pairs: list[tuple[Path, Path, bool]] = field(default_factory=list)
    """The folder's pairs.txt (same-person flag), if present."""

    def require(self, root: Path, *, genuine: bool) -> None:
        """Bad input (exit 2) unless `root` gives impostor pairs and, with `genuine`, genuine
        ones: checked before any feature is computed."""
        require_pairs(root, self.labels, genuine=genuine, what="photos")


def require_pairs(root: Path, labels: np.ndarray, *, genuine: bool, what: str) -> None:
    """Bad input (exit 2) unless `labels` (per photo or per face found: `what`) hold 2 people
    and, with `genuine`, someone twice."""
    people = len(np.unique(labels))
    if people == 0:
        raise FacelensError(f"{root}: no {what} (expected a folder per person holding .jpg "
                            "photos)")
    if people == 1:
        raise FacelensError(f"{root}: {what} of only 1 person; impostor pairs need at least 2 "
                            "people")
    if genuine and people == len(labels):
        raise FacelensError(f"{root}: nobody has 2 {what}; genuine pairs need at least one "
                            "person who has")


def build_protocol(root: Path, *, max_per_person: int = 8, singles: int = 1000,
                   seed: int = 0) -> Protocol:
    images = root / "images" if (root / "images").is_dir() else root
    rng = random.Random(seed)
    multi: list[list[Path]] = []
    single: list[Path] = []
    for person in sorted(p for p in images.iterdir() if p.is_dir()):
        files = sorted(person.glob("*.jpg"))
        if len(files) >= 2:
            multi.append(sorted(rng.sample(files, min(max_per_person, len(files)))))
        elif files:
            single.append(files[0])
    chosen = multi + [[f] for f in sorted(rng.sample(single, min(singles, len(single))))]
    files = [f for group in chosen for f in group]
    labels = np.array([i for i, group in enumerate(chosen) for _ in group], np.int32)
    return Protocol(files, labels, _read_pairs(root, images))


def _read_pairs(root: Path, images: Path) -> list[tuple[Path, Path, bool]]:
    pairs_file = root / "pairs.txt"
    if not pairs_file.is_file():
        return []

    def path(name: str, index: str) -> Path:
        return images / name / f"{name}_{int(index):04d}.jpg"

    out = []
    for line in pairs_file.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((path(parts[0], parts[1]), path(parts[0], parts[2]), True))
        elif len(parts) == 4:
            out.append((path(parts[0], parts[1]), path(parts[2], parts[3]), False))
    return out


# ---------------------------------------------------------------- per-image extraction

def _nearest_centre(boxes: np.ndarray, shape: tuple[int, ...]) -> int:
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    return int(np.argmin(np.linalg.norm(centres - np.array([shape[1], shape[0]]) / 2, axis=1)))


def facelens_features(path: Path, *, runtime: Runtime, degrade: str | None = None,
                      shift_tta: bool = False) -> dict[str, Any]:
    """All variants' embeddings of the face nearest the centre, its inter-ocular distance and
    sharpness, with per-stage seconds; SFace runs on `runtime`. With `degrade` (a level of
    eval/degrade.py) the image is made CCTV-like first, as an LFW-framed photo; with
    `shift_tta`, sface-flip averages shifted chips too (vision/tta.py)."""
    from facelens.eval.degrade import degrade as degraded
    from facelens.eval.degrade import level
    from facelens.geometry import l2_normalize
    from facelens.vision.align import align_batch
    from facelens.vision.decode import load_image
    from facelens.vision.detect import detect_faces
    from facelens.vision.embed import DlibResNet, mirrored, sface, shape5
    from facelens.vision.quality import assess

    t0 = time.perf_counter()
    rgb = load_image(path)
    if degrade:
        rgb = degraded(rgb, level(degrade))
    t1 = time.perf_counter()
    faces = detect_faces(rgb, threads=1, second_chance=True)
    t2 = time.perf_counter()
    out: dict[str, Any] = {"decode": t1 - t0, "detect": t2 - t1}
    if not faces:
        return out
    face = faces[_nearest_centre(np.stack([f.box for f in faces]), rgb.shape)]
    chips = align_batch(rgb, face.landmarks[None])
    t3 = time.perf_counter()
    model = sface(runtime, threads=1)
    raw = model.raw(np.concatenate([chips, mirrored(chips)]))
    t4 = time.perf_counter()
    plain, flipped = l2_normalize(raw[:1]), l2_normalize(raw[1:])
    out["sface"] = plain[0]
    if shift_tta:
        from facelens.vision.tta import embed_shifted

        out["sface-flip"] = embed_shifted(model.raw, rgb, face.landmarks[None], plain=plain,
                                          mirror=flipped)[0]
    else:
        out["sface-flip"] = l2_normalize(plain + flipped)[0]
    out["dlib"] = _dlib_model(DlibResNet)(shape5().chips(rgb, [face], 150, 0.25))[0]
    quality = assess(rgb, face, chip=chips[0])
    out.update(align=t3 - t2, embed=(t4 - t3) / 2, detector=face.detector,
               interocular=quality.interocular_px, sharpness=quality.sharpness)
    return out


_dlib_instance: Any = None


def _dlib_model(cls: Callable[[], Any]) -> Any:
    global _dlib_instance
    if _dlib_instance is None:
        _dlib_instance = cls()
    return _dlib_instance


def peer_features(path: Path) -> dict[str, Any]:
    """face_recognition with its documented defaults (HOG, 1 upsample, 'small' landmarks)."""
    import face_recognition

    t0 = time.perf_counter()
    rgb = face_recognition.load_image_file(str(path))
    locations = face_recognition.face_locations(rgb)
    if not locations:
        return {"seconds": time.perf_counter() - t0}
    boxes = np.array([[left, top, right, bottom] for top, right, bottom, left in locations])
    chosen = locations[_nearest_centre(boxes, rgb.shape)]
    vector = face_recognition.face_encodings(rgb, [chosen])[0]
    return {"peer": vector, "seconds": time.perf_counter() - t0}


def run_all(fn: Callable[[Path], dict[str, Any]], files: list[Path], workers: int,
            progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Map `fn` over files in `workers` processes (1 thread each), keeping order."""
    if workers <= 1:
        results = []
        for f in files:
            results.append(fn(f))
            if progress:
                progress(1)
        return results
    with get_context("spawn").Pool(workers) as pool:
        results = []
        for r in pool.imap(fn, files, chunksize=8):
            results.append(r)
            if progress:
                progress(1)
        return results


# ---------------------------------------------------------------------------- scoring

def stack(features: list[dict[str, Any]], key: str, dim: int) -> np.ndarray:
    """(N, dim) embeddings with NaN rows where no face was found."""
    out = np.full((len(features), dim), np.nan, np.float32)
    for i, f in enumerate(features):
        if key in f:
            out[i] = f[key]
    return out


def fuse(sface_flip: np.ndarray, dlib: np.ndarray, weight: float) -> np.ndarray:
    return np.hstack([np.sqrt(weight) * sface_flip, np.sqrt(1 - weight) * dlib])


def pair_scores(emb: np.ndarray, labels: np.ndarray, *, euclidean: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor scores over all i<j pairs; misses score -inf.

    With `euclidean`, the score is minus the distance (face_recognition's own metric)."""
    missing = np.isnan(emb[:, 0])
    e = np.nan_to_num(emb)
    if euclidean:
        sq = (e * e).sum(1)
        sim = -np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * e @ e.T, 0))
    else:
        sim = e @ e.T
    sim[missing, :] = -np.inf
    sim[:, missing] = -np.inf
    iu = np.triu_indices(len(e), 1)
    same = labels[iu[0]] == labels[iu[1]]
    flat = sim[iu]
    return flat[same], flat[~same]


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, fars: Iterable[float] = FARS
               ) -> dict[str, dict[str, float]]:
    out = {}
    ordered = np.sort(impostor)[::-1]
    for far in fars:
        t = threshold_at_far(ordered, far, presorted=True)
        out[far_key(far)] = {"threshold": t, "tar": float(np.mean(genuine > t))}
    return out


def roc(genuine: np.ndarray, impostor: np.ndarray, points: int = 200
        ) -> tuple[np.ndarray, np.ndarray]:
    fars = np.logspace(np.log10(max(1.0 / len(impostor), 1e-6)), 0, points)
    ordered = np.sort(impostor)[::-1]
    tars = np.array([np.mean(genuine > threshold_at_far(ordered, f, presorted=True))
                     for f in fars])
    return fars, tars


def pairs_accuracy(pair_emb: list[tuple[np.ndarray, np.ndarray, bool]], threshold: float,
                   *, euclidean: bool = False) -> dict[str, float]:
    """Accuracy on pairs.txt at a fixed threshold, and 10-fold best-threshold accuracy."""
    def score(a: np.ndarray, b: np.ndarray) -> float:
        if np.isnan(a[0]) or np.isnan(b[0]):
            return -np.inf
        return float(-np.linalg.norm(a - b)) if euclidean else float(a @ b)

    scores = np.array([score(a, b) for a, b, _ in pair_emb])
    same = np.array([s for _, _, s in pair_emb])
    folds = [f for f in np.array_split(np.arange(len(scores)), 10) if len(f)]
    accs = []
    finite = scores[np.isfinite(scores)]
    candidates = np.unique(np.concatenate([finite, [np.inf]]))
    for fold in folds:
        train = np.setdiff1d(np.arange(len(scores)), fold)
        acc_train = [np.mean((scores[train] >= t) == same[train]) for t in candidates]
        best = candidates[int(np.argmax(acc_train))]
        accs.append(np.mean((scores[fold] >= best) == same[fold]))
    return {"pairs": len(scores),
            "accuracy_at_calibrated_far_1e-3": float(np.mean((scores > threshold) == same)),
            "accuracy_10fold": float(np.mean(accs))}
