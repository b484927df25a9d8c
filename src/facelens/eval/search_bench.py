"""`facelens bench search`: 1:N search speed, recall and memory, exact brute force vs ANN.

The gallery is `n` synthetic faces shaped like one embedder's real vectors: `fusion` (the
default galleries' embedder, 256-d) or `sface-flip` (128-d). `data/embedding_spectrum.json`
holds what was measured on LFW for each (`measure_embeddings`): the covariance spectrum of the
centred vectors, the norm of their mean, and how close two photos of one person are (quantiles
of the centred cosine of genuine pairs). Faces are that mean plus a Gaussian residual with the
spectrum, randomly rotated, normalised. `data="uniform"` draws isotropic unit vectors instead,
the worst case for any ANN index, and a smaller uniform run is reported beside every
face-like one. (Both embedders' spectra are nearly flat, participation ratio ~110, so the two
differ little: real galleries are close to that worst case.)

Most probes are mated: a second photo of an enrolled person, its residual correlated with the
stored face's by a cosine drawn from the measured genuine quantiles; the rest are fresh
identities (nobody enrolled). Recall is measured against the exact top-k. The recall target is
on mated probes whose exact top-1 is their own face: where exact search itself answers with a
stranger (a weak second photo; every unmated probe), that stranger is far below any decision
threshold and missing it changes no answer (both are still reported). `answers_agree` checks
that: the share of probes that identification would answer alike through both indexes (the
best face if it clears the open-set threshold for FPIR 1e-2 or 1e-3 at the gallery's size,
else unknown).

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

from facelens.errors import FacelensError
from facelens.index import ExactIndex, IVFIndex, SignScanIndex, VectorIndex, large_index
from facelens.matching.calibration import Calibration

Progress = Callable[[str, int], Callable[[int], None]]
Data = Literal["face-like", "uniform"]
Embedder = Literal["fusion", "sface-flip"]
Kind = Literal["auto", "sign", "ivf"]
_KINDS: dict[str, type[SignScanIndex] | type[IVFIndex]] = {"sign": SignScanIndex, "ivf": IVFIndex}
TARGETS = {"speedup": 100.0, "recall@1_mate_first": 0.99, "memory_ratio": 1.6}
MATED_SHARE = 0.8
_CHUNK = 50_000  # rows per generation / insertion step, so progress moves and memory stays flat
_SINGLE_QUERIES = 30  # probes timed one at a time for the latency figures
ROUNDS = 3  # alternating exact / ANN timing rounds
UNIFORM_N = 200_000  # the uniform worst case's gallery: 1M would double the run
_STATS = "embedding_spectrum.json"
_QUANTILES = np.linspace(0, 1, 21)  # of the genuine cosines kept per embedder


def _rss() -> int:
    """Resident set size in bytes, from /proc (no psutil dependency)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def measure_embeddings(cache: Path, fusion_weight: float) -> dict[str, Any]:
    """What the synthetic faces copy, per embedder, from a feature cache of an LFW-layout folder
    (pickle: image path -> {embedder: unit vector}, written by `facelens eval`): covariance
    eigenvalues of the centred vectors (descending, sum 1), the mean's norm, and quantiles of
    the centred cosine between one photo of each person and each of their others."""
    with cache.open("rb") as f:
        features = pickle.load(f)  # why trusted: our own cache, written by facelens eval
    paths = [p for p, v in features.items() if "sface-flip" in v and "dlib" in v]
    sface = np.array([features[p]["sface-flip"] for p in paths], np.float64)
    dlib = np.array([features[p]["dlib"] for p in paths], np.float64)
    people = [Path(p).parent.name for p in paths]
    first = {name: i for i, name in reversed(list(enumerate(people)))}
    pairs = np.array([(first[name], i) for i, name in enumerate(people) if first[name] != i])
    vectors = {"sface-flip": sface,
               "fusion": np.hstack([np.sqrt(fusion_weight) * sface,
                                    np.sqrt(1 - fusion_weight) * dlib])}
    out = {}
    for name, x in vectors.items():
        x = _unit(x)
        centred = x - x.mean(0)
        eig = np.clip(np.linalg.eigvalsh(np.cov(centred, rowvar=False))[::-1], 0, None)
        eig /= eig.sum()
        c = _unit(centred)
        genuine = np.sum(c[pairs[:, 0]] * c[pairs[:, 1]], axis=1)
        out[name] = {"images": len(x), "dim": x.shape[1], "eigenvalues": eig.tolist(),
                     "participation_ratio": round(float(1 / np.sum(eig**2)), 2),
                     "dims_for_90pct_variance": int(np.searchsorted(np.cumsum(eig), 0.9) + 1),
                     "mean_norm": round(float(np.linalg.norm(x.mean(0))), 4),
                     "genuine_pairs": len(pairs),
                     "genuine_cosine_quantiles": np.quantile(genuine, _QUANTILES).round(4).tolist()}
    out["fusion"]["fusion_weight"] = fusion_weight
    return out


def _stats(embedder: Embedder) -> dict[str, Any]:
    stats = json.loads(resources.files("facelens.data").joinpath(_STATS).read_text())
    return stats["embedders"][embedder]


def _data(n: int, queries: int, data: Data, stats: dict[str, Any], rng: np.random.Generator,
          advance: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gallery, probes, mates): the first len(mates) probes are second photos of gallery rows
    `mates`, the rest nobody enrolled."""
    dim = stats["dim"]
    if data == "uniform":
        shape, mean = np.eye(dim, dtype=np.float32) / np.sqrt(dim), np.zeros(dim, np.float32)
    else:
        eig, mean_norm = np.asarray(stats["eigenvalues"]), stats["mean_norm"]
        rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
        # residual of trace 1 - |mean|²: the faces' squared norm is 1 before normalising
        shape = (np.sqrt(eig * (1 - mean_norm**2))[:, None] * rotation.T).astype(np.float32)
        mean = (mean_norm * _unit(rng.standard_normal((1, dim)))[0]).astype(np.float32)

    def residual(rows: int) -> np.ndarray:
        return rng.standard_normal((rows, dim), dtype=np.float32) @ shape

    mates = np.sort(rng.choice(n, min(n, round(queries * MATED_SHARE)), replace=False))
    mate_residuals = np.empty((len(mates), dim), np.float32)
    gallery = np.empty((n, dim), np.float32)
    for start in range(0, n, _CHUNK):
        rows = min(_CHUNK, n - start)
        r = residual(rows)
        gallery[start:start + rows] = _unit(mean + r)
        here = (mates >= start) & (mates < start + rows)
        mate_residuals[here] = r[mates[here] - start]
        advance(rows)
    # A second photo: its residual has the measured genuine cosine c to the stored one's.
    c = np.interp(rng.random(len(mates)), _QUANTILES,
                  stats["genuine_cosine_quantiles"]).astype(np.float32)[:, None]
    second = c * mate_residuals + np.sqrt(1 - c**2) * residual(len(mates))
    probes = np.vstack([_unit(mean + second), _unit(mean + residual(queries - len(mates)))])
    return gallery, probes, mates


def _timed_search(index: VectorIndex, probes: np.ndarray, k: int, advance: Callable[[int], None]
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(ids found, each probe's best score, speed)."""
    step = 100
    found, best = np.empty((len(probes), k), np.int64), np.empty(len(probes), np.float32)
    # Untimed first: the other index's worker threads (BLAS, OpenMP) spin for a while after
    # their last job and would steal the cores from this one's first batches.
    time.sleep(0.5)
    index.search(probes[:step], k)
    t0 = time.perf_counter()
    for start in range(0, len(probes), step):
        scores, found[start:start + step] = index.search(probes[start:start + step], k)
        best[start:start + step] = scores[:, 0]
        advance(min(step, len(probes) - start))
    batch = time.perf_counter() - t0
    singles = []
    for probe in probes[:_SINGLE_QUERIES]:
        t0 = time.perf_counter()
        index.search(probe[None], k)
        singles.append(time.perf_counter() - t0)
    return found, best, {"batch_ms_per_query": round(batch / len(probes) * 1e3, 4),
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


def _recall(found: np.ndarray, truth: np.ndarray, rows: slice | np.ndarray, k: int) -> float:
    hits = [len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found[rows], truth[rows],
                                                                strict=True)]
    return round(float(np.sum(hits)) / (len(hits) * k), 4) if hits else float("nan")


def _refuse_if_not_here(kind: Kind) -> None:
    """A clear error where this CPU cannot run the scan `kind` names."""
    if kind == "sign" and not SignScanIndex.runs_here():
        raise FacelensError(f"--index {kind}: this CPU has no {SignScanIndex.NEEDS} (or the "
                            "kernels were not built by `make setup`)")


def _ann(kind: Kind, dim: int) -> VectorIndex:
    """An empty index of `kind`: "auto" is what a gallery past the exact threshold uses on
    this machine; the others let two kinds be compared on one machine."""
    return large_index(dim) if kind == "auto" else _KINDS[kind](dim)


def _answers_agree(calibration: Calibration, embedder: Embedder, n: int,
                   exact: tuple[np.ndarray, np.ndarray], ann: tuple[np.ndarray, np.ndarray]
                   ) -> dict[str, dict[str, float]]:
    """How often identification over `n` faces would answer as with exact search: the best
    face if its score clears the open-set threshold for FPIR 1e-2 or 1e-3 (calibrated on
    lfw-dev for `embedder`), else unknown. Only faces above the threshold change an answer,
    which is why a stranger missed far below it does not."""
    agree = {}
    for fpir in (1e-2, 1e-3):
        threshold = calibration.open_set_threshold(embedder, fpir, n).value
        answers = [np.where(best >= threshold, ids, -1) for ids, best in (exact, ann)]
        agree[f"fpir_{fpir:g}"] = {"threshold": round(threshold, 4),
                                   "named_by_exact": int(np.sum(answers[0] >= 0)),
                                   "agree": round(float(np.mean(answers[0] == answers[1])), 4)}
    return agree


def _run(n: int, queries: int, k: int, data: Data, stats: dict[str, Any], seed: int,
         bar: Progress, kind: Kind = "auto",
         answers: tuple[Calibration, Embedder] | None = None) -> dict[str, Any]:
    """One bench on `data`; `answers` (face-like data only: the calibration in force and the
    embedder imitated) adds `_answers_agree`."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    dim = stats["dim"]
    gallery, probes, mates = _data(n, queries, data, stats, rng, bar(f"{data}: gallery", n))
    mated = len(mates)

    exact = ExactIndex(dim)
    exact_stats = _build(exact, gallery, bar("exact: add", n))
    ann = _ann(kind, dim)
    ann_stats = _build(ann, gallery, bar("ann: build", n))
    # The cores' speed drifts (other load, memory bandwidth) by up to 2x over a minute, so the
    # two are timed in alternating rounds and each keeps its median.
    exact_rounds, ann_rounds = [], []
    for round_ in range(1, ROUNDS + 1):
        truth, truth_best, speed = _timed_search(exact, probes, k,
                                                 bar(f"exact: search {round_}", queries))
        exact_rounds.append(speed)
        found, found_best, speed = _timed_search(ann, probes, k,
                                                 bar(f"ann: search {round_}", queries))
        ann_rounds.append(speed)
    exact_speed, ann_speed = _median(exact_rounds), _median(ann_rounds)
    del exact
    mate_first = np.flatnonzero(truth[:mated, 0] == mates)  # exact search names the person
    gc.collect()

    sweep = []  # the speed/recall trade-off of the index's own settings (its SWEEP)
    params = ann.params
    for setting in ann.SWEEP:
        for key, value in setting.items():
            setattr(ann, key, value)
        label = "ann: " + ", ".join(f"{key} {value}" for key, value in setting.items())
        swept, _, speed = _timed_search(ann, probes, k, bar(label, queries))
        sweep.append({key: value for key, value in ann.params.items() if key != "backend"}
                     | {"batch_ms_per_query": speed["batch_ms_per_query"],
                        "speedup": round(speed["qps"] / exact_speed["qps"], 1),
                        "recall@1": _recall(swept, truth, slice(None), 1),
                        "recall@1_mated": _recall(swept, truth, slice(0, mated), 1),
                        "recall@1_mate_first": _recall(swept, truth, mate_first, 1),
                        f"recall@{k}": _recall(swept, truth, slice(None), k)})
    for key in ann.SWEEP[0]:
        setattr(ann, key, params[key])

    raw = 4 * dim
    memory = max(ann_stats["rss_bytes_per_face"], ann_stats["file_bytes_per_face"])
    ann_result: dict[str, Any] = {
        "params": params,
        **ann_stats, **ann_speed,
        "recall@1": _recall(found, truth, slice(None), 1),
        "recall@1_mated": _recall(found, truth, slice(0, mated), 1),
        "recall@1_mate_first": _recall(found, truth, mate_first, 1),
        "recall@1_unmated": _recall(found, truth, slice(mated, None), 1),
        f"recall@{k}": _recall(found, truth, slice(None), k),
        f"recall@{k}_mated": _recall(found, truth, slice(0, mated), k),
        "sweep": sweep,
    }
    if answers is not None:
        ann_result["answers_agree"] = _answers_agree(*answers, n, (truth[:, 0], truth_best),
                                                     (found[:, 0], found_best))
    measured = {
        "speedup": round(ann_speed["qps"] / exact_speed["qps"], 1),
        "speedup_single_query": round(exact_speed["single_query_ms"]
                                      / ann_speed["single_query_ms"], 1),
        "recall@1_mate_first": ann_result["recall@1_mate_first"],
        "memory_ratio": round(memory / raw, 3),
    }
    met = {
        "speedup": measured["speedup"] >= TARGETS["speedup"],
        "recall@1_mate_first": (measured["recall@1_mate_first"]
                                >= TARGETS["recall@1_mate_first"]),
        "memory_ratio": measured["memory_ratio"] <= TARGETS["memory_ratio"],
    }
    return {
        "data": data, "n": n, "dim": dim, "queries": queries, "mated_queries": mated, "k": k,
        "mated_queries_exact_finds": len(mate_first), "seed": seed,
        "raw_bytes_per_face": raw,
        "exact": {**exact_stats, **exact_speed},
        "ann": ann_result,
        "measured": measured,
        "targets_met": {**met, "all": all(met.values())},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def run_search_bench(calibration: Calibration, n: int = 1_000_000,
                     embedder: Embedder = "fusion", queries: int = 1000, k: int = 10,
                     seed: int = 0, progress: Progress | None = None,
                     data: Data = "face-like", uniform_n: int = UNIFORM_N,
                     kind: Kind = "auto") -> dict[str, Any]:
    """Build exact and ANN (`kind`, see `_ann`) indexes on synthetic faces shaped like
    `embedder`'s, time them and score ANN against exact (identification answers at
    `calibration`'s open-set thresholds); face-like runs also report a `uniform_n`-face
    uniform worst case (0: skip it)."""
    def bar(label: str, total: int) -> Callable[[int], None]:
        return progress(label, total) if progress else (lambda _: None)

    started = time.perf_counter()
    stats = _stats(embedder)
    _refuse_if_not_here(kind)  # before any work
    report = {"embedder": embedder, **_run(n, queries, k, data, stats, seed, bar, kind,
                                           (calibration, embedder) if data == "face-like"
                                           else None)}
    report["measured_on_lfw"] = {key: stats[key] for key in (
        "images", "participation_ratio", "dims_for_90pct_variance", "mean_norm",
        "genuine_pairs", "genuine_cosine_quantiles")}
    if data == "face-like" and uniform_n:
        report["uniform_worst_case"] = _run(min(n, uniform_n), queries, k, "uniform", stats,
                                            seed, bar, kind)
    return {**report, "cpus": os.cpu_count(), "targets": TARGETS,
            "elapsed_s": round(time.perf_counter() - started, 1)}
