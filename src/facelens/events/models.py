"""One event model: a listed person seen by a camera (or any other source), awaiting review."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from facelens.gallery.models import Base, utcnow

EventStatus = Literal["unconfirmed", "confirmed", "dismissed", "suppressed"]
STATUSES: tuple[str, ...] = get_args(EventStatus)
"""suppressed: stored for review but never alerted (e.g. a face that moved as a poster)."""


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
    frame: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """JPEG of the whole frame with every other face blurred, sealed like the snapshot."""
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reviewed_by: Mapped[str | None] = mapped_column(String(120), default=None)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Camera(Base):
    """A camera the service watches (seeded from the settings file, managed over the API)."""

    __tablename__ = "cameras"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    source: Mapped[str] = mapped_column(String(1000))
    """A video file, rtsp:// or http(s):// stream, or /dev/videoN."""
    galleries: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    fps: Mapped[float] = mapped_column(Float, default=10.0)
    motion: Mapped[bool] = mapped_column(Boolean, default=False)
    cooldown_s: Mapped[float] = mapped_column(Float, default=60.0)
    far: Mapped[float] = mapped_column(Float, default=1e-3)
