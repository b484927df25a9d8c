"""The audit log: every identify, verify, enrol, delete and key change, in a hash chain.

Each row's hash is sha256(previous hash ‖ canonical JSON of the row, its id included), so an
edited, deleted or re-ordered row breaks the chain at that row. Deleting the newest rows
leaves a valid but shorter chain; the head (count and last hash) is therefore also kept, in
the one-row table `audit_head`, changed in the same transaction as each row under that row's
lock: any number of processes (API replicas on one PostgreSQL, the CLI beside the service)
append to one chain, and `verify` compares chain and head. Both live with whoever holds the
database: the chain proves tampering to someone who kept a copy of a head elsewhere, it does
not stop someone who rewrites the chain and the head together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from facelens.store.database import Store
from facelens.store.tables import AuditEntry, AuditHead

GENESIS = "0" * 64
HEAD = AuditHead.__table__
_HEAD_ROW = HEAD.c.id == 1


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
    def __init__(self, sessions: sessionmaker[Session], legacy_head: Path | None = None) -> None:
        """`legacy_head`: the head file older versions kept beside the database; it seeds
        the head row once (store/migrations 0007) and is removed."""
        self.sessions = sessions
        self._seed(legacy_head)

    @classmethod
    def of(cls, store: Store) -> AuditLog:
        """The audit log of `store`, its rows and head in the database."""
        return cls(store.sessions, store.audit_head)

    def _seed(self, legacy_head: Path | None) -> None:
        """Make the head row if there is none: from the old head file, else from the chain's
        end (an empty chain: nothing yet). A file head behind an intact chain is what a crash
        between a row's commit and the file's write left: the head starts at the chain's end."""
        with self.sessions() as s:
            if s.execute(sa.select(HEAD.c.seq).where(_HEAD_ROW)).first():
                return
        kept = (json.loads(legacy_head.read_text() or "{}")
                if legacy_head is not None and legacy_head.exists() else None)
        try:
            with self.sessions.begin() as s:
                last = s.execute(sa.select(AuditEntry.id, AuditEntry.hash)
                                 .order_by(AuditEntry.id.desc()).limit(1)).first()
                seq, hash_ = (last.id, last.hash) if last else (0, GENESIS)
                if kept and s.scalar(sa.select(AuditEntry.hash).where(
                        AuditEntry.id == kept["entries"])) != kept["hash"]:
                    seq, hash_ = kept["entries"], kept["hash"]  # verify will say what differs
                s.execute(HEAD.insert(), {"id": 1, "seq": seq, "hash": hash_})
        except sa.exc.IntegrityError:
            return  # another process seeded it first
        if kept is not None and legacy_head is not None:
            legacy_head.unlink(missing_ok=True)

    def record(self, actor: str, action: str, outcome: str, *, gallery: str | None = None,
               subject: str | None = None, **detail: Any) -> None:
        with self.sessions.begin() as s:
            conn = s.connection()
            # Claim the next id and read the previous hash in one statement: it locks the
            # head row (PostgreSQL) or takes the write lock (SQLite) until the commit, so
            # appends from every process queue here and never fork the chain.
            head = conn.execute(sa.update(HEAD).where(_HEAD_ROW).values(seq=HEAD.c.seq + 1)
                                .returning(HEAD.c.seq, HEAD.c.hash)).first()
            if head is None:
                raise RuntimeError("the audit head row is missing: `facelens audit verify`")
            entry = AuditEntry(id=head.seq,
                               at=datetime.now(UTC).isoformat(timespec="microseconds"),
                               actor=actor, action=action, gallery=gallery, subject=subject,
                               outcome=outcome, prev_hash=head.hash,
                               detail=json.dumps(detail, sort_keys=True, default=str))
            entry.hash = _row_hash(entry.prev_hash, entry)
            # Core statements: the ORM's unit of work costs more CPU than the commit itself,
            # and this runs on every request.
            conn.execute(AuditEntry.__table__.insert(), {
                c.name: getattr(entry, c.name) for c in AuditEntry.__table__.columns})
            conn.execute(sa.update(HEAD).where(_HEAD_ROW).values(hash=entry.hash))

    def entries(self, limit: int = 100) -> list[AuditEntry]:
        with self.sessions() as s:
            return list(s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id.desc())
                                  .limit(limit)))

    def head(self) -> tuple[int, str] | None:
        """(rows in the chain, the newest row's hash) as the head row records them."""
        with self.sessions() as s:
            row = s.execute(sa.select(HEAD.c.seq, HEAD.c.hash).where(_HEAD_ROW)).first()
        return None if row is None else (row.seq, row.hash)

    def verify(self) -> ChainCheck:
        """Check the chain and compare it with the head row."""
        head = self.head()
        prev, count, last_id = GENESIS, 0, None
        with self.sessions() as s:
            for entry in s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)
                                   .execution_options(yield_per=1000)):
                if entry.prev_hash != prev:
                    return ChainCheck(False, count, entry.id,
                                      "a row before it was changed or removed")
                if _row_hash(prev, entry) != entry.hash:
                    return ChainCheck(False, count, entry.id, "the row was edited")
                prev, count, last_id = entry.hash, count + 1, entry.id
        if head is None:
            return ChainCheck(False, count, -1, "the audit head row is missing")
        seq, hash_ = head
        if seq == count and hash_ == prev:
            return ChainCheck(True, count, None, "intact")
        return ChainCheck(False, count, -1 if seq > count else last_id,
                          f"the head records {seq} entries ending in {hash_[:12]}…, "
                          f"the table has {count}")
