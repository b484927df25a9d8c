"""Alerts exactly once in effect: the cool-down window claimed atomically in the database by
racing workers (SQLite and PostgreSQL), the outbox row written with its event, and the relay
handing rows on (to the sinks, or to JetStream with the event id as message id, a re-publish
dropped). Crashes: test_outbox_crashes.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alerting import NATS_URL, count, person, stored, stream_of_one_test, wait_for

from facelens.events.relay import OutboxRelay, to_jetstream, to_sinks
from facelens.events.sinks import Fanout
from facelens.events.store import EventStore
from facelens.settings import Settings
from facelens.store.database import Store
from facelens.store.tables import AlertWindow, Event, OutboxEntry, utcnow


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
        ada = person(workers[0])
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
            assert count(workers[0], Event) == count(workers[0], OutboxEntry) == window
            with workers[1].sessions.begin() as s:  # the window ends (an hour, fast-forwarded)
                s.execute(sa.update(AlertWindow).values(until=utcnow()))
        # Another camera, or another person, has a window of its own.
        events = EventStore(workers[1])
        assert events.record_alert("hall", ada, "high", cooldown_s=3600) is not None
        assert events.record_alert("gate", person(workers[1], "bo"), "high",
                                   cooldown_s=3600) is not None
    finally:
        for w in workers:
            w.close()


def test_a_worker_whose_clock_runs_ahead_keeps_the_cool_down(
        postgres: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers on several machines share PostgreSQL's clock for cool-downs: one whose own clock
    ran an hour ahead found the window another had just claimed over and alerted again, and
    its retention pass deleted windows still running."""
    import facelens.events.store as event_store

    settings = Settings(data_dir=tmp_path / "data", database_url=postgres.url)
    workers = [Store(settings), Store(settings)]
    try:
        ada = person(workers[0])
        assert EventStore(workers[0]).record_alert("gate", ada, "high", cooldown_s=600)
        ahead = utcnow() + timedelta(hours=1)
        monkeypatch.setattr(event_store, "utcnow", lambda: ahead)
        running_ahead = EventStore(workers[1])
        assert running_ahead.forget_ended_cooldowns() == 0
        assert running_ahead.record_alert("gate", ada, "high", cooldown_s=600) is None
        assert count(workers[0], Event) == 1
    finally:
        for w in workers:
            w.close()


def test_the_outbox_row_comes_with_its_event_and_only_then(tmp_path: Path) -> None:
    store = Store(Settings(data_dir=tmp_path / "data"))
    events, ada = EventStore(store), person(store)
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
    bo = person(store, "bo")
    assert events.record_alert("gate", bo, "low", status="suppressed") is not None
    # A failing write takes its claim back with it: the window stays free.
    with pytest.raises(ValueError, match="status"):
        events.record_alert("hall", bo, "high", cooldown_s=60, announce={}, status="bogus")
    assert events.record_alert("hall", bo, "high", cooldown_s=60) is not None
    assert (count(store, Event), count(store, OutboxEntry)) == (3, 1)
    # Deleting the event (or shredding its subject) takes the unsent alert with it.
    events.delete(event.id)
    assert count(store, OutboxEntry) == 0
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
    people = [person(store, name) for name in ("ada", "bo", "cy")]
    made = [events.record_alert("gate", p, "high", cooldown_s=60, announce={"subject_id": p})
            for p in people]
    relay = OutboxRelay(events, to_sinks(Fanout([other, receiver])))
    receiver.refusing = True
    assert relay.drain() is False and relay.drain() is False  # refused: kept, first in line
    assert count(store, OutboxEntry) == 3 and receiver.taken == []
    receiver.refusing = False
    assert relay.drain() is True
    ids = [e.id for e in made if e]
    assert [p["event_id"] for p in receiver.taken] == ids  # in order
    assert [p["event_id"] for p in other.taken] == ids  # the sink that took it: not again
    assert count(store, OutboxEntry) == 0

    relay.start()  # the thread: woken by a poke, and by its poll for others' rows
    try:
        late = events.record_alert("gate", person(store, "di"), "high", announce={})
        relay.poke()
        wait_for(lambda: len(receiver.taken) == 4 and len(other.taken) == 4)
        assert late is not None and receiver.taken[-1]["event_id"] == late.id
        wait_for(lambda: count(store, OutboxEntry) == 0)
    finally:
        relay.close()
        store.close()


# --------------------------------------------------------------------------- JetStream

@pytest.fixture
def stream() -> Iterator[tuple[Any, str, str]]:
    with stream_of_one_test() as bus_stream_subjects:
        yield bus_stream_subjects


def test_the_relay_publishes_by_event_id_and_a_republish_is_dropped(
        tmp_path: Path, stream: tuple[Any, str, str]) -> None:
    bus, name, subjects = stream
    store = Store(Settings(data_dir=tmp_path / "data"))
    events = EventStore(store)
    made = [events.record_alert(camera, person(store), "high", announce={"camera": camera})
            for camera in ("gate", "yard.east", "gate")]
    with store.sessions() as s:  # what a relay killed between publish and delete leaves
        left = [(r.event_id, r.camera, r.payload) for r in s.scalars(sa.select(OutboxEntry))]
    relay = OutboxRelay(events, to_jetstream(bus, name, subjects))
    assert relay.drain() is True and count(store, OutboxEntry) == 0
    expected = [(f"{subjects}.{'yard_east' if e.camera == 'yard.east' else e.camera}",
                 str(e.id), e.id) for e in made if e]
    assert [(subject, msg_id, body["event_id"]) for subject, msg_id, body in
            stored(bus, name)] == expected

    with store.sessions.begin() as s:  # the relay restarts and publishes them all again
        s.add_all(OutboxEntry(event_id=e, camera=c, payload=p) for e, c, p in left)
    assert relay.drain() is True and count(store, OutboxEntry) == 0
    assert [(subject, msg_id, body["event_id"]) for subject, msg_id, body in
            stored(bus, name)] == expected  # deduplicated by JetStream: still one each
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
        made = [events.record_alert("gate", person(store), "high", announce={})
                for _ in range(3)]
        delivery.relay.poke()
        wait_for(lambda: len(receiver.taken) == 3)
        assert sorted(p["event_id"] for p in receiver.taken) == sorted(e.id for e in made if e)
        wait_for(lambda: count(store, OutboxEntry) == 0)
        if broker:
            assert delivery.consumer is not None
            wait_for(lambda: delivery.consumer is not None and delivery.consumer.pending() == 0)
            assert bus.call(bus.js.stream_info(name)).state.messages == 0
    finally:
        delivery.close()
        store.close()


def test_an_idle_delivery_logs_no_error(stream: tuple[Any, str, str],
                                        caplog: pytest.LogCaptureFixture) -> None:
    """Nothing to deliver is the usual state: each empty fetch ends in a timeout, which nats-py
    raises as its own TimeoutError or as the plain one; neither is a failure to log."""
    from facelens.events.delivery import StreamDelivery

    bus, name, subjects = stream
    delivery = StreamDelivery(bus, Fanout([Receiver()]), name, subjects,
                              durable=f"{name}-idle").start()
    try:
        with caplog.at_level("WARNING", logger="facelens.events"):
            threading.Event().wait(8.0)  # ~8 empty fetches of 1 s
        assert not [r.getMessage() for r in caplog.records if r.levelname in ("ERROR",
                                                                               "WARNING")]
    finally:
        delivery.close()


def test_alerts_flow_again_after_nats_lost_its_stream(tmp_path: Path,
                                                      stream: tuple[Any, str, str]) -> None:
    """A NATS restarted without its JetStream store has neither the alert stream nor the
    consumer: the relay's publish failed on every alert (kept in the outbox, retried for ever)
    and a fetch from the vanished consumer only timed out, so nothing was delivered until the
    processes restarted. Both are made again and the alert goes out."""
    from facelens.events.delivery import start_delivery

    bus, name, _ = stream
    settings = Settings(data_dir=tmp_path / "data", nats_url=NATS_URL,
                        nats_prefix=name.removesuffix("_events"))
    store, receiver = Store(settings), Receiver()
    events = EventStore(store)
    delivery = start_delivery(settings, events, Fanout([receiver]))
    try:
        ada = person(store)
        events.record_alert("gate", ada, "high", announce={})
        delivery.relay.poke()
        wait_for(lambda: len(receiver.taken) == 1)
        bus.call(bus.js.delete_stream(name))  # its consumer goes with it
        later = events.record_alert("hall", ada, "high", announce={})
        assert later is not None
        delivery.relay.poke()
        wait_for(lambda: len(receiver.taken) == 2, timeout=60)
        assert receiver.taken[-1]["event_id"] == later.id
        wait_for(lambda: count(store, OutboxEntry) == 0)
    finally:
        delivery.close()
        store.close()


def test_a_database_outage_is_one_error_in_the_relay_log(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    """While the database is away the relay retries every second or so; each try logged a
    traceback. Now one when it goes and one line when it is back."""
    store = Store(Settings(data_dir=tmp_path / "data"))
    events, receiver = EventStore(store), Receiver()
    working = events.sessions

    class Away:
        def begin(self) -> Any:
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed"))

    relay = OutboxRelay(events, to_sinks(Fanout([receiver])), poll_s=0.02, max_backoff_s=0.05)
    events.sessions = Away()  # type: ignore[assignment]
    try:
        with caplog.at_level("DEBUG", logger="facelens.events"):
            relay.start()
            wait_for(lambda: len(caplog.records) >= 10)  # ten tries at least
            events.sessions = working
            wait_for(lambda: any("answers again" in r.getMessage() for r in caplog.records))
        loud = [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
        assert [r.levelname for r in loud] == ["ERROR", "WARNING"], loud
    finally:
        relay.close()
        store.close()
