"""The service's cameras: stored in the database (seeded from the settings file), changed at
run time over /v1/cameras. One process (no nats_url): one CameraRunner per enabled camera, in
this process. With NATS: `facelens worker`s run them (video/worker.py); this process only
announces each change to them and reads their leases and heartbeats to describe the cameras."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from facelens.cluster.bus import Bus, BusError
from facelens.cluster.leases import Leases, changes_subject
from facelens.cluster.previews import Preview, ask_preview
from facelens.errors import ConflictError, NotFoundError
from facelens.events.delivery import AlertDelivery, start_delivery
from facelens.events.sinks import Fanout
from facelens.events.store import EventStore
from facelens.gallery.service import Galleries
from facelens.settings import CameraConfig, Settings
from facelens.store.database import Store
from facelens.store.tables import Camera
from facelens.video.camera import CameraRunner, announce_camera, sinks_from
from facelens.video.source import SourceError, check_source, redacted

FIELDS = tuple(CameraConfig.model_fields)
log = logging.getLogger("facelens.video")


def _config(row: Camera) -> CameraConfig:
    return CameraConfig(**{f: getattr(row, f) for f in FIELDS})


def fingerprint(config: CameraConfig) -> str:
    """Names one version of a camera's settings (workers report which one they run)."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def failed(runner: CameraRunner) -> bool:
    """Whether the camera's thread died on an error (the database away as it alerted, a
    gallery named before it was made): to be started again, unlike a file that ended."""
    return not runner.alive and runner.status.startswith("error")


def stored_configs(sessions: sessionmaker[Session]) -> list[CameraConfig]:
    """Every camera in the database, by name."""
    with sessions() as s:
        return [_config(row) for row in s.scalars(sa.select(Camera).order_by(Camera.name))]


class CameraManager:
    def __init__(self, settings: Settings, store: Store, galleries: Galleries,
                 events: EventStore, bus: Bus | None = None) -> None:
        self.settings, self.galleries, self.events, self.bus = settings, galleries, events, bus
        self.sessions = store.sessions
        self.sink: Fanout | None = None
        self.delivery: AlertDelivery | None = None
        """The outbox relay (and, with NATS, the stream consumer) handing alerts to `sink`."""
        self.runners: dict[str, CameraRunner] = {}
        self.leases = (Leases(bus, settings.nats_prefix, settings.lease_ttl_s) if bus else None)
        """Read only: which worker holds each camera, and their heartbeats."""
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._retrier = threading.Thread(target=self._retry_failed, name="facelens-cameras",
                                         daemon=True)
        with self.sessions.begin() as s:
            known = set(s.scalars(sa.select(Camera.name)))
            for seed in settings.cameras:
                if seed.name not in known:
                    s.add(Camera(**seed.model_dump() | {
                        "source": _seed_source(seed.source, settings.media_dir)}))

    def configs(self) -> list[CameraConfig]:
        return stored_configs(self.sessions)

    def start(self) -> None:
        self.sink = sinks_from(self.settings, self.events)  # connects: only when started
        self.delivery = start_delivery(self.settings, self.events, self.sink, self.bus)
        if self.bus:  # the workers run them
            return
        for config in self.configs():
            self._restart(config)
        self._retrier.start()

    def _retry_failed(self) -> None:
        """Each camera_rescan_s, start failed cameras again with their stored settings."""
        while not self._closing.wait(self.settings.camera_rescan_s):
            try:
                configs = self.configs()
            except sa.exc.OperationalError:  # the database away: the next round
                continue
            for config in configs:
                runner = self.runners.get(config.name)
                if runner is not None and failed(runner) and not self._closing.is_set():
                    log.warning("camera %s failed (%s); starting it again", config.name,
                                runner.status)
                    self._restart(config)

    def _restart(self, config: CameraConfig | None, name: str | None = None) -> None:
        if self.bus:  # tell the workers (after the commit, so they read the change)
            camera = name or (config.name if config else "")
            try:
                self.bus.publish(changes_subject(self.settings.nats_prefix),
                                 json.dumps({"camera": camera}).encode())
            except Exception as e:  # committed anyway: the workers' rescan will see it
                log.warning("camera %s changed but not announced: %s", camera, e)
            return
        with self._lock:
            old = self.runners.pop(name or (config.name if config else ""), None)
            if old:
                old.stop()
            if config and config.enabled:
                runner = CameraRunner(config, self.galleries, self.events,
                                      self.delivery.relay if self.delivery else self.sink)
                self.runners[config.name] = runner
                runner.start()
                # add and update refuse an unknown gallery; at start one may name a gallery
                # not created yet (a settings file's camera): its runner says "error: no
                # gallery named …" and the other cameras and the service run on.
                if all(self._known(gallery) for gallery in config.galleries):
                    announce_camera(self.sink, config, self.galleries)

    def _known(self, gallery: str) -> bool:
        try:
            self.galleries.gallery(gallery)
        except NotFoundError:
            return False
        return True

    def add(self, config: CameraConfig) -> None:
        config = config.model_copy(update={
            "source": check_source(config.source, self.settings.media_dir)})
        for gallery in config.galleries:
            self.galleries.gallery(gallery)
        with self.sessions.begin() as s:
            if s.get(Camera, config.name):
                raise ConflictError(f"camera {config.name!r} exists")
            s.add(Camera(**config.model_dump()))
        self._restart(config)

    def update(self, name: str, changes: dict[str, Any]) -> CameraConfig:
        with self.sessions.begin() as s:
            row = s.get(Camera, name)
            if row is None:
                raise NotFoundError(f"no camera {name!r}")
            if "source" in changes:
                changes = {**changes, "source": check_source(changes["source"],
                                                             self.settings.media_dir)}
            config = CameraConfig(**{**_config(row).model_dump(), **changes})
            for gallery in config.galleries:
                self.galleries.gallery(gallery)
            for field in FIELDS:
                setattr(row, field, getattr(config, field))
        self._restart(config)
        return config

    def remove(self, name: str) -> None:
        with self.sessions.begin() as s:
            if not s.execute(sa.delete(Camera).where(Camera.name == name)).rowcount:
                raise NotFoundError(f"no camera {name!r}")
        self._restart(None, name)

    def describe(self, name: str | None = None) -> list[dict[str, Any]]:
        """Each camera's settings and state; with workers, also which one runs it (`worker`,
        None while unassigned), its state as that worker's last heartbeat said, and whether
        the worker runs these settings yet (`applied`: False for a moment after a change).
        NATS unreachable: status "unknown", worker None (the cameras table still answers)."""
        holders: dict[str, str] = {}
        workers: dict[str, dict[str, Any]] = {}
        seen = True  # whether the leases could be read
        if self.leases:
            try:
                holders, workers = self.leases.holders(), self.leases.live_workers()
            except BusError as e:  # the table still answers; a change just made stays told
                log.warning("cameras: cannot read the workers' leases: %s", e)
                seen = False
        out = []
        for config in self.configs():
            if name and config.name != name:
                continue
            runner = self.runners.get(config.name)
            if runner:
                out.append(runner.describe())
                continue
            state = {"status": "disabled" if not config.enabled else "stopped",
                     "alerts": 0, "reconnects": 0}
            if self.leases:
                holder = holders.get(config.name)
                state = {**state, "worker": holder}
                if config.enabled and not seen:
                    state.update(status="unknown", applied=False)
                elif config.enabled:
                    beat = dict(workers.get(holder or "", {}).get("cameras", {}).get(
                        config.name, {}))
                    runs = beat.pop("config", None)
                    state["status"] = "unassigned" if holder is None else "starting"
                    state.update(beat, applied=runs == fingerprint(config))
            out.append({**config.model_dump(), "source": redacted(config.source), **state})
        if name and not out:
            raise NotFoundError(f"no camera {name!r}")
        return out

    def preview(self, name: str) -> Preview:
        """The camera's latest annotated frame and whether it still runs, from this process
        or, with workers, from the one running it."""
        runner = self.runners.get(name)
        found = ((runner.preview, runner.alive) if runner else
                 ask_preview(self.bus, self.settings.nats_prefix, name) if self.bus else None)
        if found is None:
            raise NotFoundError(f"camera {name!r} is not running")
        return found

    def close(self) -> None:
        self._closing.set()
        if self._retrier.is_alive():
            self._retrier.join()
        for name in list(self.runners):
            self._restart(None, name)
        if self.delivery:
            self.delivery.close()
        if self.sink:
            self.sink.close()


def _seed_source(source: str, media_dir: Path | None) -> str:
    """A settings file's camera source as the API would store it: a file named inside the
    media folder becomes its path there (it was opened relative to wherever the service was
    started, and failed). What the API refuses is kept as written: the file's author may name
    a local restreamer, and a missing file is the camera runner's to report."""
    try:
        return check_source(source, media_dir)
    except SourceError:
        return source
