"""The audit log: every identify, verify, enrol, delete and key change, in a hash chain.

Each row's hash is sha256(previous hash ‖ canonical JSON of the row, its id included), so an
edited, deleted or re-ordered row breaks the chain at that row. Deleting the newest rows
leaves a valid but shorter chain; the head (count and last hash) is therefore also kept in a
file beside the database (`audit.head`, replaced atomically), and `verify` compares the two;
a head behind an intact chain (a crash after a commit, before the head write) catches up. Both
live with the operator: the chain proves tampering to someone who kept a copy of a head, it does
not stop a root user who rewrites the whole chain and the head file together.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from facelens.store.database import Store
from facelens.store.tables import AuditEntry

GENESIS = "0" * 64
_PG_LOCK = 0x66616365  # one advisory lock id: appends from several processes stay serial


def _row_hash(prev_hash: str, entry: AuditEntry) -> str:
    body = json.dumps([entry.id, entry.at, entry.actor, entry.action, entry.gallery,
                       entry.subject, entry.outcome, entry.detail], separators=(",", ":"))
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    entries: int
    broken_at: int | None
    """Id of the first row that does not fit the chain (or -1: rows missing at the end)."""
    reason: str


class AuditLog:
    def __init__(self, sessions: sessionmaker[Session], head_file: Path) -> None:
        self.sessions = sessions
        self.head_file = head_file
        self._lock = threading.Lock()

    @classmethod
    def of(cls, store: Store) -> AuditLog:
        """The audit log of `store`: its rows in the database, its head beside it."""
        return cls(store.sessions, store.audit_head)

    def record(self, actor: str, action: str, outcome: str, *, gallery: str | None = None,
               subject: str | None = None, **detail: Any) -> None:
        with self._lock:  # the head file is written in the same order as the rows
            with self.sessions.begin() as s:
                if s.bind is not None and s.bind.dialect.name == "postgresql":
                    s.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
                last = s.execute(sa.select(AuditEntry.id, AuditEntry.hash)
                                 .order_by(AuditEntry.id.desc()).limit(1)).first()
                # The id is chosen here, not by the database, because the hash covers it: two
                # writers that race for it collide on the primary key, never fork the chain.
                entry = AuditEntry(id=(last.id if last else 0) + 1,
                                   at=datetime.now(UTC).isoformat(timespec="microseconds"),
                                   actor=actor, action=action, gallery=gallery, subject=subject,
                                   outcome=outcome, prev_hash=last.hash if last else GENESIS,
                                   detail=json.dumps(detail, sort_keys=True, default=str))
                entry.hash = _row_hash(entry.prev_hash, entry)
                # A Core insert of the row: the ORM's unit of work costs more CPU than the
                # commit itself, and this runs on every request.
                s.connection().execute(AuditEntry.__table__.insert(), {
                    c.name: getattr(entry, c.name) for c in AuditEntry.__table__.columns})
                head = {"entries": entry.id, "hash": entry.hash}  # ids run 1, 2, 3, …
            self._write_head(head)

    def _write_head(self, head: dict[str, Any]) -> None:
        """Replace the head file unless another process already wrote a newer head."""
        self.head_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.head_file.with_name(self.head_file.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.head_file.exists():
                current = json.loads(self.head_file.read_text() or "{}")
                if current.get("entries", 0) >= head["entries"]:
                    return
            tmp = self.head_file.with_name(self.head_file.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(head))
                f.flush()
                os.fsync(f.fileno())  # the rename must not land before the bytes
            os.replace(tmp, self.head_file)

    def entries(self, limit: int = 100) -> list[AuditEntry]:
        with self.sessions() as s:
            return list(s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id.desc())
                                  .limit(limit)))

    def verify(self) -> ChainCheck:
        """Check the chain and compare it with the head file. A head that names an earlier
        row of an intact chain is what a crash between a commit and the head write leaves
        (rows were added, none removed or changed): the head catches up and the log is
        intact."""
        head = json.loads(self.head_file.read_text()) if self.head_file.exists() else None
        prev, count, last_id, at_head = GENESIS, 0, None, None
        with self.sessions() as s:
            for entry in s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)
                                   .execution_options(yield_per=1000)):
                if entry.prev_hash != prev:
                    return ChainCheck(False, count, entry.id,
                                      "a row before it was changed or removed")
                if _row_hash(prev, entry) != entry.hash:
                    return ChainCheck(False, count, entry.id, "the row was edited")
                prev, count, last_id = entry.hash, count + 1, entry.id
                if head and count == head["entries"]:
                    at_head = entry.hash
        if head is None:
            return (ChainCheck(True, 0, None, "intact") if not count else
                    ChainCheck(False, count, -1, f"{self.head_file} is missing"))
        if head["entries"] == count and head["hash"] == prev:
            return ChainCheck(True, count, None, "intact")
        if head["entries"] < count and head["hash"] == at_head:
            self._write_head({"entries": count, "hash": prev})
            return ChainCheck(True, count, None, f"intact (the head file caught up from "
                                                 f"{head['entries']} to {count} entries)")
        return ChainCheck(False, count, -1 if head["entries"] > count else last_id,
                          f"the head file records {head['entries']} entries ending "
                          f"in {head['hash'][:12]}…, the table has {count}")
