"""What the alert tests share: servers' reachability, a subject without a model, the waits, a
JetStream stream of one test and its backlog, an MQTT subscriber that collects event ids, and
the reaping of the processes a test killed or left running, a TCP relay to cut a server away."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from facelens.events.relay import stream_names
from facelens.store.crypto import new_data_key
from facelens.store.database import Store
from facelens.store.tables import Gallery, Subject

NATS_URL = "nats://127.0.0.1:4222"
MQTT = ("127.0.0.1", 1883)


def reachable(address: tuple[str, int]) -> str | None:
    try:
        socket.create_connection(address, timeout=2).close()
    except OSError as e:
        return str(e)
    return None


def person(store: Store, name: str = "ada") -> str:
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


def count(store: Store, table: type[Any]) -> int:
    with store.sessions() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not so within {timeout} s"
        time.sleep(0.05)


def drop_nats_prefix(prefix: str) -> None:
    """Delete what facelens processes made under one test's NATS prefix: the camera and worker
    KV buckets and the alert stream (any never created are skipped)."""
    from facelens.cluster.bus import Bus

    bus = Bus(NATS_URL)
    try:
        for bucket in (f"{prefix}_cameras", f"{prefix}_workers"):
            with contextlib.suppress(Exception):
                bus.call(bus.js.delete_key_value(bucket))
        with contextlib.suppress(Exception):
            bus.call(bus.js.delete_stream(f"{prefix}_events"))
    finally:
        bus.close()


@contextlib.contextmanager
def stream_of_one_test() -> Iterator[tuple[Any, str, str]]:
    """A bus, and a stream and subject prefix of one test alone, deleted afterwards; skips the
    test when NATS is unreachable."""
    if (why := reachable(("127.0.0.1", 4222))) is not None:
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


def stored(bus: Any, name: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every message in the stream: (subject, Nats-Msg-Id, payload)."""
    info = bus.call(bus.js.stream_info(name))
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = bus.call(bus.js.get_msg(name, seq))
        out.append((message.subject, message.headers["Nats-Msg-Id"], json.loads(message.data)))
    return out


def backlog(bus: Any, name: str, durable: str) -> int:
    """What the durable consumer has yet to deliver or see acked, plus what the (work-queue)
    stream still holds: 0 once every alert went out and was acked."""
    consumer = bus.call(bus.js.consumer_info(name, durable))
    messages = bus.call(bus.js.stream_info(name)).state.messages
    return int(consumer.num_pending + consumer.num_ack_pending + messages)


def reap(processes: Iterable[subprocess.Popen[Any]]) -> None:
    """Kill (SIGKILL) and wait for those of `processes` still running."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


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


class Relay:
    """Forwards 127.0.0.1:<port> to `upstream` (a server) until cut; `cut` drops every
    connection, `restore` listens on the same port again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.upstream, timeout=3)
            except OSError:
                return
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accepting thread (close alone does not)
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.sockets = []

    def restore(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()
