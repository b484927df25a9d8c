"""Alerts exactly once in effect: the cool-down window claimed atomically in the database by
racing workers (SQLite and PostgreSQL), the outbox row written with its event, the relay
handing rows on (to the sinks, or to JetStream with the event id as message id, a re-publish
dropped), and the delivery consumer killed with SIGKILL mid-stream losing nothing."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from facelens.events.relay import OutboxRelay, stream_names, to_sinks
from facelens.events.sinks import Fanout
from facelens.events.store import EventStore
from facelens.settings import Settings
from facelens.store.crypto import new_data_key
from facelens.store.database import Store
from facelens.store.tables import AlertWindow, Event, Gallery, OutboxEntry, Subject, utcnow

NATS_URL = "nats://127.0.0.1:4222"
MQTT = ("127.0.0.1", 1883)


def _reachable(address: tuple[str, int]) -> str | None:
    try:
        socket.create_connection(address, timeout=2).close()
    except OSError as e:
        return str(e)
    return None


def _person(store: Store, name: str = "ada") -> str:
    """An enrolled subject (no templates: an event needs only the row and its key)."""
    subject_id = str(uuid.uuid4())
    with store.sessions.begin() as s:
        gallery = s.scalar(sa.select(Gallery).where(Gallery.name == "door"))
        if gallery is None:
            gallery = Gallery(name="door", purpose="staff-door", embedder="sface-flip")
            s.add(gallery)
        s.add(Subject(id=subject_id, gallery=gallery, display_name=name,
                      wrapped_key=store.master.wrap(new_data_key(), subject_id),
                      key_id=store.master.id))
    return subject_id


def _count(store: Store, table: type[Any]) -> int:
    with store.sessions() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not so within {timeout} s"
        time.sleep(0.05)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings of one database that two Stores (two workers) open side by side."""
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").url
    yield Settings(data_dir=tmp_path / "data", database_url=url)


# --------------------------------------------------------------------------- the cool-down
def test_racing_workers_claim_each_cool_down_window_once(database: Settings) -> None:
    workers = [Store(database), Store(database)]  # two engines: two processes' connections
    try:
        ada = _person(workers[0])
        start = threading.Barrier(2)
        won: list[int] = []

        def race(events: EventStore) -> None:
            start.wait()
            for _ in range(25):
                event = events.record_alert("gate", ada, "high", cooldown_s=3600,
                                            announce={"camera": "gate", "subject_id": ada})
                if event is not None:
                    won.append(event.id)

        for window in (1, 2):
            threads = [threading.Thread(target=race, args=(EventStore(w),)) for w in workers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(won) == window  # 50 tries, one alert per window
            assert _count(workers[0], Event) == _count(workers[0], OutboxEntry) == window
            with workers[1].sessions.begin() as s:  # the window ends (an hour, fast-forwarded)
                s.execute(sa.update(AlertWindow).values(until=utcnow()))
        # Another camera, or another person, has a window of its own.
        events = EventStore(workers[1])
        assert events.record_alert("hall", ada, "high", cooldown_s=3600) is not None
        assert events.record_alert("gate", _person(workers[1], "bo"), "high",
                                   cooldown_s=3600) is not None
    finally:
        for w in workers:
            w.close()


def test_the_outbox_row_comes_with_its_event_and_only_then(tmp_path: Path) -> None:
    store = Store(Settings(data_dir=tmp_path / "data"))
    events, ada = EventStore(store), _person(store)
    event = events.record_alert("gate", ada, "high", cooldown_s=60,
                                announce={"camera": "gate", "name": "ada", "event_id": None})
    assert event is not None
    with store.sessions() as s:
        (row,) = s.scalars(sa.select(OutboxEntry))
    assert (row.event_id, row.camera) == (event.id, "gate")
    assert row.payload == {"camera": "gate", "name": "ada", "event_id": event.id,
                           "at": event.at.isoformat(), "status": "unconfirmed"}
    # Refused by the window: neither an event nor an outbox row.
    assert events.record_alert("gate", ada, "high", cooldown_s=60, announce={}) is None
    # Flagged (stored for review, never announced): an event, no outbox row, no window used.
    bo = _person(store, "bo")
    assert events.record_alert("gate", bo, "low", status="suppressed") is not None
    # A failing write takes its claim back with it: the window stays free.
    with pytest.raises(ValueError, match="status"):
        events.record_alert("hall", bo, "high", cooldown_s=60, announce={}, status="bogus")
    assert events.record_alert("hall", bo, "high", cooldown_s=60) is not None
    assert (_count(store, Event), _count(store, OutboxEntry)) == (3, 1)
    # Deleting the event (or shredding its subject) takes the unsent alert with it.
    events.delete(event.id)
    assert _count(store, OutboxEntry) == 0
    store.close()


# --------------------------------------------------------------------------- the relay
class Receiver:
    """A sink that takes payloads, or refuses them while `refusing`."""

    def __init__(self) -> None:
        self.taken: list[dict[str, Any]] = []
        self.refusing = False

    def deliver(self, payload: dict[str, Any]) -> bool:
        if self.refusing:
            return False
        self.taken.append(payload)
        return True

    def send(self, payload: dict[str, Any]) -> None:
        self.deliver(payload)

    def close(self) -> None: ...


def test_the_embedded_relay_deletes_a_row_only_once_the_sinks_took_it(tmp_path: Path) -> None:
    store = Store(Settings(data_dir=tmp_path / "data"))
    events, receiver, other = EventStore(store), Receiver(), Receiver()
    people = [_person(store, name) for name in ("ada", "bo", "cy")]
    made = [events.record_alert("gate", p, "high", cooldown_s=60, announce={"subject_id": p})
            for p in people]
    relay = OutboxRelay(events, to_sinks(Fanout([other, receiver])))
    receiver.refusing = True
    assert relay.drain() is False and relay.drain() is False  # refused: kept, first in line
    assert _count(store, OutboxEntry) == 3 and receiver.taken == []
    receiver.refusing = False
    assert relay.drain() is True
    ids = [e.id for e in made if e]
    assert [p["event_id"] for p in receiver.taken] == ids  # in order
    assert [p["event_id"] for p in other.taken] == ids  # the sink that took it: not again
    assert _count(store, OutboxEntry) == 0

    relay.start()  # the thread: woken by a poke, and by its poll for others' rows
    try:
        late = events.record_alert("gate", _person(store, "di"), "high", announce={})
        relay.poke()
        _wait_for(lambda: len(receiver.taken) == 4 and len(other.taken) == 4)
        assert late is not None and receiver.taken[-1]["event_id"] == late.id
        _wait_for(lambda: _count(store, OutboxEntry) == 0)
    finally:
        relay.close()
        store.close()


# --------------------------------------------------------------------------- JetStream
@pytest.fixture
def stream() -> Iterator[tuple[Any, str, str]]:
    """A bus and a stream and subject prefix of this test alone, deleted afterwards."""
    if (why := _reachable(("127.0.0.1", 4222))) is not None:
        pytest.skip(f"NATS JetStream unreachable at 127.0.0.1:4222: {why}")
    from facelens.cluster.bus import Bus

    bus, run = Bus(NATS_URL), uuid.uuid4().hex[:10]
    name, subjects = stream_names(f"t{run}")
    try:
        yield bus, name, subjects
    finally:
        with contextlib.suppress(Exception):  # never created: the test failed early
            bus.call(bus.js.delete_stream(name))
        bus.close()


def _stored(bus: Any, name: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every message in the stream: (subject, Nats-Msg-Id, payload)."""
    info = bus.call(bus.js.stream_info(name))
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = bus.call(bus.js.get_msg(name, seq))
        out.append((message.subject, message.headers["Nats-Msg-Id"], json.loads(message.data)))
    return out


def test_the_relay_publishes_by_event_id_and_a_republish_is_dropped(
        tmp_path: Path, stream: tuple[Any, str, str]) -> None:
    from facelens.events.relay import to_jetstream

    bus, name, subjects = stream
    store = Store(Settings(data_dir=tmp_path / "data"))
    events = EventStore(store)
    made = [events.record_alert(camera, _person(store), "high", announce={"camera": camera})
            for camera in ("gate", "yard.east", "gate")]
    with store.sessions() as s:  # what a relay killed between publish and delete leaves
        left = [(r.event_id, r.camera, r.payload) for r in s.scalars(sa.select(OutboxEntry))]
    relay = OutboxRelay(events, to_jetstream(bus, name, subjects))
    assert relay.drain() is True and _count(store, OutboxEntry) == 0
    expected = [(f"{subjects}.{'yard_east' if e.camera == 'yard.east' else e.camera}",
                 str(e.id), e.id) for e in made if e]
    assert [(subject, msg_id, body["event_id"]) for subject, msg_id, body in
            _stored(bus, name)] == expected

    with store.sessions.begin() as s:  # the relay restarts and publishes them all again
        s.add_all(OutboxEntry(event_id=e, camera=c, payload=p) for e, c, p in left)
    assert relay.drain() is True and _count(store, OutboxEntry) == 0
    assert [(subject, msg_id, body["event_id"]) for subject, msg_id, body in
            _stored(bus, name)] == expected  # deduplicated by JetStream: still one each
    store.close()


@pytest.mark.parametrize("broker", [False, True], ids=["embedded", "jetstream"])
def test_start_delivery_hands_recorded_alerts_to_the_sinks(tmp_path: Path, broker: bool,
                                                            request: pytest.FixtureRequest
                                                            ) -> None:
    from facelens.events.delivery import start_delivery

    settings = Settings(data_dir=tmp_path / "data")
    if broker:
        bus, name, _ = request.getfixturevalue("stream")
        settings = settings.model_copy(update={"nats_url": NATS_URL,
                                               "nats_prefix": name.removesuffix("_events")})
    store, receiver = Store(settings), Receiver()
    events = EventStore(store)
    delivery = start_delivery(settings, events, Fanout([receiver]))
    try:
        made = [events.record_alert("gate", _person(store), "high", announce={})
                for _ in range(3)]
        delivery.relay.poke()
        _wait_for(lambda: len(receiver.taken) == 3)
        assert sorted(p["event_id"] for p in receiver.taken) == sorted(e.id for e in made if e)
        _wait_for(lambda: _count(store, OutboxEntry) == 0)
        if broker:
            assert delivery.consumer is not None
            _wait_for(lambda: delivery.consumer is not None and delivery.consumer.pending() == 0)
            assert bus.call(bus.js.stream_info(name)).state.messages == 0
    finally:
        delivery.close()
        store.close()


RELAY = """
import sys, time
from pathlib import Path
from facelens.cluster.bus import Bus
from facelens.events.relay import OutboxRelay, to_jetstream
from facelens.events.store import EventStore
from facelens.settings import Settings
from facelens.store.database import Store

data_dir, url, name, subjects = sys.argv[1:]
publish = to_jetstream(Bus(url), name, subjects)

def slow(row):  # 20 ms after each publish: the kill most likely lands before a row's delete
    taken = publish(row)
    time.sleep(0.02)
    return taken

print("ready", flush=True)
OutboxRelay(EventStore(Store(Settings(data_dir=Path(data_dir)))), slow).drain()
"""


def test_a_relay_killed_mid_stream_publishes_each_alert_once(
        tmp_path: Path, stream: tuple[Any, str, str]) -> None:
    bus, name, subjects = stream
    settings = Settings(data_dir=tmp_path / "data")
    store = Store(settings)
    events = EventStore(store)
    for i in range(100):
        events.record_alert(f"cam{i % 4}", _person(store), "high", announce={})
    args = [sys.executable, "-c", RELAY, str(settings.data_dir), NATS_URL, name, subjects]

    def published() -> int:
        return int(bus.call(bus.js.stream_info(name)).state.messages)

    try:
        first = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert first.stdout is not None and first.stdout.readline() == "ready\n"
        _wait_for(lambda: published() >= 30)
        first.kill()  # SIGKILL: maybe between a publish and its row's delete
        first.wait()
        left, sent = _count(store, OutboxEntry), published()
        assert 0 < left < 100
        second = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        assert _count(store, OutboxEntry) == 0
        with store.sessions() as s:
            rows = {str(i) for i in s.scalars(sa.select(Event.id))}
        ids = [msg_id for _, msg_id, _ in _stored(bus, name)]
        assert sorted(ids) == sorted(rows)  # each alert once: none lost, none twice
        print(f"\nrelay killed with {sent} published and {left} of 100 rows left (re-published "
              f"{sent + left - 100}): {len(ids)} messages in the stream, {len(set(ids))} distinct "
              f"ids = {len(rows)} event rows")
    finally:
        if first.poll() is None:
            first.kill()
        store.close()


DELIVERY = """
import sys, time
from facelens.cluster.bus import Bus
from facelens.events.delivery import StreamDelivery
from facelens.events.sinks import Fanout, MqttSink

class Slow(MqttSink):  # a receiver taking 20 ms per alert, so the kill lands mid-stream
    def deliver(self, payload, timeout_s=5.0):
        time.sleep(0.02)
        return super().deliver(payload, timeout_s)

url, name, subjects, prefix = sys.argv[1:]
StreamDelivery(Bus(url), Fanout([Slow("mqtt://127.0.0.1:1883", prefix=prefix)]), name, subjects,
               durable="delivery", ack_wait_s=2.0).start()
print("ready", flush=True)
while True:
    time.sleep(1)
"""


class Heard:
    """Event ids an MQTT subscriber heard on <prefix>/+/events (with repeats)."""

    def __init__(self, prefix: str) -> None:
        import paho.mqtt.client as mqtt

        self.ids: list[int] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"test-outbox-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/+/events", qos=1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = lambda _c, _u, m: self.ids.append(
            json.loads(m.payload)["event_id"])
        self.client.connect(*MQTT)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_a_delivery_consumer_killed_mid_stream_loses_no_alert(
        tmp_path: Path, stream: tuple[Any, str, str]) -> None:
    from facelens.events.relay import to_jetstream

    if (why := _reachable(MQTT)) is not None:
        pytest.skip(f"no MQTT broker on 127.0.0.1:1883: {why}")
    bus, name, subjects = stream
    store = Store(Settings(data_dir=tmp_path / "data"))
    events, prefix = EventStore(store), f"fltest-{uuid.uuid4().hex[:8]}"
    people = [_person(store, f"p{i}") for i in range(10)]
    for i in range(120):  # 12 cameras × 10 people, one window each
        camera = f"cam{i // 10}"
        events.record_alert(camera, people[i % 10], "high", cooldown_s=600,
                            announce={"camera": camera, "subject_id": people[i % 10]})
    assert OutboxRelay(events, to_jetstream(bus, name, subjects)).drain() is True
    with store.sessions() as s:
        rows = set(s.scalars(sa.select(Event.id)))
    heard = Heard(prefix)
    consumers: list[subprocess.Popen[str]] = []

    def consume() -> subprocess.Popen[str]:
        process = subprocess.Popen([sys.executable, "-c", DELIVERY, NATS_URL, name, subjects,
                                    prefix], stdout=subprocess.PIPE, text=True)
        consumers.append(process)
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        return process

    try:
        assert heard.ready.wait(10)
        first = consume()
        _wait_for(lambda: len(set(heard.ids)) >= 30)
        first.kill()  # SIGKILL, mid-stream
        first.wait()
        cut = len(set(heard.ids))
        assert cut < len(rows)  # it really died with alerts left
        consume()
        _wait_for(lambda: set(heard.ids) == rows, timeout=60)
        def pending() -> int:
            consumer = bus.call(bus.js.consumer_info(name, "delivery"))
            return int(consumer.num_pending + consumer.num_ack_pending)

        _wait_for(lambda: pending() == 0)
        assert bus.call(bus.js.stream_info(name)).state.messages == 0  # work queue: all acked
        print(f"\n{len(rows)} alerts, consumer killed after {cut} heard: "
              f"{len(heard.ids)} MQTT messages, {len(set(heard.ids))} distinct event ids "
              f"= {len(rows)} event rows, nothing pending")
    finally:
        for process in consumers:
            if process.poll() is None:
                process.kill()
                process.wait()
        heard.close()
        store.close()
