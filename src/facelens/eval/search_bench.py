"""`facelens bench search`: 1:N search speed, recall and memory, exact brute force vs HNSW.

The gallery is `n` random unit vectors. Most probes are mated: a stored face plus Gaussian noise
that leaves cosine ~0.7 to it, like a second photo of an enrolled person; the rest are random
(nobody enrolled). Recall is measured against the exact top-k. The recall target is on mated
probes: for an unmated probe the exact top-1 is an arbitrary stranger far below any decision
threshold, so missing it changes no answer (its recall is still reported).

Speed-up compares batch throughput (queries per second) on the same cores; single-query
latencies are reported too. Memory per face is the index's resident-set growth while it is
built, next to its file size per face, against the raw float32 vector (4·dim bytes).
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from facelens.gallery.index import ExactIndex, HNSWIndex, VectorIndex

Progress = Callable[[str, int], Callable[[int], None]]
Data = Literal["face-like", "uniform"]
TARGETS = {"speedup": 100.0, "recall@1_mated": 0.99, "memory_ratio": 1.6}
MATED_SHARE = 0.8
MATED_COSINE = 0.7
_CHUNK = 50_000  # rows per generation / insertion step, so progress moves and memory stays flat
_SINGLE_QUERIES = 30  # probes timed one at a time for the latency figures
EF_SWEEP = (32, 64, 256, 512)
_SPECTRUM = "embedding_spectrum.json"


def _rss() -> int:
    """Resident set size in bytes, from /proc (no psutil dependency)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure_spectrum(cache: Path, embedder: str = "sface-flip") -> dict[str, Any]:
    """Covariance eigenvalues (descending, sum 1) of one embedder's vectors in a feature cache
    (pickle: image path -> {embedder: unit vector}), the source of `embedding_spectrum.json`."""
    with cache.open("rb") as f:
        features = pickle.load(f)  # why trusted: our own cache, written by facelens eval
    x = np.array([v[embedder] for v in features.values() if embedder in v], np.float64)
    eig = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1], 0, None)
    eig /= eig.sum()
    return {"embedder": embedder, "images": len(x), "eigenvalues": eig.tolist(),
            "participation_ratio": round(float(1 / np.sum(eig**2)), 2),
            "dims_for_90pct_variance": int(np.searchsorted(np.cumsum(eig), 0.9) + 1)}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _shape(dim: int, data: Data, rng: np.random.Generator) -> np.ndarray:
    """Map from white noise to the data's covariance (trace 1): a random rotation of the
    measured SFace spectrum, or isotropic for the uniform worst case."""
    if data == "uniform":
        return np.eye(dim, dtype=np.float32) / np.sqrt(dim)
    spectrum = json.loads(resources.files("facelens.data").joinpath(_SPECTRUM).read_text())
    eig = np.asarray(spectrum["eigenvalues"], np.float64)
    if len(eig) != dim:
        raise ValueError(f"face-like data needs dim={len(eig)} (the measured spectrum)")
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    return (np.sqrt(eig)[:, None] * rotation.T).astype(np.float32)


def _data(n: int, dim: int, queries: int, data: Data, rng: np.random.Generator,
          advance: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray, int]:
    shape = _shape(dim, data, rng)

    def draw(rows: int) -> np.ndarray:
        return rng.standard_normal((rows, dim), dtype=np.float32) @ shape

    gallery = np.empty((n, dim), np.float32)
    for start in range(0, n, _CHUNK):
        rows = min(_CHUNK, n - start)
        gallery[start:start + rows] = _unit(draw(rows))
        advance(rows)
    mated = min(n, round(queries * MATED_SHARE))
    # A second photo of the same person: identity c with covariance c·Σ and photo noise (1-c)·Σ
    # (same shape: LFW's within-identity spectrum is about as flat as the total one) give
    # probe = c·stored + noise of covariance (1-c²)·Σ, whose cosine to stored is c on average.
    c = MATED_COSINE
    noisy = c * gallery[rng.choice(n, mated, replace=False)] + (1 - c**2) ** 0.5 * draw(mated)
    return gallery, np.vstack([_unit(noisy), _unit(draw(queries - mated))]), mated


def _timed_search(index: VectorIndex, probes: np.ndarray, k: int,
                  advance: Callable[[int], None]) -> tuple[np.ndarray, dict[str, float]]:
    step = 100
    found = np.empty((len(probes), k), np.int64)
    t0 = time.perf_counter()
    for start in range(0, len(probes), step):
        found[start:start + step] = index.search(probes[start:start + step], k)[1]
        advance(min(step, len(probes) - start))
    batch = time.perf_counter() - t0
    singles = []
    for probe in probes[:_SINGLE_QUERIES]:
        t0 = time.perf_counter()
        index.search(probe[None], k)
        singles.append(time.perf_counter() - t0)
    return found, {"batch_ms_per_query": round(batch / len(probes) * 1e3, 4),
                   "qps": round(len(probes) / batch, 1),
                   "single_query_ms": round(float(np.median(singles)) * 1e3, 4)}


def _build(index: VectorIndex, gallery: np.ndarray,
           advance: Callable[[int], None]) -> dict[str, float]:
    gc.collect()
    rss0, t0 = _rss(), time.perf_counter()
    for start in range(0, len(gallery), _CHUNK):
        rows = gallery[start:start + _CHUNK]
        index.add(np.arange(start, start + len(rows)), rows)
        advance(len(rows))
    seconds = time.perf_counter() - t0
    gc.collect()
    grown = _rss() - rss0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index"
        index.save(path)
        file_bytes = path.stat().st_size
    n = len(gallery)
    return {"build_s": round(seconds, 2), "rss_bytes_per_face": round(grown / n, 1),
            "file_bytes_per_face": round(file_bytes / n, 1)}


def _recall(found: np.ndarray, truth: np.ndarray, rows: slice, k: int) -> float:
    hits = [len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found[rows], truth[rows],
                                                                strict=True)]
    return round(float(np.sum(hits)) / (len(hits) * k), 4) if hits else float("nan")


def run_search_bench(n: int = 1_000_000, dim: int = 128, queries: int = 1000, k: int = 10,
                     seed: int = 0, progress: Progress | None = None) -> dict[str, Any]:
    """Build both indexes on synthetic faces, time them and score HNSW against exact."""
    def bar(label: str, total: int) -> Callable[[int], None]:
        return progress(label, total) if progress else (lambda _: None)

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    gallery, probes, mated = _data(n, dim, queries, rng, bar("synthetic gallery", n))

    exact = ExactIndex(dim)
    exact_stats = _build(exact, gallery, bar("exact: add", n))
    truth, exact_speed = _timed_search(exact, probes, k, bar("exact: search", queries))
    del exact
    gc.collect()

    ann = HNSWIndex(dim)
    ann_stats = _build(ann, gallery, bar("hnsw: build", n))
    found, ann_speed = _timed_search(ann, probes, k, bar("hnsw: search", queries))

    sweep = []  # the speed/recall trade-off of the query beam on the same graph
    default_ef = ann.expansion_search
    for ef in EF_SWEEP:
        ann.expansion_search = ef
        swept, speed = _timed_search(ann, probes, k, bar(f"hnsw: search ef={ef}", queries))
        sweep.append({"expansion_search": ef, "batch_ms_per_query": speed["batch_ms_per_query"],
                      "speedup": round(speed["qps"] / exact_speed["qps"], 1),
                      "recall@1": _recall(swept, truth, slice(None), 1),
                      "recall@1_mated": _recall(swept, truth, slice(0, mated), 1)})
    ann.expansion_search = default_ef

    raw = 4 * dim
    memory = max(ann_stats["rss_bytes_per_face"], ann_stats["file_bytes_per_face"])
    ann_result: dict[str, Any] = {
        "params": ann.params,
        **ann_stats, **ann_speed,
        "recall@1": _recall(found, truth, slice(None), 1),
        "recall@1_mated": _recall(found, truth, slice(0, mated), 1),
        "recall@1_unmated": _recall(found, truth, slice(mated, None), 1),
        f"recall@{k}": _recall(found, truth, slice(None), k),
        f"recall@{k}_mated": _recall(found, truth, slice(0, mated), k),
        "ef_sweep": sweep,
    }
    measured = {
        "speedup": round(ann_speed["qps"] / exact_speed["qps"], 1),
        "speedup_single_query": round(exact_speed["single_query_ms"]
                                      / ann_speed["single_query_ms"], 1),
        "recall@1_mated": ann_result["recall@1_mated"],
        "memory_ratio": round(memory / raw, 3),
    }
    met = {
        "speedup": measured["speedup"] >= TARGETS["speedup"],
        "recall@1_mated": measured["recall@1_mated"] >= TARGETS["recall@1_mated"],
        "memory_ratio": measured["memory_ratio"] <= TARGETS["memory_ratio"],
    }
    return {
        "n": n, "dim": dim, "queries": queries, "mated_queries": mated, "k": k, "seed": seed,
        "mated_cosine": MATED_COSINE, "cpus": os.cpu_count(),
        "raw_bytes_per_face": raw,
        "exact": {**exact_stats, **exact_speed},
        "hnsw": ann_result,
        "measured": measured,
        "targets": TARGETS,
        "targets_met": {**met, "all": all(met.values())},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
