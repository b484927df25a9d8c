"""Back-pressure and abuse limits:

- `InferencePool`: inference runs on a fixed number of threads; at most `queue` requests wait.
  Beyond that the request is refused at once (429), so the event loop, and `/healthz`, never
  wait behind a pile-up and the service recovers as soon as the pile drains.
- `RateLimiter`: a token bucket per API key; with `cost`, the bucket counts pixels (decoded
  megapixels per key), so a few tiny files that decode to 40 MP each cannot starve the pool.
- `ProbeLimiter`: near-duplicate probes per key (hill-climbing a score by small edits).

The limiters keep their numbers in this process's memory by default, or in Redis
(cluster/shared.py) when `redis_url` is set, so N replicas allow what one would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Protocol, TypeVar

import cv2
import numpy as np

T = TypeVar("T")


class Overloaded(Exception):
    """The inference queue is full."""


HEAVY_PIXELS = 8_300_000
"""Uploads over 4K UHD run in the heavy lane (one thread, lowest priority)."""
HEAVY: ContextVar[bool] = ContextVar("facelens_heavy", default=False)
"""Set by the upload reader when the request's image is over HEAVY_PIXELS."""


class InferencePool:
    """Normal requests on `workers` threads; requests marked HEAVY on one thread of their own
    at the lowest priority, at most `workers` of them waiting: a key flooding 40 MP images
    holds one lane, never the threads that serve ordinary photos."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.pending = 0
        self.heavy_pending = 0
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="facelens-infer",
                                            initializer=lower_thread_priority)
        self._heavy = ThreadPoolExecutor(1, thread_name_prefix="facelens-heavy",
                                         initializer=lower_thread_priority, initargs=(19,))

    @property
    def full(self) -> bool:
        return self.pending >= self.capacity

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        heavy = HEAVY.get()
        if self.full or (heavy and self.heavy_pending > self.workers):
            raise Overloaded(f"{self.pending} requests in progress or queued")
        self.pending += 1
        self.heavy_pending += heavy
        try:
            executor = self._heavy if heavy else self._executor
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        finally:
            self.pending -= 1
            self.heavy_pending -= heavy

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._heavy.shutdown(wait=False, cancel_futures=True)


def lower_thread_priority(nice: int = 10) -> None:
    """Inference threads (and the runtime threads they start, which inherit it) yield the CPU
    to the event loop: a saturated machine still answers /healthz and 429s at once."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class Buckets(Protocol):
    """Where token buckets live: refill `key`'s bucket and take `cost`, atomically."""

    def take(self, key: str, cost: float, rate: float, burst: float) -> float:
        """0 if `cost` tokens were taken, else the seconds until they would be there."""
        ...


class MemoryBuckets:
    """Buckets in this process (the default); RedisBuckets is the same in one Lua script."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, cost: float, rate: float, burst: float) -> float:
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + max(0.0, now - last) * rate)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (cost - tokens) / rate if rate else 60.0


class RateLimiter:
    """`per_minute` requests per key on average, bursts up to `burst`."""

    def __init__(self, per_minute: float, burst: float, buckets: Buckets | None = None) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.buckets = buckets or MemoryBuckets()

    def allow(self, key: str, cost: float = 1.0) -> float:
        """0 if `cost` tokens are taken now, else the seconds to wait. A cost over the burst
        is charged as the whole burst (the caller refuses such requests by other limits)."""
        return self.buckets.take(key, min(cost, self.burst), self.rate, self.burst)


class Marks(Protocol):
    """Where probe marks live: add `mark` under `key` if `decide(marks within window_s)`."""

    def admit(self, key: str, mark: int, window_s: float, keep: int,
              decide: Callable[[list[int]], bool]) -> bool: ...


class MemoryMarks:
    """Marks in this process (the default); RedisMarks keeps them in Redis."""

    def __init__(self) -> None:
        self._seen: dict[str, deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def admit(self, key: str, mark: int, window_s: float, keep: int,
              decide: Callable[[list[int]], bool]) -> bool:
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(key, deque())
            while seen and seen[0][0] < now - window_s:
                seen.popleft()
            if not decide([other for _, other in seen]):
                return False
            seen.append((now, mark))
            if len(seen) > keep:
                seen.popleft()
            return True


class ProbeLimiter:
    """At most `most` probes per key within `window_s` whose 64-bit difference hashes lie
    within `bits` of each other: one photo nudged pixel by pixel to climb a score, not a
    stream of different faces."""

    def __init__(self, most: int, window_s: float, bits: int = 6,
                 marks: Marks | None = None) -> None:
        self.most, self.window_s, self.bits = most, window_s, bits
        self.marks = marks or MemoryMarks()

    def allow(self, key: str, rgb: np.ndarray) -> bool:
        mark = difference_hash(rgb)

        def room(seen: list[int]) -> bool:
            return sum((mark ^ other).bit_count() <= self.bits for other in seen) < self.most

        # 4 × most marks per key at most: memory per key stays bounded
        return self.marks.admit(key, mark, self.window_s, 4 * self.most, room)


def difference_hash(rgb: np.ndarray) -> int:
    """64 bits: is each cell of a 9x8 grey thumbnail brighter than its right neighbour. Small
    edits of a photo keep it; another photo changes about half of it."""
    step = max(1, max(rgb.shape[:2]) // 256)  # a sparse sample: the thumbnail needs no more
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[::step, ::step]), cv2.COLOR_RGB2GRAY)
    cells = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    return int(np.packbits(cells[:, 1:] > cells[:, :-1]).view(">u8")[0])


SCORE_STEP = 0.01
"""Scores are shown in steps of 0.01: a single-pixel edit moves a score by ~1e-4, so a caller
nudging a photo sees nothing move until an edit matters (with the probe limit above)."""


def quantised(score: float) -> float:
    return round(round(score / SCORE_STEP) * SCORE_STEP, 2)
