"""One scale-out bench worker process (eval/scaleout.py): pull a job from the work-queue
stream, do it, acknowledge it, until the stream stays empty; report which jobs it did and the
CPU time it had. Kept apart so the 32 processes of the sleep model import no model runtime."""

from __future__ import annotations

import dataclasses
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, Literal

import cv2
import nats.errors
import numpy as np

from facelens.cluster.bus import Bus
from facelens.face import Face
from facelens.geometry import crop_with_margin
from facelens.settings import Settings
from facelens.vision.decode import encode_jpeg

Work = Callable[[bytes], bool | None]
"""Does one job; for a job of a gallery person, whether rank 1 was that person."""


@dataclass(frozen=True)
class WorkerPlan:
    nats_url: str
    work: Literal["engine", "sleep"]
    stream: str = ""
    subject: str = ""
    core: int | None = None
    """The one core the process is pinned to (None: unpinned)."""
    settings: Settings | None = None
    gallery: str = ""
    """An .npz of the gallery's ids and vectors (engine work)."""
    warmup: bytes = b""
    """A job done before the start, so model loading is not timed."""
    sleep_s: float = 0.02
    idle_s: float = 1.0
    """A fetch that waits this long for a job means the stream is drained."""

    def for_stream(self, stream: str, subject: str, core: int | None) -> WorkerPlan:
        return dataclasses.replace(self, stream=stream, subject=subject, core=core)


def encode_shot(rgb: np.ndarray, face: Face, chip: np.ndarray, person: int) -> bytes:
    """A best shot as a camera's pipeline hands it to the embedder: the face with a margin
    (alignment context) as a JPEG (a raw crop of a close-up outgrows NATS's 1 MB messages),
    the face in crop coordinates, its aligned chip; and who it is (-1: nobody in the gallery)."""
    crop, offset = crop_with_margin(rgb, face.box, 0.6)
    jpeg = np.frombuffer(encode_jpeg(crop, 95), np.uint8)
    out = io.BytesIO()
    np.savez(out, crop=jpeg, chip=chip, box=face.box - np.tile(offset, 2),
             landmarks=face.landmarks - offset, score=np.float32(face.score),
             detector=np.str_(face.detector), person=np.int64(person))
    return out.getvalue()


def run_worker(plan: WorkerPlan, go: Event, ready: Queue[int],
               results: Queue[dict[str, Any]]) -> None:
    """A process's whole life: pin, load, connect, say ready, wait for go, drain, report."""
    if plan.core is not None:  # before any thread starts: threads inherit the affinity
        os.sched_setaffinity(0, {plan.core})
    work = _engine_work(plan) if plan.work == "engine" else _sleep_work(plan.sleep_s)
    bus = Bus(plan.nats_url, name=f"scaleout-worker-{os.getpid()}")
    try:
        sub = bus.call(bus.js.pull_subscribe(plan.subject, durable="workers",
                                             stream=plan.stream))
        ready.put(os.getpid())
        go.wait()
        done: list[int] = []
        matched = {"lfw_jobs": 0, "rank1": 0}
        start, cpu0 = time.monotonic(), time.process_time()
        end, cpu_end = start, cpu0
        while True:
            try:
                msgs = bus.call(sub.fetch(1, timeout=plan.idle_s), timeout_s=plan.idle_s + 10)
            except nats.errors.TimeoutError:
                break
            for msg in msgs:
                hit = work(msg.data)
                bus.call(msg.ack_sync())  # counted done only once the broker has the ack
                done.append(int((msg.headers or {})["job"]))
                if hit is not None:
                    matched["lfw_jobs"] += 1
                    matched["rank1"] += hit
            end, cpu_end = time.monotonic(), time.process_time()
        results.put({"pid": os.getpid(), "jobs": done, "start": start, "end": end,
                     "cpu_s": cpu_end - cpu0, "matched": matched})
        bus.call(sub.unsubscribe())  # a pull subscription left open stalls the drain
    finally:
        bus.close()


def _sleep_work(seconds: float) -> Work:
    def work(_: bytes) -> None:
        time.sleep(seconds)  # a GPU inference the CPU only waits for

    return work


def _engine_work(plan: WorkerPlan) -> Work:
    """Embed the best shot with the real Engine (the plan's settings, one thread) and search
    the gallery's exact index, as a camera worker does for each track."""
    from facelens.api import Engine
    from facelens.index.exact import ExactIndex

    assert plan.settings is not None
    engine = Engine(plan.settings)
    with np.load(plan.gallery) as gallery:
        index = ExactIndex(gallery["vectors"].shape[1])
        index.add(gallery["ids"], gallery["vectors"])

    def work(payload: bytes) -> bool | None:
        with np.load(io.BytesIO(payload)) as shot:
            face = Face(box=shot["box"], landmarks=shot["landmarks"],
                        score=float(shot["score"]), detector=str(shot["detector"]))
            crop = cv2.cvtColor(cv2.imdecode(shot["crop"], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            engine.embed_rgb(crop, [face], chips=shot["chip"][None])
            person = int(shot["person"])
        assert face.embedding is not None
        _, ids = index.search(face.embedding[None], 1)
        return None if person < 0 else bool(ids[0, 0] == person)

    work(plan.warmup)
    return work
