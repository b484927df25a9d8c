"""Every table facelens keeps (SQLAlchemy 2): galleries, subjects, templates, consents and
negatives; events and cameras; API keys and the audit log. The database is the source of truth;
the vector index is a cache rebuilt from it. Embeddings and event pictures are stored only
encrypted (see crypto.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, get_args

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything here is stored in UTC."""
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive one (SQLite's, or a client's) is taken as UTC already."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Gallery(Base):
    __tablename__ = "galleries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    purpose: Mapped[str] = mapped_column(String(100))
    """e.g. staff-door, watchlist-missing; purposes starting with "watchlist" need reasons."""
    embedder: Mapped[str] = mapped_column(String(40))
    retention_days: Mapped[int] = mapped_column(Integer, default=3 * 365)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Bumped in the same transaction as every change to the gallery's templates or model:
    a process holding the index in memory re-checks it only when this moved."""

    subjects: Mapped[list[Subject]] = relationship(back_populates="gallery",
                                                   cascade="all, delete-orphan")

    @property
    def is_watchlist(self) -> bool:
        return self.purpose.startswith("watchlist")


class Subject(Base):
    __tablename__ = "subjects"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id", ondelete="CASCADE"),
                                            index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    """The subject's data key, encrypted by the master key. Deleting it shreds the subject."""
    key_id: Mapped[str] = mapped_column(String(16))
    watch_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    watch_expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    reference: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """AES-256-GCM(JPEG of the best enrolment face, its 112-px aligned chip) under the data
    key: shown to reviewers beside the subject's alerts, shredded with the key."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    gallery: Mapped[Gallery] = relationship(back_populates="subjects")
    templates: Mapped[list[Template]] = relationship(back_populates="subject",
                                                     cascade="all, delete-orphan")
    consents: Mapped[list[Consent]] = relationship(back_populates="subject",
                                                   cascade="all, delete-orphan")
    negatives: Mapped[list[NegativeExample]] = relationship(back_populates="subject",
                                                            cascade="all, delete-orphan")


class Template(Base):
    __tablename__ = "templates"
    # Never reuse a deleted template's id: ids are the index keys, a reused one would name
    # the wrong person in an index that has not caught up yet.
    __table_args__: ClassVar[dict[str, bool]] = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    """Also the vector's id in the index."""
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"),
                                            index=True)
    embedder: Mapped[str] = mapped_column(String(40))
    quality: Mapped[float] = mapped_column(Float)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    """AES-256-GCM(float32 embedding) under the subject's data key."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    subject: Mapped[Subject] = relationship(back_populates="templates")


class Consent(Base):
    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"),
                                            index=True)
    purpose: Mapped[str] = mapped_column(String(100))
    legal_basis: Mapped[str] = mapped_column(String(100))
    """consent, contract, legal-obligation, vital-interest, public-task, legitimate-interest."""
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    recorded_by: Mapped[str] = mapped_column(String(200))

    subject: Mapped[Subject] = relationship(back_populates="consents")


class NegativeExample(Base):
    """A "not this person" correction: a probe that must not match this subject again."""

    __tablename__ = "negative_examples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"),
                                            index=True)
    embedder: Mapped[str] = mapped_column(String(40))
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    """Encrypted like templates, under the subject's data key."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    subject: Mapped[Subject] = relationship(back_populates="negatives")


EventStatus = Literal["unconfirmed", "confirmed", "dismissed", "suppressed", "depiction"]
STATUSES: tuple[str, ...] = get_args(EventStatus)
"""suppressed: stored for review but never alerted (a face that moved as a poster);
depiction: the same for a face shown by a screen or a print (details name the cue)."""
UNREVIEWED: tuple[str, ...] = ("unconfirmed", "suppressed", "depiction")
"""Statuses nobody has reviewed: deleted after the retention period."""


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    camera: Mapped[str] = mapped_column(String(100), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    gallery: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20), default="face", server_default="face",
                                      index=True)
    """"face" (subject_id set), "plate" (hotlist_id set) or "rule" (rule_id set)."""
    subject_id: Mapped[str | None] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), index=True, default=None)
    """Events go with their subject: deleting (shredding) a person deletes their sightings."""
    hotlist_id: Mapped[int | None] = mapped_column(
        ForeignKey("plate_hotlist.id", ondelete="CASCADE"), index=True, default=None)
    rule_id: Mapped[int | None] = mapped_column(
        ForeignKey("scene_rules.id", ondelete="CASCADE"), index=True, default=None)
    """A scene alert goes with the hotlist entry or rule that raised it."""
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


class AlertWindow(Base):
    """A camera's cool-down for one subject: no second alert before `until`. Claimed by one
    atomic INSERT … ON CONFLICT … WHERE, so every worker on the database agrees."""

    __tablename__ = "alert_windows"

    camera: Mapped[str] = mapped_column(String(100), primary_key=True)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"),
                                            primary_key=True, index=True)
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SceneAlertWindow(Base):
    """A camera's cool-down for one hotlist entry or rule (`target` "plate:<id>"/"rule:<id>"),
    claimed like AlertWindow."""

    __tablename__ = "scene_alert_windows"

    camera: Mapped[str] = mapped_column(String(100), primary_key=True)
    target: Mapped[str] = mapped_column(String(40), primary_key=True)
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PlateHotlistEntry(Base):
    """A plate to alert on, with who added it, why and until when (audited)."""

    __tablename__ = "plate_hotlist"
    __table_args__: ClassVar[dict[str, bool]] = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plate_key: Mapped[str] = mapped_column(String(20), index=True)
    """The plate as compared (events/hotlists.plate_key)."""
    plate: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(500))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    added_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    """Data key its alerts' crops are sealed under; deleting the entry shreds them."""


class SceneRule(Base):
    """A time-limited description rule ("red car", "child, red top"), audited."""

    __tablename__ = "scene_rules"
    __table_args__: ClassVar[dict[str, bool]] = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    description: Mapped[str] = mapped_column(String(200))
    cameras: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Cameras it applies to; empty: all."""
    active_from: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    active_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    reason: Mapped[str] = mapped_column(String(500))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    added_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    """As PlateHotlistEntry.wrapped_key."""


SCENE_ENTRIES: dict[str, type[PlateHotlistEntry] | type[SceneRule]] = {
    "plate": PlateHotlistEntry, "rule": SceneRule}
"""The stored entries besides subjects whose data key the master key wraps, by the kind of
scene event that goes with them."""


def entry_owner(kind: str, entry_id: int) -> str:
    """Names the entry its data key is wrapped and its crops sealed for: "plate:3", "rule:5"
    (also its cameras' cool-down target)."""
    return f"{kind}:{entry_id}"


class SceneCount(Base):
    """The only thing the street layer keeps about passers-by: per camera, minute (UTC) and
    class, how many tracks were confirmed (their second detection) in that minute. No track
    id, box, attribute or plate."""

    __tablename__ = "scene_counts"

    camera: Mapped[str] = mapped_column(String(100), primary_key=True)
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True,
                                             index=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    """"person", "car", "bus", "truck", "bicycle", "motorcycle"."""
    tracks: Mapped[int] = mapped_column(Integer)


class OutboxEntry(Base):
    """An alert written with its event, not yet handed on (to JetStream or the sinks)."""

    __tablename__ = "outbox"
    __table_args__: ClassVar[dict[str, bool]] = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"),
                                          unique=True)
    """A deleted (or shredded) event is never announced."""
    camera: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


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
    zones: Mapped[list[list[list[float]]]] = mapped_column(JSON, default=list)
    """Polygons (fractions of the frame) where faces are watched; empty: everywhere."""
    masks: Mapped[list[list[list[float]]]] = mapped_column(JSON, default=list)
    """Polygons never looked at (blanked before detection)."""
    scene: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    """Whether the street layer (people, vehicles, plates) runs beside the face watcher."""


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    """The public part of the key (`fl_<id>_<secret>`), used to find the row."""
    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    secret_hash: Mapped[str] = mapped_column(String(64))
    """sha256 of the whole key: keys are 256-bit random, so a fast hash is enough."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class AuditEntry(Base):
    """One audited action. `hash` = sha256(prev_hash ‖ canonical row); see store/audit.py."""

    __tablename__ = "audit_log"
    __table_args__: ClassVar[dict[str, bool]] = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[str] = mapped_column(String(40))
    """ISO-8601 UTC, stored as text so the hashed value survives every database round trip."""
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(40))
    gallery: Mapped[str | None] = mapped_column(String(100), default=None)
    subject: Mapped[str | None] = mapped_column(String(36), default=None)
    outcome: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="{}")
    """Canonical JSON (sorted keys) of the action's parameters: never images or embeddings."""
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The audit chain's head: one row (id 1), changed in the transaction of every audit row
    under that row's lock, so appends from any number of processes make one chain."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    """Rows in the chain (ids run 1, 2, 3, …: the newest row's id)."""
    hash: Mapped[str] = mapped_column(String(64))
    """The newest row's hash (GENESIS before the first)."""
