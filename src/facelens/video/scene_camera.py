"""The street layer inside a camera: SceneWatch on the camera's frames, matched against the
stored plate hotlist and description rules, its alerts stored as events of kind "plate" or
"rule" through the same cool-down and outbox as faces.

Hotlists, not histories: only an alert is written (event row, crop sealed under the entry's
key, outbox row). A track that matches nothing stays in SceneWatch's memory and is forgotten;
nothing here logs a track, a plate text or a description. Its one trace is a count: SceneWatch's
tracks per (camera, class, minute), added to table scene_counts once a minute and on close.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from facelens.api import Engine
from facelens.errors import NotFoundError
from facelens.events.counts import SceneCounts
from facelens.events.hotlist_store import HotlistStore, Loaded
from facelens.events.relay import OutboxRelay
from facelens.events.store import EventStore
from facelens.video.scene_watch import Alert, SceneWatch
from facelens.video.source import Frame

REFRESH_S = 5.0
"""How often (wall seconds) the camera reloads the hotlist and rules: an entry added or
deleted over the API takes effect within this; an expired one never matches (checked per
frame against its expiry)."""
FLUSH_S = 60.0
"""How often (wall seconds) the counts in memory are added to the database."""
PENDING_ALERTS = 100
"""Alerts (a crop each) held in memory while the database cannot store them."""
log = logging.getLogger("facelens.video")


class SceneCamera:
    """One camera's street analysis, alerting into `events`."""

    def __init__(self, camera: str, events: EventStore, relay: OutboxRelay | None, *,
                 cooldown_s: float, gate: bool = True, engine: Engine | None = None,
                 detect_side: int | None = None) -> None:
        self.events, self.relay, self.cooldown_s = events, relay, cooldown_s
        self.hotlists = HotlistStore(events.store)
        self.loaded = Loaded(self.hotlists.load().hotlists)
        self._loaded_at = 0.0
        self.watch = SceneWatch(camera, on_alert=self._record, gate=gate, engine=engine,
                                detect_side=detect_side)
        self.counts = SceneCounts(events.store)
        self._flushed_at = time.monotonic()
        self._pending: deque[tuple[str, int, str, Alert]] = deque(maxlen=PENDING_ALERTS)
        self.alerts = 0

    def process(self, frame: Frame) -> list[tuple[np.ndarray, str, bool]]:
        """Analyse one frame (reloading the entries when due); its labels for the preview."""
        if time.monotonic() - self._loaded_at >= REFRESH_S:
            self._reload()
        labels = self.watch.process(frame)
        if time.monotonic() - self._flushed_at >= FLUSH_S:
            self.flush()
        return labels

    def _reload(self) -> None:
        """The stored entries, read again. While the database cannot be read, the last ones
        are kept (each still checked against its expiry per frame), as counts are kept:
        a database restart stopped the camera, faces and all."""
        self._loaded_at = time.monotonic()
        try:
            self.loaded = self.hotlists.load()
        except SQLAlchemyError as e:
            log.warning("camera %s: hotlists not reloaded (%s)", self.watch.camera,
                        type(e).__name__)
            return
        self.watch.hotlists = self.loaded.hotlists
        self._store_pending()

    def flush(self) -> None:
        """Add the counts gathered since the last flush to the database; kept in memory for
        the next flush when the database is unreachable."""
        counts = dict(self.watch.counts)
        self.watch.counts.clear()
        self._flushed_at = time.monotonic()
        try:
            self.counts.add(counts)
        except SQLAlchemyError as e:
            self.watch.counts.update(counts)
            log.warning("camera %s: counts not stored yet (%s)", self.watch.camera,
                        type(e).__name__)

    def close(self) -> None:
        """The camera stops: store what was counted since the last flush, and the alerts
        still waiting."""
        self.flush()
        self._store_pending()

    def _record(self, alert: Alert) -> None:
        target = self.loaded.target(str(alert["matched"]))
        if target is None:
            return
        kind, entry_id = target
        plate = alert.get("plate")
        score = plate["confidence"] if kind == "plate" and plate else self._confidence(
            str(entry_id), alert)
        self._pending.append((kind, entry_id, f"{score:.2f}", alert))
        self._store_pending()

    def _store_pending(self) -> None:
        """Store the alerts not stored yet, oldest first. Those the database cannot take now
        wait in memory (at most PENDING_ALERTS, the oldest dropped) for the next reload that
        reads it: the error went out of the camera's loop, stopping it and losing the alert."""
        while self._pending:
            try:
                self._store(*self._pending[0])
            except SQLAlchemyError as e:
                log.warning("camera %s: %d alert(s) not stored yet (%s)", self.watch.camera,
                            len(self._pending), type(e).__name__)
                return
            self._pending.popleft()

    def _store(self, kind: str, entry_id: int, confidence: str, alert: Alert) -> None:
        details = {k: v for k, v in alert.items() if k not in ("camera", "kind", "crop_jpeg")}
        announce = {**details, "camera": alert["camera"], "kind": kind,
                    "hotlist_id" if kind == "plate" else "rule_id": entry_id}
        try:
            event = self.events.record_scene_alert(
                alert["camera"], kind, entry_id, confidence, cooldown_s=self.cooldown_s,
                announce=announce if self.relay is not None else None,
                snapshot_jpeg=alert.get("crop_jpeg"), **details)
        except NotFoundError:
            return  # the entry was deleted since the last reload: it no longer alerts
        if event is None:
            return  # this camera alerted on the entry within the cool-down
        self.alerts += 1
        if self.relay is not None:
            self.relay.poke()

    def _confidence(self, rule_name: str, alert: Alert) -> float:
        """A rule alert's confidence: the weakest of the attributes the rule asks for (1.0
        when it names only a class)."""
        wanted = next((r.wanted for r in self.loaded.hotlists.rules if r.name == rule_name), {})
        attributes: dict[str, Any] = alert.get("attributes") or {}
        return min((attributes[name]["confidence"] for name in wanted if name in attributes),
                   default=1.0)
