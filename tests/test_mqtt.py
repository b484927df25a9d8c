"""MQTT like Frigate against the Mosquitto broker on 127.0.0.1:1883, heard by a real subscriber:
availability (online, offline on close, the last will when the process is killed), Home
Assistant discovery per camera, the alert with its band, and its review update."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from facelens.events.sinks import MqttSink

BROKER = ("127.0.0.1", 1883)


def _broker_up() -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(BROKER) == 0


pytestmark = pytest.mark.skipif(not _broker_up(), reason="no MQTT broker on 127.0.0.1:1883 "
                                "(apt-get install mosquitto)")


class Subscriber:
    """Every message under the topics given, as (topic, payload, retained)."""

    def __init__(self, *topics: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []
        self._seen = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"test-sub-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._message
        self.client.on_connect = lambda c, *_: [c.subscribe(t, qos=1) for t in topics]
        self.client.connect(*BROKER)
        self.client.loop_start()

    def _message(self, _client: Any, _userdata: Any, message: Any) -> None:
        with self._seen:
            # latin-1 maps every byte: a JPEG payload survives as text (payload.encode("latin-1"))
            self.messages.append((message.topic, message.payload.decode("latin-1"),
                                  message.retain))
            self._seen.notify_all()

    def wait_for(self, topic: str, payload: str | None = None, timeout: float = 10
                 ) -> tuple[str, str, bool]:
        def found() -> tuple[str, str, bool] | None:
            return next((m for m in reversed(self.messages) if m[0] == topic
                         and (payload is None or m[1] == payload)), None)

        with self._seen:
            self._seen.wait_for(lambda: found() is not None, timeout)
            hit = found()
        assert hit is not None, f"nothing on {topic} ({payload}); got {self.messages}"
        return hit

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def prefixes() -> Iterator[tuple[str, str]]:
    """Topic prefixes of this test only; their retained messages are cleared afterwards."""
    run = uuid.uuid4().hex[:8]
    yield f"fltest-{run}", f"hatest-{run}"


def test_alert_review_discovery_and_availability(prefixes: tuple[str, str]) -> None:
    prefix, discovery = prefixes
    sub = Subscriber(f"{prefix}/#", f"{discovery}/#")
    sink = MqttSink("mqtt://127.0.0.1:1883", prefix=prefix, discovery_prefix=discovery)
    try:
        sub.wait_for(f"{prefix}/available", "online")
        sink.announce("front door", [("s-1", "Ada")])
        _, config, _ = sub.wait_for(
            f"{discovery}/binary_sensor/facelens_front_door/s-1/config")
        binary = json.loads(config)
        assert binary["state_topic"] == f"{prefix}/front door/s-1" and binary["name"] == "Ada"
        assert binary["availability_topic"] == f"{prefix}/available"
        last = json.loads(sub.wait_for(
            f"{discovery}/sensor/facelens_front_door/last_alert/config")[1])
        assert last["state_topic"] == f"{prefix}/front door/events"

        sink.send({"camera": "front door", "subject_id": "s-1", "name": "Ada",
                   "confidence": "high", "event_id": 7, "box": [10, 20, 90, 120]})
        alert = json.loads(sub.wait_for(f"{prefix}/front door/events")[1])
        assert (alert["band"], alert["box"], alert["event_id"]) == ("high", [10, 20, 90, 120], 7)
        sub.wait_for(f"{prefix}/front door/s-1", "ON")
        sink.send({"type": "review", "camera": "front door", "event_id": 7,
                   "status": "confirmed", "reviewed_by": "guard"})
        review = json.loads(sub.wait_for(f"{prefix}/front door/reviews")[1])
        assert (review["event_id"], review["status"]) == (7, "confirmed")
    finally:
        sink.close()
    sub.wait_for(f"{prefix}/available", "offline")
    sub.close()

    late = Subscriber(f"{prefix}/available", f"{discovery}/#")  # a subscriber joining later
    try:
        assert late.wait_for(f"{prefix}/available", "offline")[2]  # retained
        assert late.wait_for(f"{discovery}/binary_sensor/facelens_front_door/s-1/config")[2]
    finally:
        _clear_retained(late, prefix, discovery)
        late.close()


KILLED = """
import sys, time
from facelens.events.sinks import MqttSink
sink = MqttSink("mqtt://127.0.0.1:1883", prefix=sys.argv[1], discovery_prefix=sys.argv[2])
print("up", flush=True)
time.sleep(60)
"""


def test_last_will_says_offline_when_the_process_is_killed(prefixes: tuple[str, str]) -> None:
    prefix, discovery = prefixes
    sub = Subscriber(f"{prefix}/available")
    child = subprocess.Popen([sys.executable, "-c", KILLED, prefix, discovery],
                             stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "up"
        sub.wait_for(f"{prefix}/available", "online")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        started = time.monotonic()
        sub.wait_for(f"{prefix}/available", "offline", timeout=20)
        assert time.monotonic() - started < 20
    finally:
        if child.poll() is None:
            child.kill()
        _clear_retained(sub, prefix, discovery)
        sub.close()


def _clear_retained(sub: Subscriber, prefix: str, discovery: str) -> None:
    """An empty retained message deletes the retained one: leave the broker as found."""
    for topic in {m[0] for m in sub.messages if m[2]} | {f"{prefix}/available"}:
        sub.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout=5)


def test_a_camera_that_starts_is_announced_with_the_people_it_watches(
        prefixes: tuple[str, str], tmp_path: Any, shared_data: Any, fixtures_dir: Any) -> None:
    """The service's cameras announce themselves for Home Assistant when they start: a binary
    sensor per watched person, and the camera's last-alert sensor."""
    from datetime import UTC, datetime, timedelta

    from facelens.events.store import EventStore
    from facelens.gallery.service import ConsentRecord, Galleries
    from facelens.settings import CameraConfig, Settings
    from facelens.video.manager import CameraManager

    prefix, _ = prefixes
    camera = f"cam-{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path / "data", mqtt_url="mqtt://127.0.0.1:1883",
                        mqtt_prefix=prefix, media_dir=shared_data / "video")
    galleries = Galleries(settings)
    galleries.create_gallery("watch", "watchlist-mqtt")
    people = {}
    for name, photo in (("obama", "obama.jpg"), ("biden", "biden.jpg")):
        report = galleries.enroll("watch", name, [fixtures_dir / photo],
                                  consent=ConsentRecord("test", "legitimate-interest", "t"),
                                  watch_reason="test",
                                  watch_expires=datetime.now(UTC) + timedelta(days=1))
        people[report.subject_id] = name
    sub = Subscriber(f"homeassistant/binary_sensor/facelens_{camera.replace('-', '_')}/#",
                     f"homeassistant/sensor/facelens_{camera.replace('-', '_')}/#")
    manager = CameraManager(settings, galleries.store, galleries, EventStore(galleries.store))
    try:
        manager.start()
        manager.add(CameraConfig(name=camera, source="short_hamilton_clip.mp4",
                                 galleries=["watch"], fps=2))
        slug = camera.replace("-", "_")
        for subject_id, name in people.items():
            _, config, _ = sub.wait_for(
                f"homeassistant/binary_sensor/facelens_{slug}/{subject_id}/config")
            assert json.loads(config)["name"] == name
            assert json.loads(config)["state_topic"] == f"{prefix}/{camera}/{subject_id}"
        sub.wait_for(f"homeassistant/sensor/facelens_{slug}/last_alert/config")
    finally:
        manager.close()
        galleries.close()
        _clear_retained(sub, prefix, "homeassistant")
        sub.close()


def test_snapshots_are_published_only_when_asked(prefixes: tuple[str, str],
                                                 fixtures_dir: Any) -> None:
    """With a snapshot source (setting mqtt_snapshots) the alert's best shot goes to
    <prefix>/<camera>/snapshot, retained; without one no picture leaves."""
    prefix, discovery = prefixes
    jpeg = (fixtures_dir / "obama.jpg").read_bytes()
    sub = Subscriber(f"{prefix}/#")
    plain = MqttSink("mqtt://127.0.0.1:1883", prefix=prefix, discovery_prefix=discovery)
    pictured = MqttSink("mqtt://127.0.0.1:1883", prefix=prefix, discovery_prefix=discovery,
                        snapshot=lambda event_id: jpeg if event_id == 9 else b"")
    try:
        alert = {"camera": "gate", "subject_id": "s-1", "name": "Ada", "confidence": "high"}
        assert plain.deliver({**alert, "event_id": 8})
        sub.wait_for(f"{prefix}/gate/events")
        assert not any(topic.endswith("/snapshot") for topic, _, _ in sub.messages)
        assert pictured.deliver({**alert, "event_id": 9})
        _, body, _ = sub.wait_for(f"{prefix}/gate/snapshot")
        assert body.encode("latin-1") == jpeg
    finally:
        plain.close()
        pictured.close()
        _clear_retained(sub, prefix, discovery)
        sub.close()

