"""#27's failover acceptance, alert half: two `facelens worker`s on PostgreSQL, NATS and MQTT
run four file cameras of the Hamilton clip with its two people enrolled; one worker is killed
with SIGKILL mid-stream. The (camera, subject) alerts must equal a one-worker reference run
(none lost), with exactly one event row per cool-down window; the MQTT subscriber's distinct
event ids must equal the database rows, and JetStream must end with nothing pending."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alerting import (
    MQTT,
    NATS_URL,
    Heard,
    backlog,
    drop_nats_prefix,
    reachable,
    reap,
    wait_for,
)

from facelens.settings import Settings
from facelens.store.tables import AlertWindow, Camera, Event

CLI = Path(sys.executable).with_name("facelens")
PEOPLE = ("lin-manuel-miranda", "alex-lacamoire")
CAMERAS = ("gate", "hall", "lobby", "yard")

pytestmark = pytest.mark.slow


@pytest.fixture
def deployment(tmp_path: Path, shared_data: Path, postgres: Any) -> Iterator[Settings]:
    """One database with the two people enrolled and four cameras on the clip; NATS names, MQTT
    topics and the PostgreSQL schema of this test alone."""
    for server, port in (("NATS JetStream", 4222), ("MQTT broker", MQTT[1])):
        if (why := reachable(("127.0.0.1", port))) is not None:
            pytest.skip(f"{server} unreachable at 127.0.0.1:{port}: {why}")
    from facelens.gallery.service import ConsentRecord, Galleries

    run = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(data_dir=tmp_path / "data", media_dir=shared_data / "video",
                        database_url=postgres.url, nats_url=NATS_URL, nats_prefix=run,
                        mqtt_url=f"mqtt://{MQTT[0]}:{MQTT[1]}", mqtt_prefix=f"fl{run}")
    galleries = Galleries(settings)
    galleries.create_gallery("watch", "watchlist-stage")
    for name in PEOPLE:
        galleries.enroll("watch", name, [shared_data / "video" / f"{name}.png"],
                         consent=ConsentRecord("stage security", "legitimate-interest", "test"),
                         watch_reason="test", watch_expires=datetime.now(UTC) + timedelta(days=1))
    clip = str((shared_data / "video" / "short_hamilton_clip.mp4").resolve())
    with galleries.store.sessions.begin() as s:
        s.add_all(Camera(name=name, source=clip, galleries=["watch"], enabled=True, fps=5.0,
                         motion=False, cooldown_s=3600.0, far=1e-3) for name in CAMERAS)
    galleries.store.close()
    try:
        yield settings
    finally:
        drop_nats_prefix(run)


def _worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FACELENS_DATA_DIR": str(settings.data_dir),
           "FACELENS_DATABASE_URL": str(settings.database_url),
           "FACELENS_MEDIA_DIR": str(settings.media_dir), "FACELENS_NATS_URL": NATS_URL,
           "FACELENS_NATS_PREFIX": settings.nats_prefix,
           "FACELENS_MQTT_URL": str(settings.mqtt_url),
           "FACELENS_MQTT_PREFIX": settings.mqtt_prefix, "FACELENS_THREADS": "1"}
    return subprocess.Popen([str(CLI), "worker"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


class Run:
    """What one run left: events per (camera, subject), the MQTT ids heard, JetStream's state."""

    def __init__(self, settings: Settings, heard: Heard) -> None:
        from facelens.cluster.bus import Bus
        from facelens.cluster.leases import Leases

        self.settings, self.heard = settings, heard
        self.engine = sa.create_engine(str(settings.database_url))
        self.bus = Bus(NATS_URL)
        self.leases = Leases(self.bus, settings.nats_prefix, settings.lease_ttl_s)

    def statuses(self) -> dict[str, str]:
        """Each camera's state as the worker running it last said."""
        return {name: state["status"] for info in self.leases.live_workers().values()
                for name, state in info.get("cameras", {}).items()}

    def events(self) -> list[tuple[int, str, str]]:
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(sa.select(Event.id, Event.camera,
                                                          Event.subject_name))]

    def pending(self) -> int:
        return backlog(self.bus, f"{self.settings.nats_prefix}_events", "facelens-delivery")

    def settle(self) -> None:
        """Until every camera ended and every alert went out."""
        wait_for(lambda: sorted(self.statuses().items()) == [(c, "ended") for c in CAMERAS],
                  timeout=600)
        wait_for(lambda: {e[0] for e in self.events()} == set(self.heard.ids)
                  and self.pending() == 0, timeout=60)

    def reset(self) -> None:
        with self.engine.begin() as c:
            c.execute(sa.delete(Event))
            c.execute(sa.delete(AlertWindow))
        self.heard.ids.clear()

    def close(self) -> None:
        self.bus.close()
        self.engine.dispose()


def test_a_worker_killed_mid_stream_loses_no_alert_and_doubles_none(
        deployment: Settings) -> None:
    heard = Heard(deployment.mqtt_prefix)
    run = Run(deployment, heard)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        assert heard.ready.wait(10)
        started = time.monotonic()
        workers.append(_worker(deployment))  # the reference: one worker, every camera
        run.settle()
        reference = Counter((camera, name) for _, camera, name in run.events())
        reference_s = time.monotonic() - started
        assert {camera for camera, _ in reference} == set(CAMERAS)  # each camera alerted
        assert set(reference.values()) == {1}
        workers[0].send_signal(signal.SIGTERM)
        assert workers[0].wait(timeout=60) == 0
        run.reset()

        workers = [_worker(deployment), _worker(deployment)]
        wait_for(lambda: len(run.leases.holders()) == len(CAMERAS)
                  and len(set(run.leases.holders().values())) == 2, timeout=300)
        pids = {me: info["pid"] for me, info in run.leases.live_workers().items()}
        wait_for(lambda: bool(run.events()), timeout=300)  # mid-stream: alerts have begun
        victim_id = run.leases.holders()[next(camera for _, camera, _ in run.events())]
        victim = next(w for w in workers if w.pid == pids[victim_id])
        before = run.statuses()
        held = sorted(c for c, holder in run.leases.holders().items() if holder == victim_id)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at, at_kill = time.monotonic(), run.events()
        survivor_id = next(me for me in pids if me != victim_id)
        wait_for(lambda: set(run.leases.holders().values()) == {survivor_id}
                  and len(run.leases.holders()) == len(CAMERAS))
        takeover_s = time.monotonic() - killed_at
        assert any(before.get(c) != "ended" for c in held), before  # it died mid-stream
        run.settle()
        events = run.events()
        failover = Counter((camera, name) for _, camera, name in events)
        assert failover == reference  # none lost, one event per (camera, subject) window
        assert {e[0] for e in events} == set(heard.ids)  # MQTT distinct ids = the rows
        assert run.pending() == 0
        print(f"\nreference (1 worker): {sum(reference.values())} alerts on {len(CAMERAS)} "
              f"cameras in {reference_s:.0f} s; killed a worker holding {held} with "
              f"{len(at_kill)} alerts recorded, the other held its cameras after "
              f"{takeover_s:.1f} s; after failover {len(events)} event rows, "
              f"{len(heard.ids)} MQTT messages, {len(set(heard.ids))} distinct ids, "
              f"JetStream pending {run.pending()}")
    finally:
        reap(workers)
        run.close()
        heard.close()
