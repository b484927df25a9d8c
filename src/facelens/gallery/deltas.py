"""The changes an index cache applies one by one: deltas at gallery versions, noted as they
come (this process's commits, other replicas' announcements) and taken in version order."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

MAX_PENDING = 10_000
"""Deltas kept for a gallery not used meanwhile; beyond, its next use starts afresh."""
NO_IDS = np.zeros(0, np.int64)


@dataclass(frozen=True)
class Delta:
    added: np.ndarray
    removed: np.ndarray
    vectors: np.ndarray | None
    """The added ids' vectors; None: another replica's change, read from the database."""

    @property
    def erases(self) -> bool:
        return bool(len(self.removed))


SHARED_DONE = Delta(NO_IDS, NO_IDS, None)
"""This process's change to a shared index, written at once: only its version is tracked."""


@dataclass
class CacheStats:
    """What keeping the indexes current cost this process (read by tests and /metrics)."""

    loads: int = 0
    """First uses here that took the saved index file (saved at the version, same ids)."""
    builds: int = 0
    """In-memory indexes made from all the gallery's decrypted templates: a first use
    without a current file, or a gap."""
    full_checks: int = 0
    """Shared (Milvus) collections whose ids were compared with the database's."""
    repairs: int = 0
    """Full checks that found ids to add or remove (those subjects alone are decrypted)."""
    deltas: int = 0
    """Changes applied one by one (this process's and announced ones)."""
    announced: int = 0
    """Other replicas' changes received."""
    gaps: int = 0
    """Uses that found versions no announcement covered within the grace."""


class Inbox:
    """Pending deltas per gallery, version → delta, for the galleries being collected. Safe
    from any thread, the NATS loop's included (it never waits for anything but its lock)."""

    def __init__(self) -> None:
        self._arrived = threading.Condition()
        self._pending: dict[int, dict[int, Delta]] = {}

    def collect(self, gallery_id: int) -> None:
        """Start collecting the gallery's deltas afresh."""
        with self._arrived:
            self._pending[gallery_id] = {}

    def forget(self, gallery_id: int) -> None:
        with self._arrived:
            self._pending.pop(gallery_id, None)

    def note(self, gallery_id: int, version: int, delta: Delta) -> None:
        with self._arrived:
            pending = self._pending.get(gallery_id)
            if pending is None:  # not held here: its first use reads the database
                return
            if len(pending) >= MAX_PENDING:
                del self._pending[gallery_id]
                return
            pending[version] = delta
            self._arrived.notify_all()

    def chain(self, gallery_id: int, after: int) -> list[Delta]:
        """The deltas that follow version `after` without a gap, taken out; older ones are
        dropped (already in an index read after they were committed)."""
        with self._arrived:
            pending = self._pending.get(gallery_id)
            if pending is None:
                return []
            for old in [v for v in pending if v <= after]:
                del pending[old]
            chain = []
            while after + len(chain) + 1 in pending:
                chain.append(pending.pop(after + len(chain) + 1))
            return chain

    def wait_for(self, gallery_id: int, after: int, target: int, timeout_s: float) -> bool:
        """Wait until the deltas after `after` up to `target` are all here; False on timeout
        or if the gallery is no longer collected."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while True:
                pending = self._pending.get(gallery_id)
                if pending is None:
                    return False
                if all(v in pending for v in range(after + 1, target + 1)):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(left)
