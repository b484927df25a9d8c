"""Events in the database: recorded by sources (cameras), reviewed by people.

Snapshots are sealed with the subject's data key, so deleting the subject shreds them too.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from facelens.errors import NotFoundError
from facelens.events.models import STATUSES, Event
from facelens.gallery.crypto import seal, unseal
from facelens.gallery.models import Subject, utcnow
from facelens.gallery.service import Galleries


def _context(event_subject: str) -> bytes:
    return f"snapshot:{event_subject}".encode()


class EventStore:
    def __init__(self, galleries: Galleries) -> None:
        self.galleries = galleries
        self.sessions = galleries.sessions

    def record(self, camera: str, subject_id: str, confidence: str, *,
               snapshot_jpeg: bytes | None = None, **details: Any) -> Event:
        """Store one sighting of an enrolled subject (never of anyone else)."""
        with self.sessions.begin() as s:
            subject = s.get(Subject, subject_id)
            if subject is None:
                raise NotFoundError(f"no subject {subject_id}")
            sealed = None
            if snapshot_jpeg:
                data_key = self.galleries.master.unwrap(subject.wrapped_key, subject.id)
                sealed = seal(data_key, snapshot_jpeg, _context(subject.id))
            event = Event(camera=camera, gallery=subject.gallery.name, subject_id=subject.id,
                          subject_name=subject.display_name, confidence=confidence,
                          snapshot=sealed, details=details)
            s.add(event)
        return event

    def list(self, status: str | None = None, limit: int = 100) -> list[Event]:
        query = sa.select(Event).order_by(Event.at.desc()).limit(limit)
        if status:
            query = query.where(Event.status == status)
        with self.sessions() as s:
            return list(s.scalars(query))

    def get(self, event_id: int) -> Event:
        with self.sessions() as s:
            event = s.get(Event, event_id)
        if event is None:
            raise NotFoundError(f"no event {event_id}")
        return event

    def snapshot(self, event_id: int) -> bytes:
        with self.sessions() as s:
            event = s.get(Event, event_id)
            if event is None or event.snapshot is None:
                raise NotFoundError(f"event {event_id} has no snapshot")
            subject = s.get(Subject, event.subject_id)
            assert subject is not None  # the foreign key cascades
            data_key = self.galleries.master.unwrap(subject.wrapped_key, subject.id)
            return unseal(data_key, event.snapshot, _context(subject.id))

    def review(self, event_id: int, status: str, reviewer: str) -> Event:
        if status not in STATUSES[1:]:
            raise ValueError(f"review status must be one of {STATUSES[1:]}")
        with self.sessions.begin() as s:
            event = s.get(Event, event_id)
            if event is None:
                raise NotFoundError(f"no event {event_id}")
            event.status, event.reviewed_by, event.reviewed_at = status, reviewer, utcnow()
        return event

    def delete(self, event_id: int) -> None:
        with self.sessions.begin() as s:
            if not s.execute(sa.delete(Event).where(Event.id == event_id)).rowcount:
                raise NotFoundError(f"no event {event_id}")
