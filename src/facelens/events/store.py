"""Events in the database: recorded by sources (cameras), reviewed by people.

Snapshots are sealed with the subject's data key, so deleting the subject shreds them too.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from facelens.errors import NotFoundError
from facelens.events.hotlists import plate_key
from facelens.store.crypto import context, seal, unseal
from facelens.store.database import Store
from facelens.store.tables import (
    SCENE_ENTRIES,
    STATUSES,
    UNREVIEWED,
    AlertWindow,
    Event,
    OutboxEntry,
    PlateHotlistEntry,
    SceneAlertWindow,
    Subject,
    entry_owner,
    utcnow,
)

IDS = range(1, 2**31)
"""Event ids the database can hold: PostgreSQL's INTEGER is 32-bit. An id outside names no
event, and is never sent to the database (where it would be an error, not a miss)."""


def _bounded(event_id: int | None) -> int | None:
    """A cursor id clamped into what the database takes (the same page, bar the last id)."""
    return None if event_id is None else min(max(event_id, IDS.start - 1), IDS.stop - 1)



class EventStore:
    """The events kept in one `Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.sessions = store.sessions
        self.handoff = threading.Lock()
        """Held while a relay hands outbox rows on, so this process hands each row on once."""

    def record(self, camera: str, subject_id: str, confidence: str, *,
               snapshot_jpeg: bytes | None = None, frame_jpeg: bytes | None = None,
               status: str = "unconfirmed", **details: Any) -> Event:
        """Store one sighting of an enrolled subject (never of anyone else)."""
        with self.sessions.begin() as s:
            return self._add(s, camera, subject_id, confidence, snapshot_jpeg, frame_jpeg,
                             status, details)

    def record_alert(self, camera: str, subject_id: str, confidence: str, *,
                     cooldown_s: float = 0.0, announce: dict[str, Any] | None = None,
                     snapshot_jpeg: bytes | None = None, frame_jpeg: bytes | None = None,
                     status: str = "unconfirmed", **details: Any) -> Event | None:
        """Store an alert, or None when the camera already alerted on this subject within
        `cooldown_s` (whichever worker did: the window is claimed in the database). With
        `announce`, that payload (plus event_id, at, status) goes into the outbox in the same
        transaction as the event, for a relay to hand on: stored means sent, eventually."""
        with self.sessions.begin() as s:
            if s.get(Subject, subject_id) is None:
                raise NotFoundError(f"no subject {subject_id}")
            if cooldown_s > 0 and not _claim_window(s, AlertWindow, camera, subject_id,
                                                    cooldown_s):
                return None
            event = self._add(s, camera, subject_id, confidence, snapshot_jpeg, frame_jpeg,
                              status, details)
            _announce(s, event, announce)
        return event

    def record_scene_alert(self, camera: str, kind: str, entry_id: int, confidence: str, *,
                           cooldown_s: float = 0.0, announce: dict[str, Any] | None = None,
                           snapshot_jpeg: bytes | None = None, **details: Any) -> Event | None:
        """Store an alert raised by plate hotlist entry or description rule `entry_id` (kind
        "plate" or "rule"), as record_alert does a face's: the same cool-down (per camera and
        entry) and outbox. The crop is sealed under the entry's data key, and the event goes
        with the entry. NotFoundError when the entry was deleted meanwhile."""
        table = SCENE_ENTRIES[kind]
        owner = entry_owner(kind, entry_id)
        with self.sessions.begin() as s:
            entry = s.get(table, entry_id)
            if entry is None:
                raise NotFoundError(f"no {kind} entry {entry_id}")
            if cooldown_s > 0 and not _claim_window(s, SceneAlertWindow, camera, owner,
                                                    cooldown_s):
                return None
            data_key = self.store.master.unwrap(entry.wrapped_key, owner)
            label = entry.plate if isinstance(entry, PlateHotlistEntry) else entry.description
            event = Event(camera=camera, at=utcnow(), gallery=f"{kind}s", kind=kind,
                          hotlist_id=entry_id if kind == "plate" else None,
                          rule_id=entry_id if kind == "rule" else None, subject_name=label,
                          confidence=confidence, status="unconfirmed", details=details,
                          snapshot=seal(data_key, snapshot_jpeg, context("snapshot", owner))
                          if snapshot_jpeg else None)
            s.add(event)
            _announce(s, event, announce)
        return event

    def _add(self, s: Session, camera: str, subject_id: str, confidence: str,
             snapshot_jpeg: bytes | None, frame_jpeg: bytes | None, status: str,
             details: dict[str, Any]) -> Event:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        subject = s.get(Subject, subject_id)
        if subject is None:
            raise NotFoundError(f"no subject {subject_id}")
        data_key = self.store.master.unwrap(subject.wrapped_key, subject.id)
        event = Event(camera=camera, at=utcnow(), gallery=subject.gallery.name,
                      subject_id=subject.id, subject_name=subject.display_name,
                      confidence=confidence, status=status, details=details,
                      snapshot=seal(data_key, snapshot_jpeg, context("snapshot", subject.id))
                      if snapshot_jpeg else None,
                      frame=seal(data_key, frame_jpeg, context("frame", subject.id))
                      if frame_jpeg else None)
        s.add(event)
        return event

    def expire_unconfirmed(self, older_than_days: float) -> int:
        """Delete unreviewed events (unconfirmed, suppressed posters, depictions) older than
        the retention period."""
        cutoff = utcnow() - timedelta(days=older_than_days)
        with self.sessions.begin() as s:
            return int(s.execute(sa.delete(Event).where(
                Event.status.in_(UNREVIEWED), Event.at < cutoff)).rowcount)

    def forget_ended_cooldowns(self) -> int:
        """Delete the cameras' cool-down windows (faces' and scene entries') that have ended:
        the next claim overwrites them anyway (_claim_window takes a window whose `until` has
        passed), so until then they only say when and where someone or an entry last alerted.
        `until` is the claim time plus the cool-down it served, so none still suppresses an
        alert; a window claimed meanwhile ends later and stays. Returns how many went."""
        with self.sessions.begin() as s:
            now = _window_clock(s)
            return sum(int(s.execute(sa.delete(table).where(table.until <= now)).rowcount)
                       for table in (AlertWindow, SceneAlertWindow))

    def list(self, status: str | None = None, limit: int = 100, *, camera: str | None = None,
             subject_id: str | None = None, gallery: str | None = None,
             since: datetime | None = None, before: int | None = None,
             after: int | None = None, kind: str | None = None,
             plate: str | None = None) -> list[Event]:
        """Newest first, narrowed by every filter given. `before` is a cursor: the id of the
        last event of the previous page (ids grow with recording, so pages never overlap or
        skip an event recorded meanwhile). With `after` (an id): the events recorded since
        that one, oldest first. `plate`: alerts of the hotlist entries for that plate."""
        before, after = _bounded(before), _bounded(after)
        order = Event.id.asc() if after is not None else Event.id.desc()
        query = sa.select(Event).order_by(order).limit(limit)
        if after is not None:
            query = query.where(Event.id > after)
        for column, wanted in ((Event.status, status), (Event.camera, camera),
                               (Event.subject_id, subject_id), (Event.gallery, gallery),
                               (Event.kind, kind)):
            if wanted is not None:
                query = query.where(column == wanted)
        if plate is not None:
            query = query.where(Event.hotlist_id.in_(sa.select(PlateHotlistEntry.id).where(
                PlateHotlistEntry.plate_key == plate_key(plate))))
        if since is not None:
            query = query.where(Event.at >= since)
        if before is not None:
            query = query.where(Event.id < before)
        with self.sessions() as s:
            return list(s.scalars(query))

    def counts(self, subject_id: str) -> dict[str, int]:
        """How many of the subject's events there are per status (deleting the subject
        deletes them all, reviewed or not)."""
        with self.sessions() as s:
            return {status: int(n) for status, n in s.execute(
                sa.select(Event.status, sa.func.count(Event.id))
                .where(Event.subject_id == subject_id).group_by(Event.status))}

    def get(self, event_id: int) -> Event:
        if event_id not in IDS:
            raise NotFoundError(f"no event {event_id}")
        with self.sessions() as s:
            event = s.get(Event, event_id)
        if event is None:
            raise NotFoundError(f"no event {event_id}")
        return event

    def image(self, event_id: int, kind: str = "snapshot") -> bytes:
        """The event's best-shot crop ("snapshot") or blurred whole frame ("frame"), JPEG."""
        if event_id not in IDS:
            raise NotFoundError(f"no event {event_id}")
        with self.sessions() as s:
            event = s.get(Event, event_id)
            blob = getattr(event, kind) if event is not None else None
            if event is None or blob is None:
                raise NotFoundError(f"event {event_id} has no {kind}")
            data_key, owner = self._key(s, event)
            return unseal(data_key, blob, context(kind, owner))

    def _key(self, s: Session, event: Event) -> tuple[bytes, str]:
        """The data key the event's pictures are sealed under, and whose it is."""
        entry_id = event.hotlist_id if event.kind == "plate" else event.rule_id
        if event.kind in SCENE_ENTRIES and entry_id is not None:
            owner = entry_owner(event.kind, entry_id)
            entry = s.get(SCENE_ENTRIES[event.kind], entry_id)
            assert entry is not None  # the foreign key cascades
            return self.store.master.unwrap(entry.wrapped_key, owner), owner
        subject = s.get(Subject, event.subject_id)
        assert subject is not None  # the foreign key cascades
        return self.store.master.unwrap(subject.wrapped_key, subject.id), subject.id

    def review(self, event_id: int, status: str, reviewer: str) -> Event:
        if status not in ("confirmed", "dismissed"):
            raise ValueError("a review confirms or dismisses")
        if event_id not in IDS:
            raise NotFoundError(f"no event {event_id}")
        with self.sessions.begin() as s:
            event = s.get(Event, event_id)
            if event is None:
                raise NotFoundError(f"no event {event_id}")
            event.status, event.reviewed_by, event.reviewed_at = status, reviewer, utcnow()
        return event

    def delete(self, event_id: int) -> None:
        if event_id not in IDS:
            raise NotFoundError(f"no event {event_id}")
        with self.sessions.begin() as s:
            if not s.execute(sa.delete(Event).where(Event.id == event_id)).rowcount:
                raise NotFoundError(f"no event {event_id}")


def _announce(s: Session, event: Event, announce: dict[str, Any] | None) -> None:
    """With `announce`, that payload (plus event_id, at, status) into the outbox, in the
    event's transaction."""
    if announce is None:
        return
    s.flush()  # the event's id
    s.add(OutboxEntry(event_id=event.id, camera=event.camera, payload={
        **announce, "event_id": event.id, "at": event.at.isoformat(), "status": event.status}))


def _window_clock(s: Session) -> Any:
    """Now, for cool-down windows: on PostgreSQL the server's clock, which workers on several
    machines share (each one's own clock let one running ahead alert again early)."""
    return sa.func.now() if s.get_bind().dialect.name == "postgresql" else utcnow()


def _claim_window(s: Session, table: type[AlertWindow] | type[SceneAlertWindow], camera: str,
                  target: str, cooldown_s: float) -> bool:
    """One atomic statement: insert the (camera, subject or scene target) window, or move it
    on only if it has ended. Of two workers racing, the second waits on the row and then
    finds it current (PostgreSQL re-checks the WHERE on the committed row; SQLite serialises
    writers)."""
    now = _window_clock(s)
    dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    column = "subject_id" if table is AlertWindow else "target"
    insert = dialect.insert(table).values(camera=camera, **{column: target},
                                          until=now + timedelta(seconds=cooldown_s))
    claim = insert.on_conflict_do_update(index_elements=["camera", column],
                                         set_={"until": insert.excluded.until},
                                         where=table.until <= now)
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT … ON CONFLICT here.
    return s.execute(claim.returning(table.until)).first() is not None
