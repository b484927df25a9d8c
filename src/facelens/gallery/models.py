"""The gallery's tables (SQLAlchemy 2). The database is the source of truth; the vector index
is a cache rebuilt from it. Embeddings and crops are stored only encrypted (see crypto.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything here is stored in UTC."""
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


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
    keep_crops: Mapped[bool] = mapped_column(Boolean, default=False)
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
    crop: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """Encrypted aligned enrolment crop (PNG), only if the gallery keeps crops."""
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
