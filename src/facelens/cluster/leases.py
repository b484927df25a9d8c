"""Camera leases on NATS JetStream: which worker runs which camera.

One KV bucket holds a key per camera whose value is the holding worker's id; every entry ends
`ttl_s` after it was last written. A worker claims a free camera with `create` (refused while
another holds it) and renews by compare-and-set on the revision it wrote, so a worker that
stops renewing (killed, cut off) loses its cameras when the TTL passes and a live worker
claims them. A second bucket holds one heartbeat per live worker, so each worker can count
the others and claim no more than its share."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable
from typing import Any, TypeVar

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import (
    APIError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
)
from nats.js.kv import KeyValue

from facelens.cluster.bus import Bus, BusError
from facelens.errors import FacelensError

T = TypeVar("T")
WRONG_LAST_SEQUENCE = (10071, 10164)
"""JetStream's error codes for a compare-and-set that found another revision."""
STREAM_NOT_FOUND = 10059
LISTING_IN_FLIGHT = 64
"""Key reads a listing keeps in flight at once: read one after another, 300 cameras took
0.8 s of a lease's 3 s, and about 1,000 would let leases lapse."""


class LeaseSettingsError(BusError, FacelensError):
    """This process's lease_ttl_s is not the one the buckets were made with (one line, exit 2
    at start, as any other setting refused)."""


def changes_subject(prefix: str) -> str:
    """Where the API announces camera additions, changes and removals to the workers."""
    return f"{prefix}.cameras.changed"


def fair_share(cameras: int, workers: int) -> int:
    """The most cameras one worker should hold: ceil(cameras / live workers)."""
    return math.ceil(cameras / max(workers, 1))


def _key(camera: str) -> str:
    # KV keys are dot-separated tokens; camera names may hold dots (never '='), so escape them.
    return camera.replace(".", "=2E")


def _camera(key: str) -> str:
    return key.replace("=2E", ".")


class Leases:
    """The lease and heartbeat buckets as seen by worker `me` (or by a reader, me="")."""

    def __init__(self, bus: Bus, prefix: str, ttl_s: float, me: str = "") -> None:
        self.bus, self.ttl_s, self.me = bus, ttl_s, me
        self.cameras_bucket, self.workers_bucket = f"{prefix}_cameras", f"{prefix}_workers"
        self.held: dict[str, int] = {}
        """Camera -> the revision of the lease entry this worker last wrote."""
        self._open()

    def _open(self) -> None:
        """The two buckets, made by whoever comes first, and made again when they vanished."""
        self.cameras: KeyValue = self.bus.kv(self.cameras_bucket, ttl_s=self.ttl_s)
        self.workers: KeyValue = self.bus.kv(self.workers_bucket, ttl_s=self.ttl_s)
        for bucket in (self.cameras, self.workers):
            status = self._call(bucket.status(), reopen=False)
            if status.ttl is None or abs(status.ttl - self.ttl_s) > 1e-3:
                raise LeaseSettingsError(
                    f"KV bucket {status.bucket} keeps entries {status.ttl} s, not lease_ttl_s = "
                    f"{self.ttl_s} s: every API and worker must use one lease_ttl_s (delete the "
                    "bucket to change it)")

    def _call(self, coro: Awaitable[T], reopen: bool = True) -> T:
        """bus.call, with NATS failures (timeouts, no connection) raised as BusError; a lost
        compare-and-set stays KeyWrongLastSequenceError. A bucket found missing is made again
        (`reopen`) for the next call."""
        try:
            return self.bus.call(coro)
        except KeyWrongLastSequenceError:
            raise
        except (NoStreamResponseError, APIError) as e:
            if isinstance(e, APIError) and e.err_code in WRONG_LAST_SEQUENCE:
                raise KeyWrongLastSequenceError(description=e.description) from e  # kv.delete
            if reopen and (isinstance(e, NoStreamResponseError)
                           or e.err_code == STREAM_NOT_FOUND):
                # The buckets are gone (NATS restarted without its JetStream store): without
                # them again no lease is ever renewed or claimed, and every camera stays down.
                with contextlib.suppress(BusError, NatsError, TimeoutError):
                    self._open()
            raise BusError(f"NATS: {type(e).__name__}: {e}") from e
        except (NatsError, TimeoutError) as e:
            raise BusError(f"NATS: {type(e).__name__}: {e}") from e

    def _listing(self, bucket: KeyValue, name: str) -> dict[str, bytes]:
        return self._call(_entries(self.bus.js, bucket, name))

    def claim(self, camera: str) -> bool:
        """Take the camera's lease if nobody holds it."""
        try:
            self.held[camera] = self._call(self.cameras.create(_key(camera), self.me.encode()))
        except KeyWrongLastSequenceError:
            return False
        return True

    def renew(self, camera: str) -> bool:
        """Extend a held lease; False (and forgotten) if it expired or another worker took it.
        An expired lease nobody has claimed yet is taken again rather than given up."""
        try:
            self.held[camera] = self._call(self.cameras.update(
                _key(camera), self.me.encode(), last=self.held[camera]))
        except KeyWrongLastSequenceError:
            del self.held[camera]
            return self.claim(camera)
        return True

    def release(self, camera: str) -> None:
        """Give a held lease up at once (only if it is still this worker's)."""
        revision = self.held.pop(camera, None)
        if revision is None:
            return
        with contextlib.suppress(KeyWrongLastSequenceError):  # not ours any more: nothing to do
            self._call(self.cameras.delete(_key(camera), last=revision))

    def holders(self) -> dict[str, str]:
        """Camera -> worker id, for every leased camera."""
        return {_camera(key): value.decode()
                for key, value in self._listing(self.cameras, self.cameras_bucket).items()}

    def beat(self, info: dict[str, Any]) -> None:
        """Say this worker is alive (and what it runs) for another ttl_s."""
        self._call(self.workers.put(_key(self.me), json.dumps(info).encode()))

    def live_workers(self) -> dict[str, dict[str, Any]]:
        """Worker id -> its latest heartbeat, for every worker heard from within ttl_s."""
        return {_camera(key): json.loads(value)
                for key, value in self._listing(self.workers, self.workers_bucket).items()}

    def leave(self) -> None:
        """A clean stop: every held lease and the heartbeat go at once."""
        for camera in list(self.held):
            self.release(camera)
        self._call(self.workers.delete(_key(self.me)))


async def _entries(js: JetStreamContext, bucket: KeyValue, name: str) -> dict[str, bytes]:
    """Every live key's value: the bucket stream's subjects, then the latest value of each.

    Plain requests, each bounded by the bus timeout; a watcher (`watchall`) was not used
    because its end-of-history marker can fail to arrive, and a listing then hangs."""
    prefix = f"$KV.{name}."  # the KV convention: bucket B is stream KV_B, key K subject $KV.B.K
    info = await js.stream_info(f"KV_{name}", subjects_filter=f"{prefix}>")
    in_flight = asyncio.Semaphore(LISTING_IN_FLIGHT)

    async def value(key: str) -> bytes | None:
        async with in_flight:
            with contextlib.suppress(KeyNotFoundError):  # deleted, or expired since listed
                return (await bucket.get(key, validate_keys=False)).value
        return None

    keys = [subject[len(prefix):] for subject in info.state.subjects or {}]
    values = await asyncio.gather(*(value(key) for key in keys))
    return {key: v for key, v in zip(keys, values, strict=True) if v}
