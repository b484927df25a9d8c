"""Back-pressure and abuse limits, all in memory (per process):

- `InferencePool`: inference runs on a fixed number of threads; at most `queue` requests wait.
  Beyond that the request is refused at once (429), so the event loop, and `/healthz`, never
  wait behind a pile-up and the service recovers as soon as the pile drains.
- `RateLimiter`: a token bucket per API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Overloaded(Exception):
    """The inference queue is full."""


class InferencePool:
    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.pending = 0
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="facelens-infer",
                                            initializer=lower_thread_priority)

    @property
    def full(self) -> bool:
        return self.pending >= self.capacity

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self.full:  # single-threaded event loop: no race here
            raise Overloaded(f"{self.pending} requests in progress or queued")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self.pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def lower_thread_priority() -> None:
    """Inference threads (and the runtime threads they start, which inherit it) yield the CPU
    to the event loop: a saturated machine still answers /healthz and 429s at once."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class RateLimiter:
    """`per_minute` requests per key on average, bursts up to `burst`."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> float:
        """0 if allowed now, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate if self.rate else 60.0
