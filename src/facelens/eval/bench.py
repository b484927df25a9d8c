"""`facelens bench`: where the time goes, measured on real images in one run.

Reports median milliseconds per stage, the engine's wall time over the raw model-session time
(overhead ratio: everything facelens adds around the networks), faces per second, and the
verify path's throughput against the face_recognition library on the same images and cores.
Figures are ratios against baselines measured in the same run, so they hold across machines.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelens.api import Engine
from facelens.errors import NoFaceError
from facelens.models.runtime import runtime_label
from facelens.vision.align import align_batch
from facelens.vision.decode import load_image
from facelens.vision.detect import detect_faces, detector
from facelens.vision.embed import mirrored, sface

Progress = Callable[[str, int], Callable[[int], None]]
TARGETS = {"verify_throughput_vs_peer": 10.0, "engine_overhead": 1.2}


def _all_images(folder: Path) -> list[Path]:
    """Every image under `folder`."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"no images to benchmark in {folder}")
    return files


def pick_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` images from `folder`, seeded."""
    files = _all_images(folder)
    return sorted(random.Random(seed).sample(files, min(count, len(files))))


def verify_pairs(folder: Path, count: int, seed: int = 0) -> list[tuple[Path, Path]]:
    """`count` pairs like LFW's pairs.txt: half two images of one person (same sub-folder),
    half two people. The fused verifier's cost depends on the mix (genuine pairs fall in its
    cascade band more often), so timing impostor pairs alone would flatter it."""
    files = _all_images(folder)
    rng = random.Random(seed)
    people: dict[Path, list[Path]] = {}
    for f in files:
        people.setdefault(f.parent, []).append(f)
    several = [group for group in people.values() if len(group) >= 2]
    genuine = [tuple(rng.sample(rng.choice(several), 2)) for _ in range(count // 2)
               ] if several else []
    impostor = []
    while len(genuine) + len(impostor) < count:
        a, b = rng.sample(files, 2)
        if a.parent != b.parent or len(people) == 1:
            impostor.append((a, b))
    return [(a, b) for a, b in genuine] + impostor


def _ms(seconds: list[float]) -> float:
    return round(float(np.median(seconds)) * 1000, 2)


def _stages(engine: Engine, files: list[Path], advance: Callable[[int], None], rounds: int = 3
            ) -> dict[str, Any]:
    """The sface-flip embedding path stage by stage, bare, and whole, `rounds` times over the
    files: the overhead is the median of the rounds' ratios (one pass swings by ±0.03)."""
    s = engine.settings
    stage: dict[str, list[float]] = {k: [] for k in
                                     ("decode", "detect", "align", "embed", "raw_models",
                                      "engine")}
    faces_total = 0
    yunet, embedder = detector("yunet"), sface(s.runtime, s.threads)
    for path in files * rounds:
        t0 = time.perf_counter()
        rgb = load_image(path)
        t1 = time.perf_counter()
        faces = detect_faces(rgb, threshold=s.detect_threshold, max_side=s.detect_max_side)
        t2 = time.perf_counter()
        chips = align_batch(rgb, np.stack([f.landmarks for f in faces])) if faces else None
        t3 = time.perf_counter()
        if chips is not None:
            embedder(chips, flip=True)
        t4 = time.perf_counter()
        # The same networks called bare: YuNet's session, then SFace's session run.
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        r0 = time.perf_counter()
        session = yunet.session
        session.setInputSize((bgr.shape[1], bgr.shape[0]))
        session.detect(bgr)
        if chips is not None:
            embedder.raw(np.concatenate([chips, mirrored(chips)]))
        r2 = time.perf_counter()
        # The engine as users call it: one API verb, decode to embeddings, quality included.
        e0 = time.perf_counter()
        embedded = engine.embed(path, embedder="sface-flip")
        e1 = time.perf_counter()
        faces_total += len(embedded)
        for key, value in zip(stage, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, r2 - r0, e1 - e0),
                              strict=True):
            stage[key].append(value)
        advance(1)
    n = len(files)
    ratios = [sum(stage["engine"][i:i + n]) / sum(stage["raw_models"][i:i + n])
              for i in range(0, n * rounds, n)]
    return {
        "median_ms": {k: _ms(v) for k, v in stage.items()},
        "engine_overhead": round(float(np.median(ratios)), 3),
        "engine_overhead_per_round": [round(r, 3) for r in ratios],
        "faces_per_second": round(faces_total / sum(stage["engine"]), 2),
        "images": n, "rounds": rounds, "faces": faces_total // rounds,
    }


def _verify_throughput(engine: Engine, pairs: list[tuple[Path, Path]], embedder: str,
                       advance: Callable[[int], None]) -> float:
    t0 = time.perf_counter()
    for a, b in pairs:
        with contextlib.suppress(NoFaceError):
            engine.verify(a, b, embedder=embedder)
        advance(1)
    return len(pairs) / (time.perf_counter() - t0)


def _peer_throughput(pairs: list[tuple[Path, Path]], advance: Callable[[int], None]) -> float:
    import face_recognition

    def encode(path: Path) -> np.ndarray | None:
        image = face_recognition.load_image_file(str(path))
        found = face_recognition.face_encodings(image)
        return found[0] if found else None

    t0 = time.perf_counter()
    for a, b in pairs:
        ea, eb = encode(a), encode(b)
        if ea is not None and eb is not None:
            face_recognition.face_distance([ea], eb)
        advance(1)
    return len(pairs) / (time.perf_counter() - t0)


def run_bench(engine: Engine, folder: Path, *, count: int = 60, pairs_count: int = 100,
              peer: bool = True, progress: Progress | None = None) -> dict[str, Any]:
    """The engine under its settings, timed on images of `folder` (an LFW layout: one
    sub-folder per person, for the genuine verify pairs)."""
    s = engine.settings
    files = pick_images(folder, count)
    start = progress or (lambda label, total: lambda n: None)
    # Warm up every session once, outside the timings: a pair of one image never enters the
    # fusion cascade's band, so the fused embedding (mirror pass, dlib) is warmed explicitly.
    engine.verify(files[0], files[0])
    engine.embed(files[0], embedder="fusion")
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "threads": s.threads,
                    "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "sface_runtime": runtime_label(s.runtime),
        "image_source": str(files[0].parent.parent),
        "stages": _stages(engine, files, start("stages", 3 * len(files))),
    }
    pairs = verify_pairs(folder, pairs_count)
    verify: dict[str, Any] = {"pairs": len(pairs), "default_embedder": s.embedder,
                              "pairs_per_second": {}}
    for name in dict.fromkeys((s.embedder, "sface-flip", "sface")):
        verify["pairs_per_second"][name] = round(
            _verify_throughput(engine, pairs, name, start(f"verify {name}", len(pairs))), 2)
    report["verify"] = verify
    checks = {"engine_overhead": report["stages"]["engine_overhead"] <= TARGETS["engine_overhead"]}
    if peer:
        theirs = _peer_throughput(pairs, start("peer verify", len(pairs)))
        ratios = {k: round(v / theirs, 2) for k, v in verify["pairs_per_second"].items()}
        verify |= {"peer": "face_recognition 1.3.0 (HOG + ResNet)",
                   "peer_pairs_per_second": round(theirs, 2), "throughput_ratio": ratios}
        checks["verify_throughput_vs_peer"] = (ratios[s.embedder]
                                               >= TARGETS["verify_throughput_vs_peer"])
    report["targets"] = TARGETS
    report["targets_met"] = checks
    return report
