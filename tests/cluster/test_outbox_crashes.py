"""Alerts survive SIGKILL: a relay killed between a publish and its row's delete re-publishes
and JetStream drops the repeat; a delivery consumer killed mid-stream leaves its alerts to be
redelivered, and every alert reaches the MQTT subscriber."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alerting import (
    MQTT,
    NATS_URL,
    Heard,
    backlog,
    count,
    person,
    reachable,
    reap,
    stored,
    stream_of_one_test,
    wait_for,
)

from facelens.events.relay import OutboxRelay, to_jetstream
from facelens.events.store import EventStore
from facelens.settings import Settings
from facelens.store.database import Store
from facelens.store.tables import Event, OutboxEntry


@pytest.fixture
def stream() -> Iterator[tuple[Any, str, str]]:
    with stream_of_one_test() as bus_stream_subjects:
        yield bus_stream_subjects


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
        events.record_alert(f"cam{i % 4}", person(store), "high", announce={})
    args = [sys.executable, "-c", RELAY, str(settings.data_dir), NATS_URL, name, subjects]

    def published() -> int:
        return int(bus.call(bus.js.stream_info(name)).state.messages)

    try:
        first = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert first.stdout is not None and first.stdout.readline() == "ready\n"
        wait_for(lambda: published() >= 30)
        first.kill()  # SIGKILL: maybe between a publish and its row's delete
        first.wait()
        left, sent = count(store, OutboxEntry), published()
        assert 0 < left < 100
        second = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        assert count(store, OutboxEntry) == 0
        with store.sessions() as s:
            rows = {str(i) for i in s.scalars(sa.select(Event.id))}
        ids = [msg_id for _, msg_id, _ in stored(bus, name)]
        assert sorted(ids) == sorted(rows)  # each alert once: none lost, none twice
        print(f"\nrelay killed with {sent} published and {left} of 100 rows left (re-published "
              f"{sent + left - 100}): {len(ids)} messages in the stream, {len(set(ids))} distinct "
              f"ids = {len(rows)} event rows")
    finally:
        reap([first])
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


def test_a_delivery_consumer_killed_mid_stream_loses_no_alert(
        tmp_path: Path, stream: tuple[Any, str, str]) -> None:
    if (why := reachable(MQTT)) is not None:
        pytest.skip(f"no MQTT broker on 127.0.0.1:1883: {why}")
    bus, name, subjects = stream
    store = Store(Settings(data_dir=tmp_path / "data"))
    events, prefix = EventStore(store), f"fltest-{uuid.uuid4().hex[:8]}"
    people = [person(store, f"p{i}") for i in range(10)]
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
        wait_for(lambda: len(set(heard.ids)) >= 30)
        first.kill()  # SIGKILL, mid-stream
        first.wait()
        cut = len(set(heard.ids))
        assert cut < len(rows)  # it really died with alerts left
        consume()
        wait_for(lambda: set(heard.ids) == rows, timeout=60)
        wait_for(lambda: backlog(bus, name, "delivery") == 0)  # work queue: all acked
        print(f"\n{len(rows)} alerts, consumer killed after {cut} heard: "
              f"{len(heard.ids)} MQTT messages, {len(set(heard.ids))} distinct event ids "
              f"= {len(rows)} event rows, nothing pending")
    finally:
        reap(consumers)
        heard.close()
        store.close()
