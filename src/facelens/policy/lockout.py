"""Lockout: repeated failed checks of one subject by one caller lock that pair out."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from typing import Protocol

Pair = tuple[str, str]
"""(caller id, subject id)."""


class Failures(Protocol):
    """Where failure counts and locks live, by pair name (`pair_name`)."""

    def add_failure(self, pair: str, window_s: float) -> int:
        """Count one failure now; the failures within the last `window_s`."""
        ...

    def lock(self, pair: str, lock_s: float) -> None:
        """Lock `pair` for `lock_s` and start its count afresh."""
        ...

    def locked_for(self, pair: str) -> float: ...


class MemoryFailures:
    """In this process (the default): a restart forgives, and each replica counts its own;
    cluster.shared.RedisFailures is the store replicas share."""

    def __init__(self) -> None:
        self._fails: dict[str, deque[float]] = defaultdict(deque)
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()

    def add_failure(self, pair: str, window_s: float) -> int:
        now = time.monotonic()
        with self._lock:
            fails = self._fails[pair]
            fails.append(now)
            while fails and fails[0] < now - window_s:
                fails.popleft()
            return len(fails)

    def lock(self, pair: str, lock_s: float) -> None:
        with self._lock:
            self._locked[pair] = time.monotonic() + lock_s
            self._fails.pop(pair, None)

    def locked_for(self, pair: str) -> float:
        with self._lock:
            left = self._locked.get(pair, 0.0) - time.monotonic()
            if left <= 0:
                self._locked.pop(pair, None)
            return max(left, 0.0)


def pair_name(pair: Pair) -> str:
    """One string per pair, never the same for two pairs (the caller's length leads)."""
    caller, subject = pair
    return f"{len(caller)}:{caller}:{subject}"


class Lockout:
    """`failures` failed checks within a sliding `window_s` lock a (caller, subject) pair for
    `lock_s`, whatever succeeded in between (a caller who also knows one matching photo cannot
    reset the count). Counted in `store`: in memory, a guessing caller is still slowed to
    `failures` tries per `lock_s` per replica; in Redis, per deployment."""

    def __init__(self, failures: int, window_s: float, lock_s: float,
                 store: Failures | None = None) -> None:
        self.failures, self.window_s, self.lock_s = failures, window_s, lock_s
        self.store = store or MemoryFailures()

    def locked_for(self, pair: Pair) -> float:
        """Seconds until `pair` may try again; 0 when it may now."""
        return self.store.locked_for(pair_name(pair))

    def failed(self, pair: Pair) -> None:
        name = pair_name(pair)
        if self.store.add_failure(name, self.window_s) >= self.failures:
            self.store.lock(name, self.lock_s)
