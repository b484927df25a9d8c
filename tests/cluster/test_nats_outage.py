"""NATS going away under a running process and coming back: the log says so once each way
(nats-py's own logging wrote a traceback for every reconnect attempt, every 2 s, for as long
as the outage lasted), the connection works again, and no message or log names the password
the URL carries; the cameras API answers meanwhile. NATS is reached through a TCP relay of
the test's own, cut and restored."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alerting import Relay, drop_nats_prefix, reachable, wait_for

from facelens.cluster.bus import Bus, BusError
from facelens.settings import Settings

NATS = ("127.0.0.1", 4222)


@pytest.fixture
def relay() -> Iterator[Relay]:
    if (why := reachable(NATS)) is not None:
        pytest.skip(f"NATS unreachable at {NATS[0]}:{NATS[1]}: {why}")
    relay = Relay(NATS)
    yield relay
    relay.cut()


def test_a_lost_connection_is_one_line_each_way(relay: Relay,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # nats-server without authorisation ignores the credentials; they must never be shown
    bus = Bus(f"nats://facelens:s3cret@127.0.0.1:{relay.port}", timeout_s=2.0)
    try:
        relay.cut()
        attempts = lambda: [r for r in caplog.records  # noqa: E731
                            if r.name == "facelens.bus" and r.levelno == logging.DEBUG]
        wait_for(lambda: len(attempts()) >= 2)  # two reconnect attempts refused
        relay.restore()
        wait_for(lambda: bus.nc.is_connected)
        bus.call(bus.nc.flush())
    finally:
        bus.close()
    logged = [r for r in caplog.records if r.name.startswith(("nats", "facelens.bus"))]
    shown = f"nats://127.0.0.1:{relay.port}"
    assert [r.getMessage() for r in logged if r.levelno >= logging.WARNING] == [
        f"NATS at {shown}: connection lost, reconnecting", f"NATS at {shown}: reconnected"]
    assert not [r for r in logged if r.exc_info]
    assert not [r for r in logged if "s3cret" in r.getMessage()]


def test_an_unreachable_url_is_refused_without_its_password() -> None:
    with pytest.raises(BusError) as refused:
        Bus("nats://facelens:s3cret@127.0.0.1:9", timeout_s=1.0)  # nothing listens there
    assert str(refused.value).startswith("NATS at nats://127.0.0.1:9 is unreachable")
    assert "s3cret" not in str(refused.value)


def test_a_nats_without_jetstream_is_refused_at_connect() -> None:
    """nats-server started without -js: every process failed later, each with a traceback
    ending in "ServiceUnavailableError: code=None err_code=None description='None'"."""
    if shutil.which("nats-server") is None:
        pytest.skip("nats-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: reachable(("127.0.0.1", port)) is None)
        with pytest.raises(BusError, match=f"NATS at nats://127.0.0.1:{port} has no "
                                           "JetStream: start nats-server with -js"):
            Bus(f"nats://127.0.0.1:{port}", timeout_s=2.0)
    finally:
        server.terminate()
        server.wait()


def test_cameras_answer_while_nats_is_away(relay: Relay, tmp_path: Path,
                                           shared_data: Path) -> None:
    """GET /v1/cameras answered 500 after 5 s, and POST /v1/cameras 500 though the camera was
    stored (a retry then met 409): the workers' leases, unreadable, are only a part of it."""
    from fastapi.testclient import TestClient

    from facelens.service.app import create_app

    prefix = f"t{uuid.uuid4().hex[:12]}"
    settings = Settings(data_dir=tmp_path, media_dir=shared_data / "video",
                        nats_url=f"nats://127.0.0.1:{relay.port}", nats_prefix=prefix)
    app = create_app(settings)
    try:
        with TestClient(app) as c:
            auth = {"Authorization":
                    f"Bearer {app.state.facelens.keys.create('ops', ['admin'])[1]}"}
            camera = {"source": "short_hamilton_clip.mp4", "fps": 1}
            assert c.post("/v1/cameras", headers=auth,
                          json={"name": "gate", **camera}).status_code == 201
            relay.cut()
            listed = c.get("/v1/cameras", headers=auth)
            assert listed.status_code == 200, listed.text
            assert [(x["name"], x["status"], x["worker"]) for x in listed.json()] == [
                ("gate", "unknown", None)]
            made = c.post("/v1/cameras", headers=auth, json={"name": "hall", **camera})
            assert made.status_code == 201, made.text
            assert made.json()["status"] == "unknown"
            relay.restore()
            wait_for(lambda: app.state.facelens.bus.nc.is_connected)
            assert [x["status"] for x in c.get("/v1/cameras", headers=auth).json()] == [
                "unassigned", "unassigned"]  # no worker runs: told again once NATS is back
    finally:
        drop_nats_prefix(prefix)
