"""`facelens bench search`: 1:N search speed, recall and memory, exact brute force vs ANN.

The gallery is `n` synthetic faces. `data="face-like"` (the default) draws them from a Gaussian
with the covariance spectrum of real SFace embeddings (`data/embedding_spectrum.json`, measured
on LFW), randomly rotated and normalised; `data="uniform"` draws isotropic unit vectors, the
worst case for any ANN index, and a smaller uniform run is reported beside every face-like one.
(SFace's spectrum turned out nearly flat, participation ratio 112 of 128, so the two differ
little: real SFace galleries are close to that worst case.)

Most probes are mated: a second photo of an enrolled person at cosine ~0.7 to the stored face;
the rest are fresh identities (nobody enrolled). Recall is measured against the exact top-k.
The recall target is on mated probes: for an unmated probe the exact top-1 is an arbitrary
stranger far below any decision threshold, so missing it changes no answer (still reported).

Speed-up compares batch throughput (queries per second) on the same cores, each the median of
alternating rounds; single-query latencies are reported too. Memory per face is the index's
resident-set growth while it is built, next to its file size per face, against the raw float32
vector (4·dim bytes).
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

from facelens.gallery.index import ExactIndex, IVFIndex, VectorIndex

Progress = Callable[[str, int], Callable[[int], None]]
Data = Literal["face-like", "uniform"]
TARGETS = {"speedup": 100.0, "recall@1_mated": 0.99, "memory_ratio": 1.6}
MATED_SHARE = 0.8
MATED_COSINE = 0.7
_CHUNK = 50_000  # rows per generation / insertion step, so progress moves and memory stays flat
_SINGLE_QUERIES = 30  # probes timed one at a time for the latency figures
ROUNDS = 3  # alternating exact / ANN timing rounds
# (probe_share, rerank) settings of IVFIndex timed beside its default on the same lists
SWEEP = ((0.006, 4), (0.008, 4), (0.015, 4), (0.01, 2), (0.01, 8), (0.01, 16))
UNIFORM_N = 200_000  # the uniform worst case's gallery: 1M would double the run
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


def _spectrum() -> dict[str, Any]:
    return json.loads(resources.files("facelens.data").joinpath(_SPECTRUM).read_text())


def _shape(dim: int, data: Data, rng: np.random.Generator) -> np.ndarray:
    """Map from white noise to the data's covariance (trace 1): a random rotation of the
    measured SFace spectrum, or isotropic for the uniform worst case."""
    if data == "uniform":
        return np.eye(dim, dtype=np.float32) / np.sqrt(dim)
    eig = np.asarray(_spectrum()["eigenvalues"], np.float64)
    if len(eig) != dim:  # stretch the measured curve over the asked dimension, same shape
        eig = np.interp(np.linspace(0, 1, dim), np.linspace(0, 1, len(eig)), eig)
        eig /= eig.sum()
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
    # Untimed first: the other index's worker threads (BLAS, OpenMP) spin for a while after
    # their last job and would steal the cores from this one's first batches.
    time.sleep(0.5)
    index.search(probes[:step], k)
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


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(float(np.median([r[key] for r in rounds])), 4) for key in rounds[0]}


def _recall(found: np.ndarray, truth: np.ndarray, rows: slice, k: int) -> float:
    hits = [len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found[rows], truth[rows],
                                                                strict=True)]
    return round(float(np.sum(hits)) / (len(hits) * k), 4) if hits else float("nan")


def _run(n: int, dim: int, queries: int, k: int, data: Data, seed: int,
         bar: Progress) -> dict[str, Any]:
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    gallery, probes, mated = _data(n, dim, queries, data, rng, bar(f"{data}: gallery", n))

    exact = ExactIndex(dim)
    exact_stats = _build(exact, gallery, bar("exact: add", n))
    ann = IVFIndex(dim)
    ann_stats = _build(ann, gallery, bar("ann: build", n))
    # The cores' speed drifts (other load, memory bandwidth) by up to 2x over a minute, so the
    # two are timed in alternating rounds and each keeps its median.
    exact_rounds, ann_rounds = [], []
    for round_ in range(1, ROUNDS + 1):
        truth, speed = _timed_search(exact, probes, k, bar(f"exact: search {round_}", queries))
        exact_rounds.append(speed)
        found, speed = _timed_search(ann, probes, k, bar(f"ann: search {round_}", queries))
        ann_rounds.append(speed)
    exact_speed, ann_speed = _median(exact_rounds), _median(ann_rounds)
    del exact
    gc.collect()

    sweep = []  # the speed/recall trade-off of lists scanned and candidates re-scored
    params = ann.params
    for share, rerank in SWEEP:
        ann.probe_share, ann.rerank = share, rerank
        label = f"ann: {share:.1%} of lists, rerank {rerank}"
        swept, speed = _timed_search(ann, probes, k, bar(label, queries))
        sweep.append({key: ann.params[key] for key in ("probe_share", "nprobe", "rerank")}
                     | {"batch_ms_per_query": speed["batch_ms_per_query"],
                        "speedup": round(speed["qps"] / exact_speed["qps"], 1),
                        "recall@1": _recall(swept, truth, slice(None), 1),
                        "recall@1_mated": _recall(swept, truth, slice(0, mated), 1),
                        f"recall@{k}": _recall(swept, truth, slice(None), k)})
    ann.probe_share, ann.rerank = params["probe_share"], params["rerank"]

    raw = 4 * dim
    memory = max(ann_stats["rss_bytes_per_face"], ann_stats["file_bytes_per_face"])
    ann_result: dict[str, Any] = {
        "params": params,
        **ann_stats, **ann_speed,
        "recall@1": _recall(found, truth, slice(None), 1),
        "recall@1_mated": _recall(found, truth, slice(0, mated), 1),
        "recall@1_unmated": _recall(found, truth, slice(mated, None), 1),
        f"recall@{k}": _recall(found, truth, slice(None), k),
        f"recall@{k}_mated": _recall(found, truth, slice(0, mated), k),
        "sweep": sweep,
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
        "data": data, "n": n, "dim": dim, "queries": queries, "mated_queries": mated, "k": k,
        "seed": seed, "mated_cosine": MATED_COSINE, "raw_bytes_per_face": raw,
        "exact": {**exact_stats, **exact_speed},
        "ann": ann_result,
        "measured": measured,
        "targets_met": {**met, "all": all(met.values())},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def run_search_bench(n: int = 1_000_000, dim: int = 128, queries: int = 1000, k: int = 10,
                     seed: int = 0, progress: Progress | None = None,
                     data: Data = "face-like", uniform_n: int = UNIFORM_N) -> dict[str, Any]:
    """Build exact and ANN indexes on synthetic faces, time them and score ANN against exact;
    face-like runs also report a `uniform_n`-face uniform worst case (0: skip it)."""
    def bar(label: str, total: int) -> Callable[[int], None]:
        return progress(label, total) if progress else (lambda _: None)

    started = time.perf_counter()
    report = _run(n, dim, queries, k, data, seed, bar)
    if data == "face-like":
        spectrum = _spectrum()
        report["spectrum"] = {key: spectrum[key] for key in (
            "embedder", "images", "participation_ratio", "dims_for_90pct_variance")}
        if uniform_n:
            report["uniform_worst_case"] = _run(min(n, uniform_n), dim, queries, k, "uniform",
                                                seed, bar)
    return {**report, "cpus": os.cpu_count(), "targets": TARGETS,
            "elapsed_s": round(time.perf_counter() - started, 1)}
