"""PostgreSQL restarted under a running worker: every connection its pool held is gone. The
next alert must still be stored (its camera thread died on the dead connection, the alert
lost). The restart is its effect on this store's connections: the server ends each of them
(pg_terminate_backend), as a restart does, without touching anyone else's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alerting import person

from facelens.events.store import EventStore
from facelens.settings import Settings
from facelens.store.database import Store
from facelens.store.tables import Event


def _backend_pids(store: Store, connections: int) -> set[int]:
    """Check out `connections` pooled connections at once; their server process ids."""
    held = [store.database.connect() for _ in range(connections)]
    try:
        return {int(c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()) for c in held}
    finally:
        for c in held:
            c.close()


def test_an_alert_after_postgresql_dropped_every_connection_is_stored(
        tmp_path: Path, postgres: Any) -> None:
    store = Store(Settings(data_dir=tmp_path, database_url=postgres.url))
    try:
        events = EventStore(store)
        ada = person(store)
        assert events.record_alert("gate", ada, "high", cooldown_s=60.0) is not None
        pids = _backend_pids(store, 3)
        with postgres.admin.connect() as c:
            for pid in pids:
                c.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert events.record_alert("hall", ada, "high", cooldown_s=60.0) is not None
        with store.sessions() as s:
            assert sorted(s.scalars(sa.select(Event.camera))) == ["gate", "hall"]
    finally:
        store.close()
