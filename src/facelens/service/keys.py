"""API keys with scopes, stored hashed. A key is `fl_<id>_<secret>`; only sha256(key) is kept,
and the whole key is shown once, when it is made."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from facelens.errors import ConflictError, FacelensError, NotFoundError
from facelens.policy.payment import PAYMENT_MARKER
from facelens.store.tables import ApiKey, utcnow

SCOPES = {
    "admin": "everything, including galleries, keys and the audit log",
    "detect": "detect and analyze",
    "enrol": "read galleries, enrol and delete subjects",
    "identify": "read galleries, identify, 'not this person'",
    "verify": "1:1 verification",
    "events": "read and review events",
    "metrics": "Prometheus /metrics",
    "export": "may receive embeddings",
    "scores": "may receive raw scores and thresholds",
    PAYMENT_MARKER: "a marker, not a permission: this key's verify and door decisions need a "
               "passed liveness session",
}


class ScopeError(FacelensError):
    """A key request that cannot be honoured (unknown scope, empty name)."""


@dataclass(frozen=True)
class Principal:
    """The caller behind a request."""

    id: str
    name: str
    scopes: frozenset[str]

    def allows(self, *scopes: str) -> bool:
        return "admin" in self.scopes or any(s in self.scopes for s in scopes)

    @property
    def label(self) -> str:
        return f"{self.id}:{self.name}"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    CACHE_S = 5.0
    """How long an answer is reused: a key revoked by another process stops working within
    this time (at once in this process)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._lock = threading.Lock()

    def create(self, name: str, scopes: list[str]) -> tuple[Principal, str]:
        """Make a key; returns it in full (the only time it is ever visible)."""
        unknown = sorted(set(scopes) - SCOPES.keys())
        if unknown or not scopes:
            raise ScopeError(f"unknown scope(s) {', '.join(unknown) or '(none given)'}; "
                            f"choose from {', '.join(SCOPES)}")
        if not name.strip():
            raise ScopeError("a key needs a name")
        key_id = secrets.token_hex(6)
        key = f"fl_{key_id}_{secrets.token_urlsafe(32)}"
        with self.sessions.begin() as s:
            s.add(ApiKey(id=key_id, name=name.strip(), scopes=sorted(set(scopes)),
                         secret_hash=_digest(key)))
        return Principal(key_id, name.strip(), frozenset(scopes)), key

    def authenticate(self, key: str) -> Principal | None:
        digest, now = _digest(key), time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached and cached[1] > now:
            return cached[0]
        found = self._lookup(key, digest)
        with self._lock:
            if len(self._cache) > 10_000:  # unknown keys must not grow it without bound
                self._cache.clear()
            self._cache[digest] = (found, now + self.CACHE_S)
        return found

    def _lookup(self, key: str, digest: str) -> Principal | None:
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != "fl":
            return None
        with self.sessions() as s:
            row = s.get(ApiKey, parts[1])
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_hash, digest):
            return None
        return Principal(row.id, row.name, frozenset(row.scopes))

    def list(self) -> list[ApiKey]:
        with self.sessions() as s:
            return list(s.scalars(sa.select(ApiKey).order_by(ApiKey.created_at)))

    def any_active(self) -> bool:
        with self.sessions() as s:
            return s.scalar(sa.select(sa.func.count(ApiKey.id))
                            .where(ApiKey.revoked_at.is_(None))) > 0

    def revoke(self, key_id: str) -> None:
        """Revoke a key, unless it is the last active admin key: then no one could make or
        revoke keys, read the audit log or add galleries over the API, and a restart makes
        no new admin key while other keys are active."""
        with self.sessions.begin() as s:
            row = s.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                raise NotFoundError(f"no active key {key_id}")
            others = s.scalars(sa.select(ApiKey.scopes).where(ApiKey.revoked_at.is_(None),
                                                              ApiKey.id != key_id))
            if "admin" in row.scopes and not any("admin" in scopes for scopes in others):
                raise ConflictError(f"key {key_id} is the last active admin key: make another "
                                    "admin key first (POST /v1/keys, or `facelens keys create "
                                    "NAME --scope admin`)")
            row.revoked_at = utcnow()
        with self._lock:
            self._cache.clear()
