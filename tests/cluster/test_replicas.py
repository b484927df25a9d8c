"""Two API replicas that agree: two real `facelens serve` processes on one PostgreSQL database,
one master key and NATS. An enrolment on one is found by the other at once, a deletion on one is
gone from the other's next search, and concurrent enrolments on both reach every index as
deltas (no full compare, no rebuild). The single-flight locks let one holder in at a time."""

from __future__ import annotations

import base64
import os
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alerting import NATS_URL, drop_nats_prefix, reachable

from facelens.cluster.single_flight import NatsLock, PostgresLock, SingleFlight
from facelens.store.tables import Gallery, Subject, Template
from served import Server, printed_key, start_server, stop

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
CONSENT = {"legal_basis": "consent", "consent_purpose": "door access",
           "recorded_by": "reception"}
PER_REPLICA = 50


@pytest.fixture(scope="module")
def nats_url() -> str:
    if (why := reachable(("127.0.0.1", 4222))) is not None:
        pytest.skip(f"NATS unreachable at {NATS_URL}: {why}")
    return NATS_URL


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with _fresh_database() as url:
        yield url


@contextmanager
def _fresh_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    try:
        admin = sa.create_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT",
                                 connect_args={"connect_timeout": 3})
        with admin.connect() as c:
            c.exec_driver_sql("SELECT 1")
    except (sa.exc.OperationalError, ImportError) as e:
        pytest.skip(f"PostgreSQL unreachable at 127.0.0.1:5432 (user postgres): {e}")
    name = f"facelens_replicas_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


@dataclass
class Replica:
    """One `facelens serve` of a pair, and the Authorization header of its admin key."""
    server: Server
    auth: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def metric(self, name: str, gallery: str | None = None) -> float:
        """A value of this replica's /metrics."""
        text = httpx.get(f"{self.url}/metrics", headers=self.auth, timeout=10).text
        labels = f'{{gallery="{gallery}"}}' if gallery else ""
        found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
        assert found, f"{name}{labels} not in /metrics"
        return float(found.group(1))


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, database_url: str, nats_url: str
             ) -> Iterator[tuple[Replica, Replica]]:
    with _pair(tmp_path_factory.mktemp("replicas"), database_url, nats_url) as pair:
        yield pair


@contextmanager
def _pair(root: Path, database_url: str, nats_url: str, **more: str
          ) -> Iterator[tuple[Replica, Replica]]:
    """A and B: own data directories, one database, one master key, one NATS prefix."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    env = dict(os.environ, FACELENS_DATABASE_URL=database_url, FACELENS_NATS_URL=nats_url,
               FACELENS_NATS_PREFIX=prefix,
               FACELENS_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
               FACELENS_QUEUE="200", FACELENS_RATE_BURST="10000",
               FACELENS_PROBE_REPEATS="1000", **more)
    a = start_server(root / "a", root, env, name="a")  # first: migrates, prints the admin key
    try:
        key = printed_key(a)
        assert key, "the first replica's start must print an admin key"
        auth = {"Authorization": f"Bearer {key}"}
        b = start_server(root / "b", root, env, name="b")
        try:
            yield Replica(a, auth), Replica(b, auth)
        finally:
            stop(b)
    finally:
        stop(a)
        drop_nats_prefix(prefix)


def _enrol(replica: Replica, gallery: str, name: str, image: Path) -> httpx.Response:
    return httpx.post(f"{replica.url}/v1/galleries/{gallery}/subjects", headers=replica.auth,
                      files=[("images", (image.name, image.read_bytes(), "image/jpeg"))],
                      data={"name": name, **CONSENT}, timeout=120)


def _found(replica: Replica, gallery: str, image: Path) -> list[str]:
    """The subject ids identify names, best candidate of each face."""
    r = httpx.post(f"{replica.url}/v1/galleries/{gallery}/identify", headers=replica.auth,
                   files={"image": (image.name, image.read_bytes(), "image/jpeg")}, timeout=60)
    assert r.status_code == 200, r.text
    return [f["candidates"][0]["subject_id"] for f in r.json()["faces"] if f["candidates"]]


def _new_gallery(replica: Replica) -> str:
    name = f"g{uuid.uuid4().hex[:8]}"
    r = httpx.post(f"{replica.url}/v1/galleries", headers=replica.auth,
                   json={"name": name, "purpose": "staff-door"}, timeout=30)
    assert r.status_code == 201, r.text
    return name


@pytest.mark.slow
def test_enrolment_on_one_is_found_on_the_other_and_deletion_is_gone_at_once(
        replicas: tuple[Replica, Replica], fixtures_dir: Path) -> None:
    _found_then_gone(*replicas, fixtures_dir)


def _found_then_gone(a: Replica, b: Replica, fixtures_dir: Path) -> None:
    gallery = _new_gallery(a)
    assert _enrol(a, gallery, "biden", fixtures_dir / "biden.jpg").status_code == 201
    assert _found(b, gallery, fixtures_dir / "obama2.jpg") == []  # B holds the gallery now
    builds_b = b.metric("facelens_index_builds_total")

    obama = _enrol(a, gallery, "obama", fixtures_dir / "obama.jpg").json()["subject_id"]
    assert _found(b, gallery, fixtures_dir / "obama2.jpg") == [obama]
    assert b.metric("facelens_index_builds_total") == builds_b  # a delta, not a rebuild

    assert _found(a, gallery, fixtures_dir / "obama2.jpg") == [obama]
    deleted = httpx.delete(f"{b.url}/v1/subjects/{obama}", headers=b.auth, timeout=30)
    assert deleted.status_code == 204
    start = time.perf_counter()
    assert _found(a, gallery, fixtures_dir / "obama2.jpg") == []  # A's very next search
    print(f"\nA's first search after B's delete: {1e3 * (time.perf_counter() - start):.0f} ms "
          f"(request included), without the person", file=sys.stderr)
    assert a.metric("facelens_index_faces", gallery) == 1


def _lfw_faces(root: Path, count: int) -> list[Path]:
    """The first image of `count` people, in name order."""
    people = sorted(p for p in (root / "lfw-dev" / "images").iterdir() if p.is_dir())
    return [sorted(p.glob("*.jpg"))[0] for p in people[:count]]


def _subjects_in_database(database_url: str, gallery: str) -> int:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as c:
            return int(c.scalar(sa.select(sa.func.count(sa.distinct(Template.subject_id)))
                                .join(Subject).join(Gallery).where(Gallery.name == gallery))
                       or 0)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_concurrent_enrolments_on_both_reach_both_indexes_as_deltas(
        replicas: tuple[Replica, Replica], shared_data: Path, database_url: str,
        fixtures_dir: Path) -> None:
    _burst(*replicas, shared_data, database_url, fixtures_dir)


@pytest.mark.slow
def test_replicas_on_one_milvus_agree(tmp_path_factory: pytest.TempPathFactory, nats_url: str,
                                      milvus_uri: str, shared_data: Path,
                                      fixtures_dir: Path) -> None:
    """The same on one shared Milvus collection: each writer writes it, the others only
    follow the version; its count per gallery equals the database's."""
    with _fresh_database() as url, _pair(tmp_path_factory.mktemp("milvus-replicas"), url,
                                         nats_url, FACELENS_MILVUS_URI=milvus_uri) as (a, b):
        _found_then_gone(a, b, fixtures_dir)
        _burst(a, b, shared_data, url, fixtures_dir)


def _burst(a: Replica, b: Replica, shared_data: Path, database_url: str, fixtures_dir: Path
           ) -> None:
    gallery = _new_gallery(a)
    for replica in (a, b):  # each holds the gallery before the burst
        assert _found(replica, gallery, fixtures_dir / "obama.jpg") == []
    before = {r.url: _costly(r) for r in (a, b)}

    faces = _lfw_faces(shared_data, 2 * PER_REPLICA)
    jobs = [(a if i % 2 == 0 else b, f"p{i}", image) for i, image in enumerate(faces)]
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda job: _enrol(job[0], gallery, job[1], job[2]), jobs))
    assert all(r.status_code in (201, 422) for r in statuses), \
        [r.text for r in statuses if r.status_code not in (201, 422)]
    enrolled = sum(r.status_code == 201 for r in statuses)
    assert enrolled >= 0.8 * len(jobs)  # some LFW photos show no usable face (88 of these 100)

    assert _subjects_in_database(database_url, gallery) == enrolled
    for replica in (a, b):
        _found(replica, gallery, fixtures_dir / "obama.jpg")  # brings the index current
        counts = {what: replica.metric(f"facelens_index_{what}_total")
                  for what in ("deltas", "announced", "gaps", "full_checks", "repairs")}
        assert replica.metric("facelens_index_faces", gallery) == enrolled, counts
        assert _costly(replica) == before[replica.url]
        print(f"\n{replica.url}: " + ", ".join(
            f"{what} {replica.metric(f'facelens_index_{what}_total'):.0f}"
            for what in ("deltas", "announced", "gaps")), file=sys.stderr)


def _costly(replica: Replica) -> tuple[float, ...]:
    """Builds, full id compares and repairs so far."""
    return tuple(replica.metric(f"facelens_index_{what}_total")
                 for what in ("builds", "full_checks", "repairs"))


# --------------------------------------------------------------------------- single flight
def _one_at_a_time(first: SingleFlight, second: SingleFlight) -> list[str]:
    """`second` asks while `first` holds the lock: it must wait, then get in."""
    order: list[str] = []

    def later() -> None:
        with second.hold(7):
            order.append("second in")

    with first.hold(7):
        order.append("first in")
        waiter = threading.Thread(target=later)
        waiter.start()
        while second.waits == 0:  # until the second found the lock taken
            time.sleep(0.01)
        order.append("first out")
    waiter.join(30)
    return order


def test_postgres_lock_lets_one_replica_rebuild_at_a_time(database_url: str) -> None:
    engines = [sa.create_engine(database_url) for _ in range(2)]  # two replicas' pools
    try:
        order = _one_at_a_time(PostgresLock(engines[0]), PostgresLock(engines[1]))
    finally:
        for engine in engines:
            engine.dispose()
    assert order == ["first in", "first out", "second in"]


def test_nats_lock_lets_one_replica_rebuild_at_a_time(nats_url: str) -> None:
    from facelens.cluster.bus import Bus

    buses = [Bus(nats_url, name=f"lock-{i}") for i in range(2)]
    bucket = f"t{uuid.uuid4().hex[:12]}_index_locks"
    try:
        order = _one_at_a_time(NatsLock(buses[0], bucket), NatsLock(buses[1], bucket))
        assert order == ["first in", "first out", "second in"]
    finally:
        buses[0].call(buses[0].js.delete_key_value(bucket))
        for bus in buses:
            bus.close()


def test_a_nats_lock_held_past_its_ttl_is_not_released_from_its_next_holder(
        nats_url: str) -> None:
    """A rebuild outlasting the TTL lost the key to a second replica; its release then
    deleted the second's key, and a third replica could rebuild beside the second."""
    from facelens.cluster.bus import Bus

    bus = Bus(nats_url, name="lock")
    bucket = f"t{uuid.uuid4().hex[:12]}_index_locks"
    slow, second = NatsLock(bus, bucket, ttl_s=1.0), NatsLock(bus, bucket, ttl_s=1.0)
    second_in, second_may_leave = threading.Event(), threading.Event()

    def second_replica() -> None:
        with second.hold(7):
            second_in.set()
            second_may_leave.wait(30)

    taking_over = threading.Thread(target=second_replica)
    try:
        with slow.hold(7):
            taking_over.start()
            assert second_in.wait(30)  # the slow holder's key expired: the second took it
        assert bus.call(second.kv.get("index.7")).value == b"1"  # still the second's
    finally:
        second_may_leave.set()
        taking_over.join(30)
        bus.call(bus.js.delete_key_value(bucket))
        bus.close()


# --------------------------------------------------------------------------- gaps
def test_a_change_nobody_announced_is_found_after_the_grace_by_a_rebuild(
        tmp_path: Path, postgres: Any, nats_url: str, fixtures_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer without NATS (e.g. the CLI) announces nothing: the version shows the gap, and
    the replica rebuilds after waiting ANNOUNCE_GRACE_S for announcements in flight."""
    from facelens.gallery.service import ConsentRecord, Galleries
    from facelens.settings import Settings

    monkeypatch.setenv("FACELENS_MASTER_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    common = {"database_url": postgres.url, "embedder": "sface-flip"}  # a schema of its own
    silent = Galleries(Settings(data_dir=tmp_path / "cli", **common))
    replica = Galleries(Settings(data_dir=tmp_path / "replica", nats_url=nats_url,
                                 nats_prefix=f"t{uuid.uuid4().hex[:12]}", **common))
    try:
        gallery = f"g{uuid.uuid4().hex[:8]}"
        silent.create_gallery(gallery, "staff-door")
        probe = fixtures_dir / "obama2.jpg"
        assert replica.identify(gallery, probe)[0].unknown
        builds = replica.cache.stats.builds
        consent = ConsentRecord("door access", "consent", "reception")
        obama = silent.enroll(gallery, "obama", [fixtures_dir / "obama.jpg"],
                              consent=consent).subject_id
        found = replica.identify(gallery, probe)
        assert [c.subject_id for c in found[0].candidates] == [obama]
        assert (replica.cache.stats.gaps, replica.cache.stats.builds) == (1, builds + 1)
    finally:
        replica.close()
        silent.close()
        for galleries in (replica, silent):
            galleries.store.close()
