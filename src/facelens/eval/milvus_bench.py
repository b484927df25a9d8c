"""`facelens bench milvus`: Milvus index kinds for large galleries, on a running server.

For each kind (IVF_SQ8, HNSW, DISKANN, …) a fresh collection receives `n` synthetic faces shaped
like the embedder's real vectors (search_bench.py's face-like data: 256-d for fusion) through
`MilvusIndex`; once the server has built the index, it reports:

- insert and index-build seconds;
- memory per face: what the server counts its loaded segments to hold, and its resident-set
  growth from released to loaded with `server_pid` given (noisy: freed pages are not always
  returned at once);
- recall@1 of mates: the share of mated probes (a second photo of an enrolled face) whose best
  answer is that face, and the share the exact search itself answers so (its ceiling);
- queries/s: batches of 100 probes, and single probes one after another, per search effort
  (IVF's nprobe, HNSW's ef, DiskANN's search_list).

The collection is dropped afterwards. Figures depend on the cores the server gets: run it on an
otherwise idle machine and report the load beside them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facelens.eval.search_bench import _data, _stats
from facelens.index import ExactIndex, MilvusIndex

Progress = Callable[[str, int], Callable[[int], None]]
EFFORTS = {"IVF_SQ8": (32, 64, 128, 256), "HNSW": (64, 128, 256), "DISKANN": (50, 100),
           "FLAT": (0,)}
_BATCH = 100
_SINGLES = 100
_STALL_S = 900


def _rss(pid: int | None) -> int | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def _wait_indexed(index: MilvusIndex, n: int) -> None:
    """Until the server has indexed all `n` rows; TimeoutError if it makes no progress for
    `_STALL_S` (a kind its build cannot make retries for ever: 2.3.5's DISKANN, measured)."""
    client, name = index.client, index.collection
    client.flush(name)
    done, moved = -1, time.monotonic()
    while time.monotonic() - moved < _STALL_S:
        about = client.describe_index(name, "vector")
        if int(about["indexed_rows"]) >= n and int(about["pending_index_rows"]) == 0:
            return
        if int(about["indexed_rows"]) != done:
            done, moved = int(about["indexed_rows"]), time.monotonic()
        time.sleep(1)
    raise TimeoutError(f"the server indexed no more rows of {name} for {_STALL_S} s")


def _loaded_bytes(index: MilvusIndex, pid: int | None) -> int | None:
    """The server's resident-set growth from released to loaded."""
    client, name = index.client, index.collection
    client.release_collection(name)
    time.sleep(3)  # freed pages go back to the system
    before = _rss(pid)
    client.load_collection(name)
    time.sleep(3)
    after = _rss(pid)
    return None if before is None or after is None else after - before


def _searched(index: MilvusIndex, probes: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    index.search(probes[:_BATCH], 1)  # untimed: warms the segments' caches
    best = np.empty(len(probes), np.int64)
    t0 = time.perf_counter()
    for start in range(0, len(probes), _BATCH):
        best[start:start + _BATCH] = index.search(probes[start:start + _BATCH], 1)[1][:, 0]
    batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    for probe in probes[:_SINGLES]:
        index.search(probe[None], 1)
    single = time.perf_counter() - t0
    return best, {"qps_batch_100": round(len(probes) / batch, 1),
                  "qps_single": round(_SINGLES / single, 1)}


def _one_kind(uri: str, kind: str, gallery: np.ndarray, probes: np.ndarray,
              mates: np.ndarray, exact_ok: np.ndarray, pid: int | None,
              advance: Callable[[int], None]) -> dict[str, Any]:
    n, dim = gallery.shape
    name = f"bench_{kind.lower()}"
    index = MilvusIndex(dim, uri, name, kind=kind)
    try:
        t0 = time.perf_counter()
        for start in range(0, n, 50_000):
            rows = gallery[start:start + 50_000]
            index.add(np.arange(start, start + len(rows)), rows)
            advance(len(rows))
        inserted = time.perf_counter() - t0
        _wait_indexed(index, n)
        built = time.perf_counter() - t0 - inserted
        grown = _loaded_bytes(index, pid)
        segments = index.client.list_loaded_segments(name)
        out: dict[str, Any] = {
            "insert_s": round(inserted, 1), "index_build_s": round(built, 1),
            "segments": len(segments),
            "segment_bytes_per_face": round(sum(s.mem_size for s in segments) / n, 1),
            "server_rss_bytes_per_face": None if grown is None else round(grown / n, 1)}
        for effort in EFFORTS.get(kind, (index.effort,)):
            index.effort = effort
            best, speed = _searched(index, probes)
            hits = best[:len(mates)] == mates
            out[f"effort_{effort}"] = {
                "recall@1_mates": round(float(hits.mean()), 4),
                "recall@1_mates_exact_first": round(float(hits[exact_ok].mean()), 4),
                **speed}
        return out
    finally:
        index.client.drop_collection(name)
        index.close()


def run_milvus_bench(uri: str, *, n: int = 1_000_000, queries: int = 1_000,
                     kinds: tuple[str, ...] = ("IVF_SQ8", "HNSW"), embedder: str = "fusion",
                     server_pid: int | None = None, seed: int = 0,
                     progress: Progress | None = None) -> dict[str, Any]:
    def quiet(_: str, __: int) -> Callable[[int], None]:
        return lambda _: None

    bar = progress or quiet
    stats = _stats(embedder)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    gallery, probes, mates = _data(n, queries, "face-like", stats, rng,
                                   bar("generating faces", n))
    exact = ExactIndex(stats["dim"])
    exact.add(np.arange(n), gallery)
    exact_ok = exact.search(probes[:len(mates)], 1)[1][:, 0] == mates
    del exact
    report: dict[str, Any] = {
        "n": n, "dim": stats["dim"], "embedder": embedder, "queries": queries,
        "mated_probes": len(mates), "exact_recall@1_mates": round(float(exact_ok.mean()), 4),
        "raw_float32_bytes_per_face": 4 * stats["dim"], "uri": uri,
        "load_average_at_start": round(os.getloadavg()[0], 2), "kinds": {}}
    for kind in kinds:
        try:
            report["kinds"][kind] = _one_kind(uri, kind, gallery, probes, mates, exact_ok,
                                              server_pid, bar(f"inserting ({kind})", n))
        except TimeoutError as e:
            report["kinds"][kind] = {"failed": str(e)}
    return report
