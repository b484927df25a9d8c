"""One event model: a listed person seen by a camera (or any other source), awaiting review."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from facelens.gallery.models import Base, utcnow

STATUSES = ("unconfirmed", "confirmed", "dismissed")


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    camera: Mapped[str] = mapped_column(String(100), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    gallery: Mapped[str] = mapped_column(String(100))
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"),
                                            index=True)
    """Events go with their subject: deleting (shredding) a person deletes their sightings."""
    subject_name: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="unconfirmed", index=True)
    """Unconfirmed until a person confirms or dismisses it in the console."""
    snapshot: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """JPEG, sealed with the subject's data key (so it is shredded with the subject)."""
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reviewed_by: Mapped[str | None] = mapped_column(String(120), default=None)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
