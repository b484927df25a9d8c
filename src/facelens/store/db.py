"""Open the metadata store: SQLite by default (one file under the data directory), or any
SQLAlchemy URL (PostgreSQL works unchanged). Migrations run at open, with Alembic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.orm import Session, sessionmaker

from facelens.errors import FacelensError

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Deleted rows are overwritten with zeros, so shredded keys leave no bytes in free pages.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def database_url(data_dir: Path, url: str | None) -> str:
    if url:
        return url
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / 'facelens.db').resolve()}"


class DatabaseUnavailableError(FacelensError):
    """The database URL cannot be parsed, its driver is not installed, or the server refused
    (wrong credentials, no such database) or cannot be reached."""

    exit_code = 1


def open_engine(url: str) -> sa.Engine:
    """The migrated database; DatabaseUnavailableError (one line, password hidden) if it
    cannot be opened."""
    try:
        shown = sa.make_url(url).render_as_string(hide_password=True)
        # A server restarted (or a proxy's idle cut) leaves the pool's connections dead; each
        # is tested as it is checked out, else the next alert's commit failed on one.
        engine = sa.create_engine(url, future=True,
                                  pool_pre_ping=not url.startswith("sqlite"))
    except (sa.exc.ArgumentError, ImportError) as e:  # malformed, or a driver not installed
        raise DatabaseUnavailableError(f"database_url: {e}") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    try:
        connection = engine.connect()
    except sa.exc.DBAPIError as e:  # refused, unreachable, no such database
        engine.dispose()
        raise DatabaseUnavailableError(f"cannot open the database {shown}: "
                                       f"{' '.join(str(e.orig).split())}") from None
    with connection, connection.begin():
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return engine


def session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def checkpoint(engine: sa.Engine) -> None:
    """Fold the SQLite WAL into the main file and truncate it (after deletions)."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
