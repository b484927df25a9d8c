"""A deployment's mistakes at start: a database URL that is malformed, names a driver not
installed, a server that is down, a role or database that does not exist. Every command that
opens the store (serve, worker, keys) exits 1 with one line naming the database (password
hidden), never a traceback; nor a Redis that cannot be reached."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from alerting import reachable

CLI = Path(sys.executable).with_name("facelens")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keys_list(tmp_path: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FACELENS_DATA_DIR": str(tmp_path),
           "FACELENS_DATABASE_URL": database_url}
    return subprocess.run([str(CLI), "keys", "list"], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("database_url", "said"), [
    ("postgresql+psycopg://facelens:s3cret@127.0.0.1:9/facelens",  # nothing listens there
     "cannot open the database postgresql+psycopg://facelens:***@127.0.0.1:9/facelens: "),
    ("not a url", "database_url: Could not parse"),
    ("mysql://facelens@127.0.0.1/facelens", "database_url: No module named"),
])
def test_an_unusable_database_url_is_one_line(tmp_path: Path, database_url: str,
                                              said: str) -> None:
    run = _keys_list(tmp_path, database_url)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    line = run.stderr.strip()
    assert line.startswith(f"error: {said}") and "\n" not in line and "s3cret" not in line


def test_a_role_postgresql_refuses_is_one_line(tmp_path: Path) -> None:
    if (reason := reachable(("127.0.0.1", 5432))) is not None:
        pytest.skip(f"PostgreSQL unreachable at 127.0.0.1:5432: {reason}")
    run = _keys_list(tmp_path, "postgresql+psycopg://no_such_role:pw@127.0.0.1:5432/test")
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert 'role "no_such_role" does not exist' in run.stderr
    assert "\n" not in run.stderr.strip() and ":pw@" not in run.stderr


def test_an_unreachable_redis_stops_serve_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "FACELENS_DATA_DIR": str(tmp_path),
           "FACELENS_REDIS_URL": "redis://facelens:s3cret@127.0.0.1:9/0"}  # nothing listens
    run = subprocess.run([str(CLI), "serve", "--port", str(free_port())], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    line = run.stderr.strip()
    assert line.startswith("error: Redis at 127.0.0.1:9 is unreachable: ") and "\n" not in line
    assert "s3cret" not in line
