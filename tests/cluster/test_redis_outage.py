"""When Redis goes away under running replicas, requests are refused with a 503 and a
Retry-After (never a 500, never let through unlimited), and served again once it is back.
Redis is reached through a TCP relay of the test's own, cut and restored mid-run."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alerting import Relay
from fastapi.testclient import TestClient

from facelens.service.app import create_app
from facelens.service.state import ServiceState
from facelens.settings import Settings

REDIS = ("127.0.0.1", 6379)


@pytest.fixture
def relay() -> Iterator[Relay]:
    try:
        socket.create_connection(REDIS, timeout=2).close()
    except OSError as e:
        pytest.skip(f"Redis at {REDIS[0]}:{REDIS[1]} is unreachable ({e})")
    relay = Relay(REDIS)
    yield relay
    relay.cut()


def test_requests_are_refused_with_503_while_redis_is_away(relay: Relay,
                                                            tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url=f"redis://127.0.0.1:{relay.port}/0",
                        redis_prefix=f"facelens-outage-{uuid.uuid4().hex[:8]}")
    app = create_app(settings)
    # Starlette answers an exception handled as `Exception` and then raises it again, which
    # the test client would pass on: the answer is what is checked.
    with TestClient(app, raise_server_exceptions=False) as client:
        state: ServiceState = app.state.facelens
        auth = {"Authorization": f"Bearer {state.keys.create('k', ['admin'])[1]}"}
        assert client.get("/v1/me", headers=auth).status_code == 200
        relay.cut()
        away = client.get("/v1/me", headers=auth)
        assert away.status_code == 503, away.text
        assert away.json()["error"]["code"] == "shared_state_unavailable"
        assert away.headers["Retry-After"] == "5"
        relay.restore()
        assert client.get("/v1/me", headers=auth).status_code == 200
