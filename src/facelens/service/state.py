"""Everything one service process holds: the stores, the inference pool and the limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from facelens.cluster.bus import Bus
from facelens.cluster.shared import (
    RedisBuckets,
    RedisFailures,
    RedisMarks,
    RedisRecords,
    SharedState,
)
from facelens.events.store import EventStore
from facelens.gallery.service import Galleries
from facelens.liveness.sessions import SessionStore, SharedSessions
from facelens.policy.lockout import Lockout
from facelens.service.http import REQUEST_AUDITED
from facelens.service.keys import KeyStore
from facelens.service.limits import InferencePool, ProbeLimiter, RateLimiter
from facelens.settings import Settings
from facelens.store.audit import AuditLog
from facelens.store.database import Store
from facelens.video.manager import CameraManager
from facelens.vision.decode import load_image

API_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})


@dataclass
class ServiceState:
    settings: Settings
    store: Store
    galleries: Galleries
    keys: KeyStore
    audit: AuditLog
    events: EventStore
    pool: InferencePool
    limiter: RateLimiter
    lockout: Lockout
    cameras: CameraManager
    liveness: SessionStore
    pixel_budget: RateLimiter
    """Decoded megapixels per key (uploads.py charges it)."""
    probes: ProbeLimiter
    """Near-duplicate identify probes per key."""
    shared: SharedState | None
    """Redis when redis_url is set: the limits, lockouts and sessions above live there."""
    bus: Bus | None = None
    """The NATS connection when nats_url is set (camera changes go to the workers)."""

    @classmethod
    def open(cls, settings: Settings) -> ServiceState:
        store = Store(settings)
        galleries = Galleries(settings, store)
        events = EventStore(store)
        bus = Bus(settings.nats_url, name="facelens-api") if settings.nats_url else None
        shared = (SharedState(settings.redis_url, settings.redis_prefix) if settings.redis_url
                  else None)
        return cls(settings, store, galleries, KeyStore(store.sessions),
                   AuditLog.of(store),
                   events,
                   InferencePool(settings.workers, settings.queue),
                   RateLimiter(settings.rate_per_minute, settings.rate_burst,
                               RedisBuckets(shared, "requests") if shared else None),
                   Lockout(settings.lockout_failures, settings.lockout_window_s,
                           settings.lockout_s, RedisFailures(shared) if shared else None),
                   CameraManager(settings, store, galleries, events, bus),
                   SessionStore(galleries.engine, sessions=SharedSessions(
                       RedisRecords(shared, "liveness")) if shared else None),
                   RateLimiter(settings.pixels_per_minute_mp, settings.pixel_burst_mp,
                               RedisBuckets(shared, "pixels") if shared else None),
                   ProbeLimiter(settings.probe_repeats, settings.probe_window_s,
                                marks=RedisMarks(shared) if shared else None),
                   shared, bus)

    def decode(self, data: bytes) -> np.ndarray:
        """An uploaded image: JPEG, PNG or WebP only, within the pixel limit."""
        return load_image(data, max_pixels=int(self.settings.max_image_mp * 1e6),
                          formats=API_FORMATS)

    async def audited(self, actor: str, action: str, outcome: str, **fields: Any) -> None:
        """audit.record off the event loop (a database commit waits for the disk)."""
        REQUEST_AUDITED.set(True)
        await run_in_threadpool(self.audit.record, actor, action, outcome, **fields)

    def close(self) -> None:
        self.cameras.close()
        self.pool.shutdown()
        self.galleries.close()
        self.store.close()
        if self.bus:
            self.bus.close()
        if self.shared:
            self.shared.close()
