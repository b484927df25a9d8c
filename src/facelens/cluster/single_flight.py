"""Single-flight across replicas: one holder at a time per key (a gallery id), so only one
replica rebuilds an index they share (Milvus). A replica that finds the lock taken waits for
the holder, then checks again, and normally finds the index rebuilt.

PostgreSQL's session advisory locks where the database is PostgreSQL (released by the server
if the holder dies with its connection); a NATS key-value entry created only if absent
otherwise (it expires after the bucket's TTL if the holder dies)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import sqlalchemy as sa
from nats.js.errors import APIError, KeyWrongLastSequenceError

from facelens.cluster.bus import Bus
from facelens.cluster.leases import WRONG_LAST_SEQUENCE

INDEX_LOCK_SPACE = 0x464C4958
"""The first key of PostgreSQL's two-key advisory locks ("FLIX"): keeps facelens's index locks
apart from any other advisory lock in the same database."""


class SingleFlight(Protocol):
    waits: int
    """How many times a caller found the lock held by someone else and waited."""

    def hold(self, key: int) -> AbstractContextManager[None]: ...


class ProcessLock:
    """One process alone (SQLite without NATS): a lock per key within the process."""

    def __init__(self) -> None:
        self.waits = 0
        self._guard = threading.Lock()
        self._locks: dict[int, threading.Lock] = {}

    @contextmanager
    def hold(self, key: int) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        if not lock.acquire(blocking=False):
            self.waits += 1
            lock.acquire()
        try:
            yield
        finally:
            lock.release()


class PostgresLock:
    """`pg_try_advisory_lock(space, key)`; when taken, `pg_advisory_lock` waits for it."""

    def __init__(self, database: sa.Engine) -> None:
        self.database, self.waits = database, 0

    @contextmanager
    def hold(self, key: int) -> Iterator[None]:
        with self.database.connect() as c:
            if not c.scalar(sa.select(sa.func.pg_try_advisory_lock(INDEX_LOCK_SPACE, key))):
                self.waits += 1
                c.execute(sa.select(sa.func.pg_advisory_lock(INDEX_LOCK_SPACE, key)))
            c.commit()  # the lock is the session's, not the transaction's
            try:
                yield
            finally:
                c.scalar(sa.select(sa.func.pg_advisory_unlock(INDEX_LOCK_SPACE, key)))
                c.commit()


class NatsLock:
    """A key in a JetStream key-value bucket, created only if absent and deleted on release;
    a holder that dies leaves it to expire after `ttl_s`."""

    def __init__(self, bus: Bus, bucket: str, ttl_s: float = 120.0, poll_s: float = 0.05
                 ) -> None:
        self.bus, self.poll_s, self.waits = bus, poll_s, 0
        self.kv = bus.kv(bucket, ttl_s=ttl_s)

    @contextmanager
    def hold(self, key: int) -> Iterator[None]:
        name = f"index.{key}"
        waited = False
        while True:
            try:
                revision = self.bus.call(self.kv.create(name, b"1"))
                break
            except KeyWrongLastSequenceError:
                if not waited:
                    waited, self.waits = True, self.waits + 1
                time.sleep(self.poll_s)
        try:
            yield
        finally:
            # Only its own key: held past the TTL, the key may be the next holder's by now.
            try:
                self.bus.call(self.kv.delete(name, last=revision))
            except APIError as e:
                if e.err_code not in WRONG_LAST_SEQUENCE:
                    raise
