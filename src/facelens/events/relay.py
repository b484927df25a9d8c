"""The outbox relay: alerts written with their event (EventStore.record_alert) are handed on
in id order, each row deleted only once it was taken, so a crash at any point re-sends and
never loses. With NATS the relay publishes to a JetStream stream, the event id as the message
id (the stream's duplicate window drops a re-publish after a crash); without, it hands rows
straight to the sinks (the embedded default)."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import sqlalchemy as sa

from facelens.events.sinks import Fanout
from facelens.events.store import EventStore
from facelens.store.tables import OutboxEntry

if TYPE_CHECKING:  # nats-py is the optional `cluster` extra: the embedded default runs without
    from facelens.cluster.bus import Bus

log = logging.getLogger("facelens.events")

DUPLICATE_WINDOW_S = 600.0
"""How long JetStream remembers a message id: what a relay re-publishes within this after a
crash is dropped as a duplicate (later, receivers drop it by event_id)."""

Publish = Callable[[OutboxEntry], bool]
"""Hands one outbox row on; True once it was taken (False or an error: try again later)."""


class OutboxRelay:
    """Hands outbox rows on, oldest first. `start()` runs it in a thread that wakes on
    `poke()` (an alert was just written here) and every `poll_s` (rows other processes wrote,
    or a crash left); without the thread, `poke()` hands rows on in the caller's thread."""

    def __init__(self, events: EventStore, publish: Publish, *, poll_s: float = 1.0,
                 max_backoff_s: float = 30.0) -> None:
        self.events, self.publish = events, publish
        self.poll_s, self.max_backoff_s = poll_s, max_backoff_s
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> OutboxRelay:
        self._thread = threading.Thread(target=self._run, name="facelens-relay", daemon=True)
        self._thread.start()
        return self

    def poke(self) -> None:
        if self._thread is None:
            self.drain()
        else:
            self._wake.set()

    def drain(self) -> bool:
        """Hand on every row there is; False when one was not taken (it stays, first)."""
        with self.events.handoff:  # one hand-off at a time in this process
            while True:
                with self.events.sessions.begin() as s:
                    # Another process's relay skips the row this one holds (PostgreSQL).
                    row = s.scalars(sa.select(OutboxEntry).order_by(OutboxEntry.id).limit(1)
                                    .with_for_update(skip_locked=True)).first()
                    if row is None:
                        return True
                    try:
                        taken = self.publish(row)
                    except Exception:
                        log.exception("handing on event %s failed", row.event_id)
                        taken = False
                    if not taken:
                        return False
                    s.execute(sa.delete(OutboxEntry).where(OutboxEntry.id == row.id))

    def _run(self) -> None:
        backoff, failing = 0.0, False
        while not self._stop.is_set():
            self._wake.wait(backoff or self.poll_s)
            self._wake.clear()
            try:
                done = self.drain()
            except Exception:  # the database went away: keep trying, never die
                # One traceback per outage, not one per try (each second while it lasts).
                log.log(logging.DEBUG if failing else logging.ERROR,
                        "outbox relay: the database cannot be read; retrying", exc_info=True)
                failing = True
                backoff = min(max(backoff * 2, 1.0), self.max_backoff_s)
                continue
            if failing:
                log.warning("outbox relay: the database answers again")
                failing = False
            backoff = 0.0 if done else min(max(backoff * 2, 1.0), self.max_backoff_s)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)


def to_sinks(sink: Fanout) -> Publish:
    """The embedded default: a row is taken when every sink took its payload."""
    return lambda row: sink.deliver(row.payload)


def stream_names(nats_prefix: str) -> tuple[str, str]:
    """The alert stream of a deployment and its subject prefix: alerts go to
    <nats_prefix>.events.<camera> in the stream <nats_prefix>_events."""
    return f"{nats_prefix}_events", f"{nats_prefix}.events"


def subject_of(camera: str, subjects: str) -> str:
    """<subjects>.<camera>, the camera name made one NATS token (no dots, spaces or wildcards)."""
    return f"{subjects}.{re.sub(r'[^A-Za-z0-9_-]', '_', camera) or '_'}"


def ensure_stream(bus: Bus, stream: str, subjects: str) -> None:
    """The alert stream, created on first use. Work-queue retention: a message leaves the
    broker once delivered (acknowledged), so no name lingers there after its alert went out."""
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import NotFoundError as StreamNotFoundError

    async def ensure() -> None:
        try:
            await bus.js.stream_info(stream)
        except StreamNotFoundError:
            await bus.js.add_stream(StreamConfig(
                name=stream, subjects=[f"{subjects}.>"], retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW_S))

    bus.call(ensure())


def to_jetstream(bus: Bus, stream: str, subjects: str) -> Publish:
    """Publish a row to the stream with `Nats-Msg-Id: <event id>`; taken once JetStream
    acknowledged it (stored, or recognised as a duplicate)."""
    from nats.js.errors import NoStreamResponseError

    ensure_stream(bus, stream, subjects)

    def publish(row: OutboxEntry) -> bool:
        body = json.dumps(row.payload, sort_keys=True, default=str).encode()
        send = partial(bus.js.publish, subject_of(row.camera, subjects), body, stream=stream,
                       headers={"Nats-Msg-Id": str(row.event_id)})
        try:
            bus.call(send())
        except NoStreamResponseError:  # a NATS that lost its JetStream store: make it again
            log.warning("alert stream %s was gone; made again", stream)
            ensure_stream(bus, stream, subjects)
            bus.call(send())
        return True

    return publish
