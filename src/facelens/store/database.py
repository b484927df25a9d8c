"""One `Store` per data directory: the database (migrated at open) and the master key that
wraps every subject's data key. Galleries, events, API keys, the audit log and cameras all
run on the sessions of the one Store the service (or the CLI) opens."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from facelens.settings import Settings
from facelens.store.crypto import (
    ENV_KEY,
    MasterKey,
    MasterKeyError,
    load_master_key,
    new_data_key,
    read_key_file,
    write_key_file,
)
from facelens.store.db import checkpoint, database_url, open_engine, session_factory
from facelens.store.tables import SCENE_ENTRIES, Subject, entry_owner

DATABASE_FILES = ("facelens.db", "facelens.db-wal", "facelens.db-shm")


def private_files(data_dir: Path) -> None:
    """Only the owner reads the data: a new data directory is 0700, the SQLite files 0600
    (created empty before SQLite opens them, which gives its WAL and shared-memory files the
    database's mode) like master.key; files an older version left 0644 are narrowed."""
    if not data_dir.exists():
        data_dir.mkdir(parents=True, mode=0o700)
    database = data_dir / DATABASE_FILES[0]
    if not database.exists():
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for name in DATABASE_FILES:
        path = data_dir / name
        if path.exists() and path.stat().st_mode & 0o077:
            path.chmod(0o600)


class Store:
    """The database and master key of one facelens data directory (or database URL).

    Opening refuses (MasterKeyError) a master key other than the one the stored subjects,
    plate hotlist entries and rules are wrapped with, and finishes a key rotation a crash
    interrupted."""

    def __init__(self, settings: Settings) -> None:
        data_dir = settings.data_dir
        if not settings.database_url:
            private_files(data_dir)
        self.database = open_engine(database_url(data_dir, settings.database_url))
        self.sessions = session_factory(self.database)
        self.key_file = data_dir / "master.key"
        self.audit_head = data_dir / "audit.head"
        """Where older versions kept the audit chain's head: it seeds the database's head
        row once (store/audit.py)."""
        with self.sessions() as s:
            wrapped = _wraps(s, None)
        # A new key only for an empty store: a lost key file must not silently fork the data.
        try:
            self.master: MasterKey = load_master_key(self.key_file, create=not wrapped)
            self._finish_rotation()
            with self.sessions() as s:
                if wrapped and not _wraps(s, self.master):
                    raise MasterKeyError(f"wrong master key: the key from {self.master.source} "
                                         "does not match the one the data keys were wrapped with")
        except MasterKeyError:
            self.database.dispose()
            raise

    @property
    def _pending_key_file(self) -> Path:
        """Where a rotation writes the new key before the database is re-wrapped."""
        return self.key_file.with_name(self.key_file.name + ".next")

    def rotate_master_key(self) -> MasterKey:
        """Re-wrap every subject's (and hotlist entry's and rule's) data key under a new master
        key; returns the new key.

        Crash-safe: the new key is written beside the old one first, the database is re-wrapped
        in one transaction, then the new key file replaces the old (see _finish_rotation)."""
        if self.master.source == ENV_KEY:
            raise MasterKeyError(f"the master key comes from {ENV_KEY}: rotate by setting a new "
                                 "key file instead (unset the variable), or re-wrap offline")
        new = MasterKey(new_data_key(), str(self.key_file))
        pending = self._pending_key_file
        write_key_file(pending, new.key)
        with self.sessions.begin() as s:
            for subject in s.scalars(sa.select(Subject)):
                data_key = self.master.unwrap(subject.wrapped_key, subject.id)
                subject.wrapped_key = new.wrap(data_key, subject.id)
                subject.key_id = new.id
            # Plate hotlist entries and rules hold their alerts' crop keys the same way.
            for kind, table in SCENE_ENTRIES.items():
                for entry in s.scalars(sa.select(table)):
                    owner = entry_owner(kind, entry.id)
                    entry.wrapped_key = new.wrap(self.master.unwrap(entry.wrapped_key, owner),
                                                 owner)
        os.replace(pending, self.key_file)
        self.master = new
        self.checkpoint()
        return new

    def _finish_rotation(self) -> None:
        """After a crash mid-rotation: keep whichever key the database is wrapped with."""
        pending = self._pending_key_file
        if not pending.exists() or self.master.source == ENV_KEY:
            return
        candidate = MasterKey(read_key_file(pending), str(self.key_file))
        with self.sessions() as s:
            rewrapped = _wraps(s, None) and _wraps(s, candidate)
        if rewrapped:
            os.replace(pending, self.key_file)
            self.master = candidate
        else:
            pending.unlink()

    def checkpoint(self) -> None:
        """Fold SQLite's write-ahead log into the database file (after deletions)."""
        checkpoint(self.database)

    def close(self) -> None:
        self.database.dispose()


def _wraps(s: Session, key: MasterKey | None) -> bool:
    """Whether the stored data keys are wrapped with `key` (None: whether any is stored).

    Subjects name their key's id; plate hotlist entries and rules do not, so the first of
    each is unwrapped on trial (a store may hold only those: a lost or wrong key file must
    be refused for them too)."""
    ids = set(s.scalars(sa.select(Subject.key_id).distinct()))
    entries = [(kind, entry) for kind, table in SCENE_ENTRIES.items()
               if (entry := s.scalar(sa.select(table).limit(1))) is not None]
    if key is None:
        return bool(ids or entries)
    if ids and ids != {key.id}:
        return False
    try:
        for kind, entry in entries:
            key.unwrap(entry.wrapped_key, entry_owner(kind, entry.id))
    except MasterKeyError:
        return False
    return True
