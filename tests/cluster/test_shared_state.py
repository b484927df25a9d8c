"""State API replicas share: rate limits, lockouts, probe limits and liveness sessions in
Redis (127.0.0.1:6379), the audit head in the database. Two service apps on one PostgreSQL
database and one Redis prefix stand for two `facelens serve` replicas; the stores' own tests
hold the Redis versions to the in-memory ones. Skipped, with the reason, without the servers."""

from __future__ import annotations

import base64
import json
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from facelens import api
from facelens.cluster.shared import (
    RedisBuckets,
    RedisFailures,
    RedisMarks,
    RedisRecords,
    SharedState,
    SharedStateError,
)
from facelens.errors import ConflictError
from facelens.liveness.judge import Judgement
from facelens.liveness.passive import PassiveCues
from facelens.liveness.sessions import SessionRefused, SessionStore, SharedSessions
from facelens.policy.lockout import Lockout
from facelens.service.app import create_app
from facelens.service.limits import MemoryBuckets, ProbeLimiter
from facelens.service.state import ServiceState
from facelens.settings import Settings
from facelens.store.audit import AuditLog
from facelens.store.database import Store
from facelens.vision.decode import load_image

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CONSENT = {"legal_basis": "consent", "consent_purpose": "door access", "recorded_by": "desk"}
BURST = 8
"""Requests per key the replicas allow in all (they refill one per 100 minutes)."""


def _open_shared() -> SharedState:
    try:
        return SharedState(REDIS_URL, f"facelens-test-{uuid.uuid4().hex[:12]}", timeout_s=3)
    except SharedStateError as e:
        pytest.skip(str(e))


def _drop(shared: SharedState) -> None:
    keys = list(shared.redis.scan_iter(f"{shared.prefix}:*"))
    if keys:
        shared.redis.delete(*keys)
    shared.close()


@pytest.fixture
def shared() -> Iterator[SharedState]:
    """A Redis connection under a key prefix of this test's own, emptied afterwards."""
    state = _open_shared()
    yield state
    _drop(state)


# --------------------------------------------------------------------------- the stores alone
def test_an_unreachable_redis_stops_a_replica_at_start_without_showing_the_password() -> None:
    with pytest.raises(SharedStateError, match=r"127\.0\.0\.1:1 is unreachable") as refused:
        SharedState("redis://:hunter2@127.0.0.1:1/0", timeout_s=1)
    assert "hunter2" not in str(refused.value)


def test_the_redis_bucket_allows_and_refuses_as_the_memory_one(shared: SharedState) -> None:
    """One scripted clock, a random sequence of costs and pauses: the same waits."""
    now = [1000.0]
    memory, remote = MemoryBuckets(lambda: now[0]), RedisBuckets(shared, "r", lambda: now[0])
    rng = random.Random(7)
    waits = []
    for _ in range(200):
        now[0] += rng.choice([0.0, 0.0, 0.05, 0.3, 1.7])
        cost = rng.choice([1.0, 1.0, 2.5, 6.0])
        waits.append((memory.take("k", cost, 2.0, 6.0), remote.take("k", cost, 2.0, 6.0)))
    assert all(m == pytest.approx(r, abs=1e-9) for m, r in waits)
    assert sum(m == 0 for m, _ in waits) > 20 and sum(m > 0 for m, _ in waits) > 20


def test_the_server_clock_refills_a_bucket(shared: SharedState) -> None:
    bucket = RedisBuckets(shared, "r")  # Redis's own clock
    assert [bucket.take("k", 1, 20.0, 2) == 0 for _ in range(3)] == [True, True, False]
    time.sleep(0.1)  # 20 tokens/s: two are back
    assert bucket.take("k", 1, 20.0, 2) == 0 and 0 < bucket.take("k", 5, 20.0, 2) <= 0.25


def test_the_lockout_window_slides_in_redis(shared: SharedState) -> None:
    lockout = Lockout(failures=3, window_s=0.5, lock_s=60, store=RedisFailures(shared))
    for _ in range(2):
        lockout.failed(("k", "s"))
    time.sleep(0.6)  # the first two leave the window
    lockout.failed(("k", "s"))
    assert lockout.locked_for(("k", "s")) == 0
    lockout.failed(("k", "s"))
    lockout.failed(("k", "s"))
    assert 59 < lockout.locked_for(("k", "s")) <= 60
    assert lockout.locked_for(("k", "s2")) == 0 and lockout.locked_for(("k:s", "")) == 0


def test_near_duplicate_probes_are_counted_across_replicas(
        shared: SharedState, load_rgb: Callable[[str], np.ndarray]) -> None:
    photo = load_rgb("obama.jpg")
    nudged = photo.copy()
    nudged[10, 10] ^= 1
    replicas = [ProbeLimiter(3, 600, marks=RedisMarks(shared)) for _ in range(2)]
    with ThreadPoolExecutor(8) as pool:  # eight at once, four per replica: three get through
        allowed = list(pool.map(lambda i: replicas[i % 2].allow("key", (photo, nudged)[i % 2]),
                                range(8)))
    assert sum(allowed) == 3
    assert replicas[0].allow("key", load_rgb("biden.jpg"))  # another face is no near-duplicate
    assert replicas[1].allow("another key", photo)


def _judgement(embedding: np.ndarray) -> Judgement:
    return Judgement(True, [], {"blink": 12}, 30, 30, 0.91, PassiveCues(False, 1.8, 3.2, 0.97),
                     embedding)


def test_a_shared_session_keeps_its_verdict_and_is_claimed_once(
        shared: SharedState, engine: api.Engine) -> None:
    replicas = [SessionStore(engine, sessions=SharedSessions(RedisRecords(shared, "liveness")))
                for _ in range(2)]
    made = replicas[0].create("key-a")
    seen = replicas[1].get(made.id, "key-a")
    assert (seen.nonce, seen.challenge, seen.prompts_s) == (made.nonce, made.challenge,
                                                            made.prompts_s)
    start = threading.Barrier(6)

    def claim(i: int) -> bool:
        start.wait()
        try:
            replicas[i % 2].begin_answer(made.id, "key-a", made.nonce)
            return True
        except ConflictError:
            return False

    with ThreadPoolExecutor(6) as pool:
        assert sum(pool.map(claim, range(6))) == 1
    vector = np.random.default_rng(1).standard_normal(128).astype(np.float32)
    vector /= np.linalg.norm(vector)
    replicas[1].finish(replicas[1].get(made.id, "key-a"), _judgement(vector))
    seen = replicas[0].get(made.id, "key-a")
    assert seen.state == "passed" and seen.judgement is not None
    assert seen.judgement.passive == PassiveCues(False, 1.8, 3.2, 0.97)
    assert np.array_equal(seen.judgement.embedding, vector)
    replicas[0].consume(made.id, "key-a", vector)
    with pytest.raises(SessionRefused):
        replicas[1].consume(made.id, "key-a", vector)
    spent = replicas[1].get(made.id, "key-a")
    assert spent.state == "used" and spent.judgement and spent.judgement.embedding is None
    ttl = shared.redis.pttl(shared.key("liveness", made.id)) / 1000
    assert 3600 < ttl <= 3600 + 180


# --------------------------------------------------------------------------- two replicas
@dataclass
class Replica:
    client: TestClient
    state: ServiceState

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Replica, Replica]]:
    """Two service apps on one PostgreSQL schema, one master key and one Redis prefix."""
    shared = _open_shared()
    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT",
                                 connect_args={"connect_timeout": 3})
        with admin.connect() as c:
            c.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as e:
        _drop(shared)
        pytest.skip(f"PostgreSQL unreachable at 127.0.0.1:5432 (user postgres, db test): {e}")
    schema = f"facelens_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    root = tmp_path_factory.mktemp("replicas")
    common = {"database_url": f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}",
              "redis_url": REDIS_URL, "redis_prefix": shared.prefix,
              "rate_burst": BURST, "rate_per_minute": 0.01, "workers": 1}
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FACELENS_MASTER_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
            apps = [create_app(Settings(data_dir=root / name, **common)) for name in "ab"]
            with TestClient(apps[0]) as a, TestClient(apps[1]) as b:
                yield (Replica(a, apps[0].state.facelens), Replica(b, apps[1].state.facelens))
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
        _drop(shared)


def _key(replica: Replica, *scopes: str) -> str:
    """A key of its own per test: each test starts with a full bucket."""
    return replica.state.keys.create(f"t-{uuid.uuid4().hex[:6]}", list(scopes))[1]


def _enrol(replica: Replica, fixtures: Path, gallery: str, photo: str) -> str:
    admin, enrol = _key(replica, "admin"), _key(replica, "enrol")
    replica.client.post("/v1/galleries", headers=replica.auth(admin),
                        json={"name": gallery, "purpose": "door"})
    r = replica.client.post(f"/v1/galleries/{gallery}/subjects", headers=replica.auth(enrol),
                            data={"name": photo, **CONSENT},
                            files=[("images", (photo, (fixtures / photo).read_bytes(),
                                               "image/jpeg"))])
    assert r.status_code == 201, r.text
    return str(r.json()["subject_id"])


def test_failures_spread_over_both_replicas_lock_the_pair_on_both(
        replicas: tuple[Replica, Replica], fixtures_dir: Path) -> None:
    a, b = replicas
    subject = _enrol(a, fixtures_dir, "door", "obama.jpg")
    guesser, other = _key(a, "verify"), _key(a, "verify")
    wrong = (fixtures_dir / "biden.jpg").read_bytes()

    def verify(replica: Replica, key: str) -> int:
        return replica.client.post("/v1/verify", headers=replica.auth(key),
                                   files={"image": ("b.jpg", wrong, "image/jpeg")},
                                   data={"subject_id": subject}).status_code

    assert [verify(r, guesser) for r in (a, b, a, b, a)] == [200] * 5  # lockout_failures: 5
    assert [verify(r, guesser) for r in (b, a)] == [423, 423]
    assert verify(b, other) == 200  # another caller is not locked out of that subject


def test_the_rate_limit_holds_across_replicas(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    key = _key(b, "detect")
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda i: (a, b)[i % 2].client.get(
            "/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code,
            range(3 * BURST)))
    assert codes.count(200) == BURST and codes.count(429) == 2 * BURST


def test_a_session_started_on_one_replica_is_answered_and_spent_once_on_any(
        replicas: tuple[Replica, Replica], fixtures_dir: Path) -> None:
    a, b = replicas
    subject = _enrol(b, fixtures_dir, "lobby", "obama.jpg")
    key = _key(a, "verify")
    owner = a.state.keys.authenticate(key)
    assert owner is not None
    made = a.client.post("/v1/liveness/sessions", headers=a.auth(key)).json()
    assert b.client.get(f"/v1/liveness/sessions/{made['id']}",
                        headers=b.auth(key)).json()["state"] == "open"
    claimed = b.state.liveness.begin_answer(made["id"], owner.id, made["nonce"])
    replay = a.client.post(f"/v1/liveness/sessions/{made['id']}", headers=a.auth(key),
                           data={"nonce": made["nonce"]},
                           files=[("frames", ("f.jpg", b"\xff\xd8", "image/jpeg"))])
    assert replay.status_code == 409  # answered on B already
    face = api.main_face(api.embed(load_image(fixtures_dir / "obama.jpg"), embedder="sface"))
    b.state.liveness.finish(claimed, _judgement(face.embedding))

    def spend(replica: Replica) -> int:
        return replica.client.post("/v1/verify", headers=replica.auth(key), files={
            "image": ("o.jpg", (fixtures_dir / "obama2.jpg").read_bytes(), "image/jpeg")},
            data={"subject_id": subject, "liveness_session": made["id"]}).status_code

    assert [spend(a), spend(b)] == [200, 403]


def test_concurrent_audit_appends_from_two_replicas_make_one_chain(
        replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    before = a.state.audit.verify()
    assert before.ok, before

    def append(i: int) -> None:
        (a, b)[i % 2].state.audit.record(f"replica-{'ab'[i % 2]}", "test.append", "ok", n=i)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(append, range(100)))
    for replica in (a, b):
        check = replica.state.audit.verify()
        assert check.ok and check.entries == before.entries + 100, check
    rows = a.state.audit.entries(100)
    assert sorted(json.loads(r.detail)["n"] for r in rows) == list(range(100))


def test_audit_appends_from_two_stores_on_one_sqlite_file(tmp_path: Path) -> None:
    """Without a server: two processes' worth of stores on one data directory."""
    stores = [Store(Settings(data_dir=tmp_path / "data")) for _ in range(2)]
    logs = [AuditLog.of(store) for store in stores]
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: logs[i % 2].record("t", "append", "ok", n=i), range(60)))
        check = logs[1].verify()
        assert check.ok and check.entries == 60, check
        head = logs[0].head()
        assert head is not None and head[0] == 60
    finally:
        for store in stores:
            store.close()


def test_an_old_head_file_ahead_of_the_chain_is_kept_and_reported(tmp_path: Path) -> None:
    """Rows dropped from the end before the upgrade: the old file's head says so after it."""
    store = Store(Settings(data_dir=tmp_path / "data"))
    log = AuditLog.of(store)
    for n in range(3):
        log.record("t", "append", "ok", n=n)
    third = log.entries(1)[0]
    with store.sessions.begin() as s:
        s.execute(sa.text("DELETE FROM audit_head"))
        s.execute(sa.text("DELETE FROM audit_log WHERE id = 3"))
    store.audit_head.write_text(json.dumps({"entries": 3, "hash": third.hash}))
    check = AuditLog.of(store).verify()
    assert not check.ok and check.broken_at == -1 and check.entries == 2, check
    store.close()
