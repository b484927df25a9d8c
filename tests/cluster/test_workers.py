"""Camera workers on NATS JetStream: leases are claimed, renewed by compare-and-set and lost
when not renewed; two real `facelens worker` processes share four file cameras added over
the API (the change reaches them as a message), and when one is killed with SIGKILL the other
takes all four; a removed or disabled camera is given up, and a clean stop releases at once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alerting import drop_nats_prefix

from facelens.cluster.bus import Bus, BusError
from facelens.cluster.leases import Leases, fair_share
from facelens.settings import Settings

NATS_URL = "nats://127.0.0.1:4222"
CLI = Path(sys.executable).with_name("facelens")
CAMERAS = ("gate", "hall", "lobby", "yard.east")  # a dot: lease keys must escape it


@pytest.fixture
def nats_prefix() -> Iterator[str]:
    """A NATS name prefix of this test alone; its KV buckets and alert stream are deleted
    afterwards."""
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=2).close()
    except OSError as e:
        pytest.skip(f"NATS JetStream unreachable at 127.0.0.1:4222: {e}")
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield prefix
    drop_nats_prefix(prefix)


def _wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # evaluated once per round: a condition may act (claim)
        assert time.monotonic() < deadline, f"not so within {timeout} s"
        time.sleep(0.05)


def test_leases_are_claimed_renewed_and_lost_when_not_renewed(nats_prefix: str) -> None:
    bus = Bus(NATS_URL)
    try:
        # TTL 3 s, renewed every second: a loaded machine's late wake-up stays inside it
        a, b = (Leases(bus, nats_prefix, 3.0, me) for me in ("worker-a", "worker-b"))
        assert a.holders() == {} and a.live_workers() == {}
        assert a.claim("yard.east") and not b.claim("yard.east")
        assert b.holders() == {"yard.east": "worker-a"}
        for _ in range(5):  # renewed for longer than the TTL: still a's
            time.sleep(1.0)
            assert a.renew("yard.east")
        assert not b.claim("yard.east") and b.held == {}
        _wait_for(lambda: b.claim("yard.east"), timeout=10)  # a stopped renewing: it expires
        assert a.holders() == {"yard.east": "worker-b"}
        stale = dict(a.held)
        assert not a.renew("yard.east") and a.held == {}  # compare-and-set: a's revision is old
        a.held = stale
        a.release("yard.east")  # an old revision gives nothing up
        assert b.holders() == {"yard.east": "worker-b"}
        b.release("yard.east")
        assert a.holders() == {} and a.claim("yard.east")
        a.beat({"cameras": {"yard.east": {"status": "running"}}})
        b.beat({"cameras": {}})
        assert b.live_workers() == {"worker-a": {"cameras": {"yard.east": {"status": "running"}}},
                                    "worker-b": {"cameras": {}}}
        a.leave()  # a clean stop: leases and heartbeat go at once, not after the TTL
        assert b.holders() == {} and set(b.live_workers()) == {"worker-b"}
        with pytest.raises(BusError, match="one lease_ttl_s"):  # a process set up otherwise
            Leases(bus, nats_prefix, 1.5, "worker-c")
    finally:
        bus.close()
    assert (fair_share(4, 2), fair_share(5, 2), fair_share(4, 3), fair_share(3, 0)) == (
        2, 3, 2, 3)


def test_leases_come_back_after_nats_lost_its_buckets(nats_prefix: str) -> None:
    """NATS restarted without its JetStream store (a container recreated, /tmp wiped) has no
    lease buckets: workers kept failing every call on them, and every camera stayed down."""
    bus = Bus(NATS_URL)
    try:
        worker, api = Leases(bus, nats_prefix, 3.0, "worker-a"), Leases(bus, nats_prefix, 3.0)
        assert worker.claim("gate")
        drop_nats_prefix(nats_prefix)  # what such a restart leaves: no buckets at all
        with pytest.raises(BusError):  # the call that finds them gone fails...
            worker.renew("gate")
        assert worker.renew("gate")  # ...and the next one runs on buckets made again
        worker.beat({"cameras": {"gate": {"status": "running"}}})
        assert api.holders() == {"gate": "worker-a"} and set(api.live_workers()) == {"worker-a"}
    finally:
        bus.close()


def test_a_camera_that_failed_is_started_again(nats_prefix: str, tmp_path: Path,
                                               shared_data: Path) -> None:
    """A camera whose thread died (the database away as it alerted, a gallery named before it
    was made) stayed dead under its worker, lease held, until the worker was restarted."""
    import threading

    from facelens.events.store import EventStore
    from facelens.gallery.service import Galleries
    from facelens.store.tables import Camera
    from facelens.video.worker import CameraWorker

    settings = Settings(data_dir=tmp_path, media_dir=shared_data / "video", nats_url=NATS_URL,
                        nats_prefix=nats_prefix, camera_rescan_s=0.5)
    galleries = Galleries(settings)
    clip = str(shared_data / "video" / "short_hamilton_clip.mp4")
    with galleries.store.sessions.begin() as s:
        s.add(Camera(name="gate", source=clip, galleries=["door"], fps=1.0))
    bus = Bus(NATS_URL)
    worker = CameraWorker(settings, bus, galleries, EventStore(galleries.store), None)
    stop = threading.Event()
    running = threading.Thread(target=worker.run, args=(stop,))
    running.start()
    try:
        def status() -> str:
            runner = worker.runners.get("gate")
            return runner.status if runner else ""

        _wait_for(lambda: status() == "error: no gallery named 'door'", timeout=60)
        galleries.create_gallery("door", "watchlist-stage")
        _wait_for(lambda: status() in ("running", "ended"), timeout=60)
        assert worker.leases.holders() == {"gate": worker.me}
    finally:
        stop.set()
        running.join(30)
        bus.close()
        galleries.store.close()


def test_a_worker_without_nats_says_so(tmp_path: Path) -> None:
    run = subprocess.run([str(CLI), "worker"], env={**os.environ,
                         "FACELENS_DATA_DIR": str(tmp_path)}, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2
    assert "needs nats_url" in run.stderr and "Traceback" not in run.stderr


def test_a_worker_with_another_lease_ttl_says_so(nats_prefix: str, tmp_path: Path) -> None:
    bus = Bus(NATS_URL)
    try:
        Leases(bus, nats_prefix, 3.0)  # the buckets as the API made them
    finally:
        bus.close()
    run = subprocess.run([str(CLI), "worker"], env={
        **os.environ, "FACELENS_DATA_DIR": str(tmp_path), "FACELENS_NATS_URL": NATS_URL,
        "FACELENS_NATS_PREFIX": nats_prefix, "FACELENS_LEASE_TTL_S": "1.5"},
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(
        f"error: KV bucket {nats_prefix}_cameras keeps entries 3.0 s, not lease_ttl_s = 1.5 s")


def test_key_commands_need_no_nats(tmp_path: Path) -> None:
    """An operator locked out by a broker outage could not even list keys."""
    env = {**os.environ, "FACELENS_DATA_DIR": str(tmp_path),
           "FACELENS_NATS_URL": "nats://127.0.0.1:9"}  # nothing listens on the discard port
    run = subprocess.run([str(CLI), "keys", "list", "--json"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and json.loads(run.stdout) == [], run.stderr


def _running(leases: Leases, worker: str) -> set[str]:
    """The cameras `worker`'s latest heartbeat says it runs."""
    return set(leases.live_workers().get(worker, {}).get("cameras", {}))


@dataclass
class Cluster:
    settings: Settings
    """One deployment: SQLite in tmp, this test's NATS prefix."""
    workers: list[subprocess.Popen[bytes]]

    def start_worker(self) -> subprocess.Popen[bytes]:
        s = self.settings
        env = {**os.environ, "FACELENS_DATA_DIR": str(s.data_dir),
               "FACELENS_MEDIA_DIR": str(s.media_dir), "FACELENS_NATS_URL": NATS_URL,
               "FACELENS_NATS_PREFIX": s.nats_prefix,
               "FACELENS_CAMERA_RESCAN_S": str(s.camera_rescan_s), "FACELENS_THREADS": "1"}
        log = s.data_dir.parent / f"worker-{len(self.workers)}.log"
        worker = subprocess.Popen([str(CLI), "worker"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=log.open("wb"))
        self.workers.append(worker)
        return worker


@pytest.fixture
def cluster(nats_prefix: str, tmp_path: Path, shared_data: Path) -> Iterator[Cluster]:
    """A deployment with two `facelens worker` processes, started at once (they take seconds
    to load); every worker is killed afterwards and its log printed."""
    from facelens.store.database import Store

    # No rescan within the test: cameras can only reach the workers as messages.
    settings = Settings(data_dir=tmp_path / "data", media_dir=shared_data / "video",
                        nats_url=NATS_URL, nats_prefix=nats_prefix, camera_rescan_s=600)
    Store(settings).close()  # the database and master key, made before the workers open them
    made = Cluster(settings, [])
    for _ in range(2):
        made.start_worker()
    try:
        yield made
    finally:
        for worker in made.workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        for log in sorted(tmp_path.glob("worker-*.log")):
            print(f"--- {log.name}\n{log.read_text()}")


def test_workers_share_cameras_and_take_over_a_killed_ones(cluster: Cluster) -> None:
    from fastapi.testclient import TestClient

    from facelens.service.app import create_app

    settings = cluster.settings
    app = create_app(settings)
    with TestClient(app) as c:
        auth = {"Authorization": f"Bearer {app.state.facelens.keys.create('ops', ['admin'])[1]}"}
        leases = app.state.facelens.cameras.leases
        _wait_for(lambda: len(leases.live_workers()) == 2, timeout=120)
        pids = {info["pid"]: me for me, info in leases.live_workers().items()}
        for name in CAMERAS:
            made = c.post("/v1/cameras", headers=auth, json={
                "name": name, "source": "short_hamilton_clip.mp4", "fps": 1})
            assert made.status_code == 201, made.text
            assert made.json()["worker"] in (None, *pids.values())
        _wait_for(lambda: len(leases.holders()) == len(CAMERAS))
        # Balanced: ceil(4 cameras / 2 workers) each, both running their own.
        assert sorted(Counter(leases.holders().values()).values()) == [2, 2]
        listed = c.get("/v1/cameras", headers=auth).json()
        assert {x["name"]: x["worker"] for x in listed} == leases.holders()
        # A change reaches the camera's worker, which restarts it with the new settings.
        assert c.patch("/v1/cameras/lobby", headers=auth, json={"fps": 2}).status_code == 200
        _wait_for(lambda: {x["name"]: (x["fps"], x["applied"]) for x in c.get(
            "/v1/cameras", headers=auth).json()}["lobby"] == (2, True))
        _wait_for(lambda: all(x["status"] in ("running", "ended") and x["applied"] for x in
                              c.get("/v1/cameras", headers=auth).json()), timeout=60)
        # Previews come from the worker running the camera (NATS request/reply).
        _wait_for(lambda: c.get("/v1/cameras/yard.east/preview.jpg", headers=auth
                                ).status_code == 200, timeout=60)
        preview = c.get("/v1/cameras/yard.east/preview.jpg", headers=auth)
        assert preview.content[:3] == b"\xff\xd8\xff"
        assert c.get("/v1/cameras/nope/preview.jpg", headers=auth).status_code == 404

        killed, survivor = cluster.workers
        killed.send_signal(signal.SIGKILL)  # no goodbye: its leases must run out
        killed_at = time.monotonic()
        killed.wait()
        alive = pids[survivor.pid]
        _wait_for(lambda: set(leases.holders().values()) == {alive}
                  and len(leases.holders()) == len(CAMERAS))
        print(f"\ntakeover after SIGKILL: {time.monotonic() - killed_at:.2f} s "
              f"(lease TTL {settings.lease_ttl_s} s)")
        assert set(leases.live_workers()) == {alive}
        _wait_for(lambda: _running(leases, alive) == set(CAMERAS))

        joined = cluster.start_worker()  # the survivor hands half its cameras on
        _wait_for(lambda: len(leases.live_workers()) == 2, timeout=120)
        _wait_for(lambda: sorted(Counter(leases.holders().values()).values()) == [2, 2])
        assert c.delete("/v1/cameras/gate", headers=auth).status_code == 204
        assert c.patch("/v1/cameras/hall", headers=auth,
                       json={"enabled": False}).status_code == 200
        # Two cameras left, one each, whoever held the removed ones.
        _wait_for(lambda: set(leases.holders()) == {"lobby", "yard.east"}
                  and len(set(leases.holders().values())) == 2)
        _wait_for(lambda: {n for w in leases.live_workers() for n in _running(leases, w)}
                  == {"lobby", "yard.east"})
        listed = c.get("/v1/cameras", headers=auth).json()
        assert [(x["name"], x["status"], x["worker"]) for x in listed[:1]] == [
            ("hall", "disabled", None)]

        for worker in (survivor, joined):
            worker.send_signal(signal.SIGTERM)
        assert [worker.wait(timeout=30) for worker in (survivor, joined)] == [0, 0]
        assert leases.holders() == {} and leases.live_workers() == {}  # released, not expired
