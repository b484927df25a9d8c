"""Lockout: repeated failed checks of one subject by one caller lock that pair out."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

Pair = tuple[str, str]
"""(caller id, subject id)."""


class Lockout:
    """`failures` failed checks within a sliding `window_s` lock a (caller, subject) pair for
    `lock_s`, whatever succeeded in between (a caller who also knows one matching photo cannot
    reset the count). Held in memory, per process: a restart forgives, a guessing caller is
    still slowed to `failures` tries per `lock_s`."""

    def __init__(self, failures: int, window_s: float, lock_s: float) -> None:
        self.failures, self.window_s, self.lock_s = failures, window_s, lock_s
        self._fails: dict[Pair, deque[float]] = defaultdict(deque)
        self._locked: dict[Pair, float] = {}
        self._lock = threading.Lock()

    def locked_for(self, pair: Pair) -> float:
        """Seconds until `pair` may try again; 0 when it may now."""
        with self._lock:
            left = self._locked.get(pair, 0.0) - time.monotonic()
            if left <= 0:
                self._locked.pop(pair, None)
            return max(left, 0.0)

    def failed(self, pair: Pair) -> None:
        now = time.monotonic()
        with self._lock:
            fails = self._fails[pair]
            fails.append(now)
            while fails and fails[0] < now - self.window_s:
                fails.popleft()
            if len(fails) >= self.failures:
                self._locked[pair] = now + self.lock_s
                fails.clear()
