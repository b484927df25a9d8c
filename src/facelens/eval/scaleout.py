"""`facelens bench scaleout`: P6 scale-out efficiency of workers pulling best-shot jobs from a
NATS JetStream work queue, and a Universal Scalability Law fit of the broker/ack path.

Real work: the producer (this process) cuts best shots (the crop with its margin, the face in
crop coordinates, the aligned chip, as a camera's pipeline hands them to the embedder) from LFW
images and video clips, publishes them to a work-queue stream, and k worker processes, each
pinned to one core with one inference thread, pull one job at a time, embed it with the real
Engine, search the gallery's index and acknowledge. P6 = throughput(k) / (k · throughput(1)),
k = 1 and 2 interleaved (ABAB…); a run counts only when the load average is under 0.3 at its
start and every worker had >= 0.9 of its core. Modelled path: workers whose job is a sleep
(like waiting on a GPU) for k = 1…32 processes, unpinned; the USL is fitted to their
throughputs. Workers live in scaleout_worker.py.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from facelens.api import Engine, main_face
from facelens.cluster.bus import Bus, BusError
from facelens.errors import FacelensError, NoFaceError
from facelens.eval.scaleout_worker import WorkerPlan, encode_shot, run_worker
from facelens.settings import Settings
from facelens.video.source import VideoSource

Progress = Callable[[str, int], Callable[[int], None]]
IDLE_LOAD, CORE_SHARE = 0.3, 0.9
"""The rule for a run to count: 1-min load average below this at its start, and every
pinned worker's CPU time at least this share of its wall time."""


# -- the jobs -----------------------------------------------------------------------------

def best_shot_jobs(engine: Engine, lfw: Path | None, clips: list[Path], *, people: int = 40,
                   fps: float = 1.0, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, bytes]]]:
    """(gallery ids, gallery vectors, [(person or -1, job payload)]): one LFW image of each of
    `people` people enrolled, their other images (up to 3) and every face of the clips sampled
    at `fps` as jobs; clip faces are nobody in the gallery (open-set probes)."""
    ids, vectors, jobs = [], [], []
    if lfw is not None:
        folders = sorted(d for d in lfw.iterdir() if d.is_dir() and len(list(d.iterdir())) > 1)
        if not 1 <= people <= len(folders):
            raise FacelensError(f"{lfw}: {len(folders)} people with 2+ photos; --people must "
                                f"be 1 to that, not {people}")
        for person, folder in enumerate(random.Random(seed).sample(folders, people)):
            first, *rest = sorted(folder.iterdir())
            try:
                ids.append(person)
                vectors.append(_main_embedding(engine, first))
            except NoFaceError:
                ids.pop()
                continue
            for image in rest[:3]:
                jobs.extend((person, shot) for shot in _shots(engine, _rgb(image), person))
    for clip in clips:
        for frame in VideoSource(str(clip), fps=fps).frames():
            jobs.extend((-1, shot) for shot in _shots(engine, frame.rgb, -1))
    if not ids or not jobs:
        raise FacelensError("no gallery or no jobs: give --lfw with faces (and/or clips)")
    return np.asarray(ids, np.int64), np.stack(vectors).astype(np.float32), jobs


def _rgb(image: Path) -> np.ndarray:
    from facelens.vision.decode import load_image

    return load_image(image)


def _main_embedding(engine: Engine, image: Path) -> np.ndarray:
    faces = engine.embed(image)
    if not faces:
        raise NoFaceError(str(image))
    vector = main_face(faces).embedding
    assert vector is not None
    return vector


def _shots(engine: Engine, rgb: np.ndarray, person: int) -> list[bytes]:
    """Best-shot payloads of the image's usable faces: all of a clip's frame (person -1), the
    largest of a person's photo."""
    faces, chips = engine.detect_rgb(rgb)
    if not faces or chips is None:
        return []
    main = main_face(faces)
    picked = range(len(faces)) if person < 0 else [i for i, f in enumerate(faces) if f is main]
    return [encode_shot(rgb, faces[i], chips[i], person) for i in picked
            if faces[i].quality is not None and not faces[i].quality.reasons]


# -- one run ------------------------------------------------------------------------------

def run_once(bus: Bus, plan: WorkerPlan, payloads: list[bytes], k: int, *, pin: bool,
             jobs: int, idle_wait_s: float = 0.0) -> dict[str, Any]:
    """Publish `jobs` jobs (cycling over `payloads`) to a fresh work-queue stream, let k worker
    processes drain it, and report throughput, CPU shares, broker CPU and what is left. The
    load is taken before the workers start (their model loading is the run's own), after
    waiting up to `idle_wait_s` for it to fall under IDLE_LOAD: a previous run's CPU keeps the
    1-minute average above it for about a minute."""
    load = _wait_for_idle(idle_wait_s)
    name = f"scaleout-{uuid.uuid4().hex[:12]}"
    subject = f"{name}.jobs"
    bus.call(bus.js.add_stream(StreamConfig(name=name, subjects=[subject],
                                            retention=RetentionPolicy.WORK_QUEUE)))
    try:
        bus.call(bus.js.add_consumer(name, ConsumerConfig(
            durable_name="workers", ack_policy=AckPolicy.EXPLICIT, ack_wait=60.0)))
        for i in range(jobs):
            bus.call(bus.js.publish(subject, payloads[i % len(payloads)],
                                    headers={"job": str(i)}))
        ctx = mp.get_context("spawn")  # a fork would inherit this process's model threads
        go, ready, results = ctx.Event(), ctx.Queue(), ctx.Queue()
        cores = os.cpu_count() or 1
        workers = [ctx.Process(target=run_worker, daemon=True, args=(
            plan.for_stream(name, subject, core=i % cores if pin else None), go, ready, results))
            for i in range(k)]
        for w in workers:
            w.start()
        try:
            for _ in workers:
                ready.get(timeout=300)
            broker0, busy0, wall0 = _broker_cpu_s(), _busy_cpu_s(), time.monotonic()
            go.set()
            reports = [results.get(timeout=600) for _ in workers]
            broker1, busy1, wall1 = _broker_cpu_s(), _busy_cpu_s(), time.monotonic()
        finally:
            for w in workers:
                w.join(10)
                if w.is_alive():
                    w.kill()
        consumer = bus.call(bus.js.consumer_info(name, "workers"))
        left = bus.call(bus.js.stream_info(name)).state.messages
    finally:
        bus.call(bus.js.delete_stream(name))
    return _summary(k, jobs, reports, load=load, wall_s=wall1 - wall0,
                    broker_s=None if broker0 is None or broker1 is None else broker1 - broker0,
                    busy_s=busy1 - busy0, pinned=pin,
                    left={"stream_messages": left, "pending": consumer.num_pending,
                          "ack_pending": consumer.num_ack_pending,
                          "redelivered": consumer.num_redelivered})


def _summary(k: int, jobs: int, reports: list[dict[str, Any]], *, load: float, wall_s: float,
             broker_s: float | None, busy_s: float, pinned: bool, left: dict[str, int]
             ) -> dict[str, Any]:
    done = [j for r in reports for j in r["jobs"]]
    span = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    shares = [r["cpu_s"] / max(r["end"] - r["start"], 1e-9) for r in reports]
    workers_cpu = sum(r["cpu_s"] for r in reports)
    why_not = []
    if load >= IDLE_LOAD:
        why_not.append(f"load {load:.2f} >= {IDLE_LOAD} at start")
    if pinned and min(shares) < CORE_SHARE:
        why_not.append(f"a worker had {min(shares):.2f} < {CORE_SHARE} of its core")
    return {
        "k": k, "jobs": jobs, "throughput_jobs_s": round(len(done) / span, 2),
        "jobs_per_worker_cpu_s": round(len(done) / max(workers_cpu, 1e-9), 2),
        "span_s": round(span, 3),
        "processed_once": sorted(done) == list(range(jobs)),
        "duplicates": len(done) - len(set(done)),
        "lost": jobs - len(set(done)),
        "workers": [{"jobs": len(r["jobs"]), "cpu_share": round(s, 3),
                     "matched": r["matched"]} for r, s in zip(reports, shares, strict=True)],
        "load_at_start": round(load, 2),
        "broker_cpu_cores": None if broker_s is None else round(broker_s / wall_s, 3),
        "others_cpu_cores": round(max(busy_s - workers_cpu - (broker_s or 0.0), 0.0) / wall_s, 3),
        "left": left, "counted": not why_not, "why_not": why_not,
    }


def _wait_for_idle(most_s: float) -> float:
    """The 1-minute load average once it is under IDLE_LOAD, or when `most_s` have passed."""
    deadline = time.monotonic() + most_s
    while (load := os.getloadavg()[0]) >= IDLE_LOAD and time.monotonic() < deadline:
        time.sleep(2.0)
    return load


def _proc_ticks_s(fields: list[str], first: int, last: int) -> float:
    return sum(int(v) for v in fields[first:last]) / os.sysconf("SC_CLK_TCK")


def _broker_cpu_s() -> float | None:
    """CPU seconds nats-server has used (user + system), from /proc; None if not found here."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "nats-server":
                stat = (proc / "stat").read_text()
                return _proc_ticks_s(stat[stat.rindex(")") + 2:].split(), 11, 13)
        except OSError:
            continue
    return None


def _busy_cpu_s() -> float:
    """CPU seconds every core has spent busy (all but idle and iowait), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    return _proc_ticks_s(fields, 0, 3) + _proc_ticks_s(fields, 5, 8)


# -- the law ------------------------------------------------------------------------------

def fit_usl(n: np.ndarray, throughput: np.ndarray) -> dict[str, float]:
    """Least-squares fit of X(N) = λN / (1 + σ(N-1) + κN(N-1)): N/X is linear in 1, N-1 and
    N(N-1) with coefficients (1/λ, σ/λ, κ/λ), so an ordinary linear solve finds all three."""
    n, x = np.asarray(n, np.float64), np.asarray(throughput, np.float64)
    design = np.column_stack([np.ones_like(n), n - 1, n * (n - 1)])
    (a, b, c), *_ = np.linalg.lstsq(design, n / x, rcond=None)
    sigma, kappa = b / a, c / a
    peak = float(np.sqrt((1 - sigma) / kappa)) if kappa > 0 and sigma < 1 else float("inf")
    return {"lambda": float(1 / a), "sigma": float(sigma), "kappa": float(kappa),
            "peak_n": peak}


def usl_throughput(n: np.ndarray, lam: float, sigma: float, kappa: float) -> np.ndarray:
    n = np.asarray(n, np.float64)
    return lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))


# -- the bench ----------------------------------------------------------------------------

def run_scaleout(settings: Settings, lfw: Path | None, clips: list[Path], *, rounds: int = 5,
                 jobs_per_worker: int | None = None, people: int = 40, sleep_ms: float = 20.0,
                 model_ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32), model_jobs: int = 40,
                 model_rounds: int = 3, idle_wait_s: float = 90.0,
                 progress: Progress | None = None) -> dict[str, Any]:
    """P6 from `rounds` interleaved k=1 / k=2 pairs of real work, then `model_rounds` passes of
    the sleep-job model over `model_ks` and its USL fit (see the module docstring). Each real
    worker gets `jobs_per_worker` jobs, by default one pass over the distinct jobs (shuffled
    once), so k=1 and k=2 runs do the same mix."""
    # What can be wrong is told before minutes of model work: the gallery, the clips, NATS.
    if lfw is None or not lfw.is_dir():
        raise FacelensError(f"{lfw} is not a folder" if lfw else "the gallery comes from "
                            "--lfw: give an lfw-style folder (a folder of photos per person)")
    for clip in clips:
        if not clip.is_file():
            raise FacelensError(f"{clip}: no such video file")
    nats_url = settings.nats_url or "nats://127.0.0.1:4222"
    try:
        bus = Bus(nats_url, name="scaleout-bench")
    except BusError as e:
        raise FacelensError(str(e).rstrip(": ")) from None
    try:
        engine = Engine(settings)
        ids, vectors, jobs = best_shot_jobs(engine, lfw, clips, people=people)
        random.Random(0).shuffle(jobs)  # LFW and clip jobs mixed along the queue
        payloads = [payload for _, payload in jobs]
        per_worker = jobs_per_worker or len(payloads)
        with tempfile.TemporaryDirectory(prefix="facelens-scaleout-") as tmp:
            gallery = Path(tmp) / "gallery.npz"
            np.savez(gallery, ids=ids, vectors=vectors)
            engine_plan = WorkerPlan(nats_url=nats_url, work="engine", gallery=str(gallery),
                                     settings=settings.model_copy(update={"threads": 1}),
                                     warmup=payloads[0])
            sleep_plan = WorkerPlan(nats_url=nats_url, work="sleep", sleep_s=sleep_ms / 1000)
            real: list[dict[str, Any]] = []
            modelled: list[dict[str, Any]] = []
            advance = progress("interleaved k=1 / k=2", 2 * rounds) if progress else None
            for k in (1, 2) * rounds:
                real.append(run_once(bus, engine_plan, payloads, k, pin=True,
                                     jobs=k * per_worker, idle_wait_s=idle_wait_s))
                if advance:
                    advance(1)
            advance = (progress("sleep-job model", model_rounds * len(model_ks))
                       if progress else None)
            for k in model_ks * model_rounds:
                modelled.append(run_once(bus, sleep_plan, [b"x" * 64], k, pin=False,
                                         jobs=k * model_jobs))
                if advance:
                    advance(1)
    finally:
        bus.close()
    return {"real": _p6(real), "model": _model(modelled, sleep_ms),
            "gallery_faces": len(ids), "distinct_jobs": len(jobs),
            "lfw_jobs": sum(person >= 0 for person, _ in jobs),
            "clips": [str(c) for c in clips], "embedder": settings.embedder,
            "runtime": settings.runtime, "cpu": _cpu_name(), "cores": os.cpu_count()}


def _p6(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each interleaved pair's efficiency X(2) / (2·X(1)); median and range over all pairs and
    over the pairs whose two runs both counted. Beside it, the same ratio of jobs per worker
    CPU-second: what P6 would be if each worker had its whole core (a proxy where other
    processes take the cores, not the acceptance figure)."""
    pairs = [(a, b) for a, b in zip(runs[::2], runs[1::2], strict=True)]
    every = [b["throughput_jobs_s"] / (2 * a["throughput_jobs_s"]) for a, b in pairs]
    per_cpu = [b["jobs_per_worker_cpu_s"] / a["jobs_per_worker_cpu_s"] for a, b in pairs]
    counted = [e for e, (a, b) in zip(every, pairs, strict=True) if a["counted"] and b["counted"]]

    def spread(values: list[float]) -> dict[str, Any]:
        return ({"median": round(statistics.median(values), 3),
                 "min": round(min(values), 3), "max": round(max(values), 3), "pairs": len(values)}
                if values else {"pairs": 0})

    return {"p6_all_pairs": spread(every), "p6_counted_pairs": spread(counted),
            "p6_per_cpu_second_all_pairs": spread(per_cpu),
            "goal": 0.8, "runs": runs}


def _model(runs: list[dict[str, Any]], sleep_ms: float) -> dict[str, Any]:
    """The USL fitted to every run; per k the median throughput (and range), its efficiency
    against k times the median at k=1, and the broker's CPU."""
    n = np.array([r["k"] for r in runs], np.float64)
    x = np.array([r["throughput_jobs_s"] for r in runs], np.float64)
    fit = fit_usl(n, x)
    ks = sorted({r["k"] for r in runs})
    at = {k: [r for r in runs if r["k"] == k] for k in ks}
    median = {k: statistics.median(r["throughput_jobs_s"] for r in at[k]) for k in ks}
    fitted = usl_throughput(np.array(ks), fit["lambda"], fit["sigma"], fit["kappa"])
    return {"workers": "processes (unpinned), one NATS connection each, fetch 1 + ack_sync",
            "sleep_ms": sleep_ms, "ideal_jobs_s_per_worker": round(1000 / sleep_ms, 2),
            "usl": {k: round(v, 6) for k, v in fit.items()},
            "per_k": {k: {"median_jobs_s": round(median[k], 2),
                          "min": min(r["throughput_jobs_s"] for r in at[k]),
                          "max": max(r["throughput_jobs_s"] for r in at[k]),
                          "efficiency": round(median[k] / k / (median[ks[0]] / ks[0]), 3),
                          "usl_jobs_s": round(float(f), 2),
                          "broker_cpu_cores": statistics.median(
                              r["broker_cpu_cores"] or 0.0 for r in at[k]),
                          "others_cpu_cores": statistics.median(
                              r["others_cpu_cores"] for r in at[k])}
                      for k, f in zip(ks, fitted, strict=True)},
            "runs": runs}


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"
