"""Run cameras: each in its own thread, source → Watcher → events stored and delivered."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from facelens.events.relay import OutboxRelay, to_sinks
from facelens.events.sinks import Fanout, MqttSink, Sink, WebhookSink
from facelens.events.store import EventStore
from facelens.gallery.service import Galleries
from facelens.settings import CameraConfig, Settings
from facelens.video.masks import FrameMask
from facelens.video.scene_camera import SceneCamera
from facelens.video.source import SourceError, VideoSource, redacted
from facelens.video.watch import Alert, Watcher
from facelens.vision.decode import encode_jpeg
from facelens.vision.draw import draw_labels

log = logging.getLogger("facelens.video")


def sinks_from(settings: Settings, events: EventStore | None = None) -> Fanout:
    """The alert sinks the settings name; `events` lets MQTT publish snapshots when
    mqtt_snapshots is on."""
    sinks: list[Sink] = [WebhookSink(h.url, h.secret) for h in settings.webhooks]
    if settings.mqtt_url:
        snapshot = events.image if events is not None and settings.mqtt_snapshots else None
        sinks.append(MqttSink(settings.mqtt_url, prefix=settings.mqtt_prefix,
                              snapshot=snapshot))
    return Fanout(sinks)


MAX_ANNOUNCED = 200
"""Watched people announced per camera (a Home Assistant entity each); a longer watchlist is
announced as its camera's last-alert sensor only."""


def announce_camera(sink: Fanout | None, config: CameraConfig, galleries: Galleries) -> None:
    """Home Assistant discovery for a camera that starts: a binary sensor per watched person
    (subject id and name), and its last-alert sensor."""
    if sink is None:
        return
    people = [(s.id, s.display_name) for gallery in config.galleries
              for s in galleries.subjects(gallery)]
    sink.announce(config.name, people if len(people) <= MAX_ANNOUNCED else [])


def relay_for(events: EventStore, outlet: OutboxRelay | Sink | None) -> OutboxRelay | None:
    """The relay that hands `events`' outbox on to `outlet` (itself when it is one)."""
    return outlet if isinstance(outlet, OutboxRelay) or outlet is None else \
        OutboxRelay(events, to_sinks(outlet if isinstance(outlet, Fanout) else Fanout([outlet])))


def alert_recorder(events: EventStore, outlet: OutboxRelay | Sink | None, *,
                   cooldown_s: float = 0.0) -> Callable[[Alert, bytes, bytes], int | None]:
    """The Watcher's on_alert: store the event (sealed pictures) unless this camera already
    alerted on the person within `cooldown_s` (on any worker: the database decides), and with
    it, unless it was flagged (a poster is kept for review, not announced), an outbox row.
    `outlet` hands the outbox on: the process's relay (`start_delivery(…).relay`, a thread)
    is woken; a plain sink gets it in this thread; None announces nothing."""
    relay = relay_for(events, outlet)

    def record(alert: Alert, snapshot: bytes, frame: bytes) -> int | None:
        announce = relay is not None and not alert.flagged
        event = events.record_alert(alert.camera, alert.subject_id, alert.confidence,
                                    cooldown_s=0.0 if alert.flagged else cooldown_s,
                                    announce=alert.payload() if announce else None,
                                    snapshot_jpeg=snapshot, frame_jpeg=frame,
                                    status=alert.status, track=alert.track_id,
                                    video_time=alert.time, flagged=alert.flagged, cue=alert.cue)
        if event is None:
            return None  # another worker (or this camera before a restart) alerted within
        if announce and relay is not None:
            relay.poke()
        return event.id

    return record


class CameraRunner:
    def __init__(self, config: CameraConfig, galleries: Galleries, events: EventStore,
                 sink: OutboxRelay | Sink | None) -> None:
        self.config, self.galleries, self.events = config, galleries, events
        self.relay = relay_for(events, sink)
        self.on_alert = alert_recorder(events, self.relay, cooldown_s=config.cooldown_s)
        self.stop_event = threading.Event()
        self.status = "starting"
        self.alerts = 0
        self.preview: bytes | None = None
        """The latest processed frame with boxes and labels, JPEG (memory only)."""
        self.source: VideoSource | None = None
        self._thread = threading.Thread(target=self._run, name=f"camera-{config.name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        c = self.config
        scene: SceneCamera | None = None
        try:
            watcher = Watcher(c.name, self.galleries, c.galleries, far=c.far,
                              cooldown_s=c.cooldown_s, motion=c.motion, on_alert=self.on_alert)
            scene = SceneCamera(c.name, self.events, self.relay, cooldown_s=c.cooldown_s,
                                gate=c.motion, engine=self.galleries.engine,
                                detect_side=self.galleries.engine.settings.street_detect_side,
                                ) if c.scene else None
            self.source = VideoSource(c.source, fps=c.fps, stop=self.stop_event)
            self.status = "running"
            last_time = 0.0
            looked_at = FrameMask(c.zones, c.masks)
            for frame in self.source.frames():
                if looked_at.active:
                    frame = replace(frame, rgb=looked_at.apply(frame.rgb))
                street: list[tuple[np.ndarray, str, bool]] = []
                if scene is not None:  # first: its NanoDet pass serves the watcher too
                    earlier = scene.alerts
                    street = scene.process(frame)
                    self.alerts += scene.alerts - earlier
                detected = scene.watch.latest if scene is not None else None
                self.alerts += len(watcher.process(frame, detected))
                self._show(frame.rgb, list(watcher.labels) + street)
                last_time = frame.time
            self.alerts += len(watcher.finish(last_time))
            self.status = "stopped" if self.stop_event.is_set() else "ended"
        except (SourceError, Exception) as e:  # a camera's failure must not take others down
            self.status = f"error: {e}"
            log.error("camera %s stopped: %s", c.name, type(e).__name__)
        finally:
            if scene is not None:
                self._close_scene(scene)

    def _close_scene(self, scene: SceneCamera) -> None:
        """Store what the street layer counted since its last flush, however the camera
        stopped (a truncated file, a database error lost up to a minute of counts). Its
        own failure is logged; it does not replace the error that stopped the camera."""
        try:
            scene.close()
        except Exception as e:
            log.error("camera %s: street counts not stored: %s", self.config.name,
                      type(e).__name__)
            if not self.status.startswith("error"):
                self.status = f"error: {e}"

    def _show(self, rgb: np.ndarray, labels: list[tuple[np.ndarray, str, bool]]) -> None:
        drawn = draw_labels(rgb, labels)
        self.preview = encode_jpeg(drawn, 75)  # one reference swap: readers never see half

    def describe(self) -> dict[str, Any]:
        source = self.source  # a live stream that dropped and has not come back yet:
        down = (self.status == "running" and source is not None and source.live
                and not source.connected and source.reconnects > 0)
        return {**self.config.model_dump(), "source": redacted(self.config.source),
                "status": "reconnecting" if down else self.status, "alerts": self.alerts,
                "reconnects": self.source.reconnects if self.source else 0}
