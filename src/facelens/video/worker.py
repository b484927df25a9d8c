"""`facelens worker`: runs the cameras whose leases it holds, never an HTTP API.

Every third of the lease TTL the worker says it is alive, renews its leases, and claims free
cameras up to its fair share (ceil(cameras / live workers)), giving surplus ones back when
workers join. It re-reads the cameras table when the API announces a change on NATS, and
every `camera_rescan_s` in case a message was missed. A clean stop (SIGTERM) stops its
cameras and releases their leases at once; a killed worker's leases run out after the TTL."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import numpy as np
import sqlalchemy as sa

from facelens.cluster.bus import Bus, BusError
from facelens.cluster.leases import Leases, changes_subject, fair_share
from facelens.cluster.previews import Preview, answer_previews
from facelens.events.relay import OutboxRelay
from facelens.events.sinks import Fanout, Sink
from facelens.events.store import EventStore
from facelens.face import Face
from facelens.gallery.service import Galleries
from facelens.scene.detect import detect_objects
from facelens.settings import CameraConfig, Settings
from facelens.video.camera import CameraRunner, announce_camera
from facelens.video.manager import failed, fingerprint, stored_configs
from facelens.vision.align import CHIP_SIZE, TEMPLATE

log = logging.getLogger("facelens.worker")


def worker_id() -> str:
    """Unique per process, readable in `GET /v1/cameras`: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def warm_up(galleries: Galleries) -> None:
    """Load every model a camera uses before taking any camera. A first load holds the GIL
    for seconds (fusion: 2.8 s measured, with 0.05 s sleeps on another thread), long enough
    for this worker's leases, renewed on that other thread, to lapse."""
    engine = galleries.engine
    blank = np.zeros((CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    engine.detect_rgb(blank)
    face = Face(np.array([16, 16, 96, 96], np.float32), TEMPLATE.astype(np.float32), 1.0,
                "warm-up")
    embedders = {engine.settings.embedder} | {g.embedder for g, _ in galleries.list_galleries()}
    for embedder in sorted(embedders):
        engine.embed_rgb(blank, [face], embedder=embedder)
    detect_objects(blank)  # the depiction check's detector


class CameraWorker:
    def __init__(self, settings: Settings, bus: Bus, galleries: Galleries, events: EventStore,
                 sink: OutboxRelay | Sink | None, me: str | None = None,
                 announcer: Fanout | None = None) -> None:
        self.settings, self.bus, self.galleries, self.events = settings, bus, galleries, events
        self.sink, self.sessions = sink, galleries.store.sessions
        self.announcer = announcer
        """Where a camera that starts here is announced (MQTT discovery), if anywhere."""
        self.me = me or worker_id()
        self.leases = Leases(bus, settings.nats_prefix, settings.lease_ttl_s, self.me)
        self.runners: dict[str, CameraRunner] = {}
        self.stopping: list[CameraRunner] = []
        """Told to stop, maybe still finishing a frame: joined on close, never in a tick."""
        self.configs: dict[str, CameraConfig] = {}
        self.changed = threading.Event()
        """Set by a change message: re-read the cameras table now."""
        self._renewed_at = time.monotonic()

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set; then stop every camera and release every lease."""

        async def on_change(_msg: Any) -> None:
            self.changed.set()

        subscriptions = [
            self.bus.subscribe(changes_subject(self.settings.nats_prefix), on_change),
            answer_previews(self.bus, self.settings.nats_prefix, self.preview)]
        period = self.settings.lease_ttl_s / 3
        next_scan = 0.0
        try:
            while not stop.is_set():
                if self.changed.is_set() or time.monotonic() >= next_scan:
                    self.changed.clear()
                    next_scan = time.monotonic() + self.settings.camera_rescan_s
                    try:
                        self.configs = {c.name: c for c in stored_configs(self.sessions)
                                        if c.enabled}
                    except sa.exc.OperationalError as e:  # keep the cameras it knows
                        log.warning("worker %s: cannot read the cameras: %s", self.me, e)
                    self._forget_failed()
                try:
                    self.tick()
                except (BusError, TimeoutError, OSError) as e:  # NATS away: retry next tick
                    log.warning("worker %s: NATS call failed: %s", self.me, e)
                    self._give_up_if_stale()
                # A change message cuts the wait short: new cameras start within ~1 s.
                self.changed.wait(period)
        finally:
            for subscription in subscriptions:
                self.bus.call(subscription.unsubscribe())
            self.close()

    def tick(self) -> None:
        self.leases.beat(self.describe())
        for name in list(self.leases.held):
            if not self.leases.renew(name):
                log.warning("worker %s lost camera %s to another worker", self.me, name)
                self._stop(name)
        self._renewed_at = time.monotonic()
        for name in list(self.leases.held):
            config = self.configs.get(name)
            if config is None:  # removed or disabled
                self._stop(name)
                self.leases.release(name)
            elif self.runners.get(name) is None or self.runners[name].config != config:
                self._start(config)
        share = fair_share(len(self.configs), len(self.leases.live_workers() | {self.me: {}}))
        for name in sorted(self.leases.held, reverse=True)[:max(len(self.leases.held) - share,
                                                                0)]:
            self._stop(name)  # workers joined: hand the surplus on
            self.leases.release(name)
        holders = self.leases.holders()
        for name, config in sorted(self.configs.items()):
            if len(self.leases.held) >= share:
                break
            if name not in holders and self.leases.claim(name):
                log.info("worker %s runs camera %s", self.me, name)
                self._start(config)

    def _forget_failed(self) -> None:
        """A failed camera is started again by the next tick (at most once a rescan)."""
        for name, runner in list(self.runners.items()):
            if failed(runner):
                log.warning("worker %s: camera %s failed (%s); starting it again", self.me,
                            name, runner.status)
                del self.runners[name]

    def _give_up_if_stale(self) -> None:
        """Cut off from NATS for a whole TTL, this worker's leases may be someone else's now:
        stop the cameras rather than run them twice."""
        if time.monotonic() - self._renewed_at > self.settings.lease_ttl_s:
            for name in list(self.leases.held):
                self._stop(name)
            self.leases.held.clear()

    def _start(self, config: CameraConfig) -> None:
        self._stop(config.name)
        runner = CameraRunner(config, self.galleries, self.events, self.sink)
        self.runners[config.name] = runner
        runner.start()
        announce_camera(self.announcer, config, self.galleries)

    def _stop(self, name: str) -> None:
        runner = self.runners.pop(name, None)
        if runner is not None:  # without waiting: a tick that waited could let leases lapse
            runner.stop_event.set()
            self.stopping = [r for r in self.stopping if r.alive] + [runner]

    def preview(self, name: str) -> Preview | None:
        runner = self.runners.get(name)
        return (runner.preview, runner.alive) if runner else None

    def describe(self) -> dict[str, Any]:
        """This worker's heartbeat: who it is and how each of its cameras is doing."""
        cameras = {}
        for name, runner in self.runners.items():
            state = runner.describe()
            cameras[name] = {**{k: state[k] for k in ("status", "alerts", "reconnects")},
                             "config": fingerprint(runner.config)}
        return {"id": self.me, "pid": os.getpid(), "cameras": cameras}

    def close(self) -> None:
        for name in list(self.runners):
            self._stop(name)
        for runner in self.stopping:
            runner.stop()
        try:
            self.leases.leave()
        except (BusError, TimeoutError, OSError) as e:  # they will expire after the TTL
            log.warning("worker %s could not release its leases: %s", self.me, e)
