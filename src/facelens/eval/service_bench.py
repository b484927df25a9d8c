"""`facelens bench service`: the HTTP service against the library, same images, same cores.

1. Throughput: identify the same probe photos in-process (Galleries.identify on a thread pool
   as wide as the service's inference pool) and over HTTP (`facelens serve` in a subprocess,
   clients keeping that pool busy). Reported as a ratio: HTTP / in-process (target >= 0.8).
2. Overload: open-loop identify requests at 4x the measured HTTP throughput for a while,
   with /healthz probed throughout: the share of 429s, /healthz p50/p99, and the time from
   the end of the overload until an identify succeeds again.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from facelens.errors import FacelensError
from facelens.gallery.service import ConsentRecord
from facelens.service.limits import lower_thread_priority
from facelens.service.state import ServiceState
from facelens.settings import Settings

Progress = Callable[[str, int], Callable[[int], None]]
TARGET_RATIO = 0.8
REQUESTS_PER_ROUND = 200


def people_with_two_photos(root: Path, count: int) -> list[tuple[str, Path, Path]]:
    """(name, enrolment photo, probe photo) for the first `count` lfw-style folders."""
    found = []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(person.glob("*.jpg"))
        if len(photos) >= 2:
            found.append((person.name, photos[0], photos[1]))
        if len(found) == count:
            break
    return found


_BOUNDARY = "facelens-bench-boundary"


def _multipart(field: str, filename: str, data: bytes) -> bytes:
    """One file field as a multipart/form-data body (what httpx's files= sends)."""
    head = (f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n').encode()
    return head + data + f"\r\n--{_BOUNDARY}--\r\n".encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed_pool(fn: Callable[[bytes], Any], probes: list[bytes], workers: int) -> float:
    """Probes per second with `workers` callers at a time."""
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(fn, probes))
    return len(probes) / (time.perf_counter() - start)


def run_service_bench(lfw_root: Path, *, people: int = 40, rounds: int = 3,
                      overload_s: float = 20.0, progress: Progress) -> dict[str, Any]:
    chosen = people_with_two_photos(lfw_root, people)
    if len(chosen) < 5:
        raise ValueError(f"{lfw_root}: need at least 5 people with two photos")
    data_dir = Path(tempfile.mkdtemp(prefix="facelens-bench-"))
    settings = Settings(data_dir=data_dir, rate_per_minute=1e9, rate_burst=10**9)
    state = ServiceState.open(settings)
    state.galleries.create_gallery("bench", "benchmark")
    advance = progress("enrolling", len(chosen))
    enrolled = []
    for name, photo, probe in chosen:
        with contextlib.suppress(FacelensError):  # LFW photos with two people are skipped
            state.galleries.enroll("bench", name, [photo],
                                   consent=ConsentRecord("benchmark", "consent", "bench"))
            enrolled.append((name, photo, probe))
        advance(1)
    chosen = enrolled
    _, key = state.keys.create("bench", ["identify"])
    probes = [probe.read_bytes() for _, _, probe in chosen]
    # Each round sends the probes over and over, ~3 s of work: a single pass of 34 photos
    # lasts ~0.5 s, where the pool's ramp-up and drain weigh as much as the steady state.
    timed = (probes * -(-REQUESTS_PER_ROUND // len(probes)))[:max(REQUESTS_PER_ROUND, len(probes))]
    workers = settings.workers

    def in_process(data: bytes) -> Any:
        return state.galleries.identify("bench", state.decode(data))

    in_process(probes[0])  # warm the models
    port = _free_port()
    env = {**os.environ, "FACELENS_DATA_DIR": str(data_dir), "FACELENS_RATE_PER_MINUTE": "1e9",
           "FACELENS_RATE_BURST": str(10**9)}
    server = subprocess.Popen([str(Path(sys.executable).with_name("facelens")), "serve",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=(data_dir / "serve.log").open("wb"))
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                              headers={"Authorization": f"Bearer {key}"},
                              limits=httpx.Limits(max_connections=256))
        _wait_ready(client)

        # The multipart bodies are encoded once: the client shares the two cores with the
        # server, and re-encoding every request would bill the service for the client's work.
        bodies = {data: _multipart("image", "probe.jpg", data) for data in probes}

        def over_http(data: bytes) -> int:
            r = client.post("/v1/galleries/bench/identify", content=bodies[data],
                            headers={"Content-Type": f"multipart/form-data; boundary={_BOUNDARY}"})
            return r.status_code

        over_http(probes[0])
        # Alternate the two, so a noisy neighbour slows both alike; report the medians.
        library, http = [], []
        advance = progress("in-process vs HTTP identify", 2 * rounds)
        for _ in range(rounds):
            library.append(_timed_pool(in_process, timed, workers))
            advance(1)
            http.append(_timed_pool(over_http, timed, workers + settings.queue // 2))
            advance(1)
        library_rate, http_rate = float(np.median(library)), float(np.median(http))
        overload = _overload(client, over_http, probes, 4 * http_rate, overload_s, progress)
    finally:
        server.terminate()
        server.wait(30)
        state.close()
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "probes": len(probes), "requests_per_round": len(timed), "rounds": rounds,
        "gallery_size": len(chosen),
        "embedder": settings.embedder,
        "workers": workers, "queue": settings.queue,
        "identify_per_s": {"in_process": round(library_rate, 2), "http": round(http_rate, 2),
                           "in_process_rounds": [round(r, 2) for r in library],
                           "http_rounds": [round(r, 2) for r in http]},
        "http_vs_in_process": round(http_rate / library_rate, 3),
        "target": TARGET_RATIO, "met": http_rate / library_rate >= TARGET_RATIO,
        "overload": overload,
    }


def probe_health(url: str, seconds: float) -> None:
    """Print, as JSON, the latency in ms of GET /healthz every 50 ms for `seconds`."""
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            client.get("/healthz")
            latencies.append((time.perf_counter() - start) * 1000)
            time.sleep(0.05)
    print(json.dumps(latencies))


def _record(call: Callable[[bytes], int], data: bytes, statuses: list[int]) -> None:
    statuses.append(call(data))


def _wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.3)
    raise TimeoutError("the service did not start within 120 s")


def _overload(client: httpx.Client, call: Callable[[bytes], int], probes: list[bytes],
              rate: float, seconds: float, progress: Progress) -> dict[str, Any]:
    """Open loop: a request every 1/rate s, whatever the answers, for `seconds`."""
    statuses: list[int] = []
    # /healthz is timed from its own process, so the senders' threads do not delay the timer.
    prober = subprocess.Popen(
        [sys.executable, "-c", "import sys; from facelens.eval.service_bench import "
         "probe_health; probe_health(sys.argv[1], float(sys.argv[2]))",
         str(client.base_url), str(seconds)], stdout=subprocess.PIPE, text=True)
    advance = progress("4x overload", int(seconds))
    # The senders stand for clients on other machines: niced, they do not starve the server.
    with ThreadPoolExecutor(256, initializer=lower_thread_priority) as senders:
        start = time.perf_counter()
        sent = shown = 0
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(int(elapsed * rate) - sent):
                senders.submit(_record, call, probes[sent % len(probes)], statuses)
                sent += 1
            advance(int(elapsed) - shown)
            shown = int(elapsed)
            time.sleep(0.005)
        ended = time.perf_counter()
        recovered_at = None
        while recovered_at is None and time.perf_counter() - ended < 120:
            if call(probes[0]) == 200:
                recovered_at = time.perf_counter()
            else:
                time.sleep(0.05)
    health = np.array(json.loads(prober.communicate(timeout=60)[0]))
    return {
        "offered_per_s": round(rate, 2), "seconds": seconds, "requests": len(statuses),
        "share_429": round(statuses.count(429) / max(len(statuses), 1), 3),
        "other_errors": sum(1 for s in statuses if s not in (200, 429)),
        "healthz_ms": {"p50": round(float(np.percentile(health, 50)), 1),
                       "p99": round(float(np.percentile(health, 99)), 1),
                       "samples": len(health)},
        "recovery_s": round(recovered_at - ended, 2) if recovered_at else None,
    }
