"""Where alerts and their reviews go besides the database: webhooks (HMAC-signed, retried with
backoff) and MQTT (Frigate-style topics with availability, last will and Home Assistant
discovery: MqttSink).

Payloads carry ids, names, confidence and time — never images or embeddings; a receiver with
an `events` key fetches the pictures from the API.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

import httpx

from facelens.errors import FacelensError

log = logging.getLogger("facelens.events")


class Sink(Protocol):
    def send(self, payload: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class Deliverer(Protocol):
    def deliver(self, payload: dict[str, Any]) -> bool:
        """Send now and say whether the receiver took it (False: hand it on again later)."""
        ...


def signature(secret: str, body: bytes) -> str:
    """The X-Facelens-Signature header: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSink:
    """POSTs each payload to `url`: `send` from a background thread, `deliver` in the caller's;
    retries 5xx and network errors `retries` times with exponential backoff, then gives up
    (and logs the event id only)."""

    def __init__(self, url: str, secret: str, *, retries: int = 5, backoff_s: float = 0.5,
                 timeout_s: float = 5.0) -> None:
        self.url, self._secret = url, secret
        self.retries, self.backoff_s = retries, backoff_s
        self.delivered = self.failed = 0
        self._client = httpx.Client(timeout=timeout_s)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="facelens-webhook", daemon=True)
        self._thread.start()

    def send(self, payload: dict[str, Any]) -> None:
        self._queue.put(payload)

    def deliver(self, payload: dict[str, Any]) -> bool:
        """POST now: True once the receiver answered for good (2xx, or a 4xx refusal that no
        retry would change), False after the retries failed."""
        body = json.dumps(payload, sort_keys=True, default=str).encode()
        headers = {"Content-Type": "application/json",
                   "X-Facelens-Signature": signature(self._secret, body),
                   "X-Facelens-Event": str(payload.get("event_id"))}
        for attempt in range(self.retries + 1):
            try:
                status = self._client.post(self.url, content=body, headers=headers).status_code
                if status < 500:
                    self.delivered += status < 300
                    self.failed += status >= 300
                    return True
            except httpx.HTTPError:
                pass
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        self.failed += 1
        log.warning("webhook gave up on event %s", payload.get("event_id"))
        return False

    def _run(self) -> None:
        while (payload := self._queue.get()) is not None:
            self.deliver(payload)
            self._queue.task_done()
        self._queue.task_done()

    def flush(self) -> None:
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._client.close()


class MqttSink:
    """MQTT the way Frigate publishes it, for Home Assistant:

    - `<prefix>/available`: "online" (retained) while connected; "offline" on close, and as the
      broker-held last will when the process dies without closing.
    - `<prefix>/<camera>/events`: each alert (QoS 1), its confidence band also as `band`, its
      face box when the camera gives one; `<prefix>/<camera>/<subject_id>`: "ON" per alert.
    - `<prefix>/<camera>/reviews`: a person's confirm or dismiss of an alert.
    - `<prefix>/<camera>/snapshot` (retained, only with `snapshot`): the latest alert's best
      shot as JPEG.
    - `<discovery>/…/config` (retained): per announced camera a "last alert" sensor and a
      binary sensor per watched person (turning off 30 s after the last alert).
    """

    def __init__(self, url: str, *, prefix: str = "facelens",
                 discovery_prefix: str = "homeassistant",
                 snapshot: Callable[[int], bytes] | None = None) -> None:
        import paho.mqtt.client as mqtt

        where = urlparse(url)
        self.prefix, self.discovery = prefix, discovery_prefix
        self.snapshot = snapshot
        """An alert's best shot (JPEG) by event id, for `<prefix>/<camera>/snapshot`; None:
        no face picture leaves for the broker (the default, setting mqtt_snapshots)."""
        self.availability = f"{prefix}/available"
        self._announced: dict[str, list[tuple[str, str]]] = {}
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"facelens-{os.getpid()}-{os.urandom(4).hex()}")
        if where.username:
            self._client.username_pw_set(where.username, where.password)
        self._client.will_set(self.availability, "offline", qos=1, retain=True)
        self._online = threading.Event()
        self._client.on_connect = self._connected
        self._client.on_disconnect = lambda *_args: self._online.clear()
        self._client.connect_async(where.hostname or "127.0.0.1", where.port or 1883)
        self._client.loop_start()  # reconnects by itself; QoS 1 messages wait in its queue

    def _connected(self, client: Any, _userdata: Any, _flags: Any, reason: Any,
                   _properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            return
        self._online.set()
        client.publish(self.availability, "online", qos=1, retain=True)
        with self._lock:  # a broker restarted without persistence has lost the retained configs
            announced = list(self._announced.items())
        for camera, people in announced:
            self._discovery(camera, people)

    def announce(self, camera: str, people: list[tuple[str, str]]) -> None:
        """Home Assistant discovery for `camera` watching `people` ((subject id, name)):
        retained, and sent again after every reconnect."""
        with self._lock:
            self._announced[camera] = list(people)
        self._discovery(camera, people)

    def _discovery(self, camera: str, people: list[tuple[str, str]]) -> None:
        slug = _slug(camera)
        common = {"availability_topic": self.availability,
                  "device": {"identifiers": [f"facelens_{slug}"], "name": f"facelens {camera}",
                             "manufacturer": "facelens"}}
        events = f"{self.prefix}/{camera}/events"
        self._publish(f"{self.discovery}/sensor/facelens_{slug}/last_alert/config", {
            **common, "name": "Last alert", "unique_id": f"facelens_{slug}_last_alert",
            "state_topic": events, "value_template": "{{ value_json.name }}",
            "json_attributes_topic": events}, retain=True)
        for subject_id, name in people:
            self._publish(f"{self.discovery}/binary_sensor/facelens_{slug}/{subject_id}/config", {
                **common, "name": name, "unique_id": f"facelens_{slug}_{subject_id}",
                "state_topic": f"{self.prefix}/{camera}/{subject_id}", "payload_on": "ON",
                "payload_off": "OFF", "off_delay": 30, "device_class": "occupancy"}, retain=True)

    def send(self, payload: dict[str, Any]) -> None:
        self._messages(payload)

    def deliver(self, payload: dict[str, Any], timeout_s: float = 5.0) -> bool:
        """Publish and wait for the broker's QoS 1 acknowledgements (PUBACK). Not connected
        (yet: the first connect is asynchronous) within `timeout_s`: False, nothing queued, so
        the caller's retry is the only copy."""
        deadline = time.monotonic() + timeout_s
        if not self._online.wait(timeout_s):
            return False
        for sent in self._messages(payload):
            try:
                sent.wait_for_publish(timeout=max(deadline - time.monotonic(), 0.01))
            except (RuntimeError, ValueError):
                return False  # not queued: paho's queue is full or the client is closed
            if not sent.is_published():
                return False
        return True

    def _messages(self, payload: dict[str, Any]) -> list[Any]:
        camera = payload.get("camera", "unknown")
        if payload.get("type") == "review":
            return [self._publish(f"{self.prefix}/{camera}/reviews", payload)]
        sent = [self._publish(f"{self.prefix}/{camera}/events",
                              {**payload, "band": payload.get("confidence")})]
        if subject_id := payload.get("subject_id"):
            sent.append(self._client.publish(f"{self.prefix}/{camera}/{subject_id}", "ON",
                                             qos=1))
        if self.snapshot is not None and payload.get("event_id") is not None:
            try:
                jpeg = self.snapshot(int(payload["event_id"]))
            except FacelensError:  # deleted meanwhile, or flagged without a picture
                jpeg = None
            if jpeg:
                sent.append(self._client.publish(f"{self.prefix}/{camera}/snapshot", jpeg,
                                                 qos=1, retain=True))
        return sent

    def _publish(self, topic: str, body: dict[str, Any], *, retain: bool = False) -> Any:
        return self._client.publish(topic, json.dumps(body, sort_keys=True, default=str),
                                    qos=1, retain=retain)

    def close(self) -> None:
        """Say "offline" (the will is only for a death without a goodbye), then disconnect."""
        sent = self._client.publish(self.availability, "offline", qos=1, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):
            sent.wait_for_publish(timeout=5)
        self._client.disconnect()
        self._client.loop_stop()


def _slug(name: str) -> str:
    """A camera name as Home Assistant ids want it: letters, digits and underscores."""
    return re.sub(r"\W", "_", name)


class Fanout:
    """Every sink gets every payload; one failing sink does not stop the others."""

    REMEMBERED = 10_000
    """Recent (sink, event) deliveries kept, so a retry skips the sinks that took it."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks
        self._taken: dict[tuple[int, Any], None] = {}  # insertion-ordered: oldest first
        self._lock = threading.Lock()

    def announce(self, camera: str, people: list[tuple[str, str]]) -> None:
        """Tell the sinks that describe cameras (MQTT discovery) who `camera` watches."""
        for sink in self.sinks:
            if isinstance(sink, MqttSink):
                sink.announce(camera, people)

    def send(self, payload: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink.send(payload)
            except Exception:
                log.exception("event sink %s failed", type(sink).__name__)

    def deliver(self, payload: dict[str, Any]) -> bool:
        """Every sink gets the payload now; True when every one took it. A sink that can only
        send (queue) counts as having taken it once its send returned. Retried after one sink
        failed, an event goes only to the sinks that have not taken it (in this process)."""
        taken = True
        for i, sink in enumerate(self.sinks):
            key = (i, payload.get("event_id"))
            with self._lock:
                if key[1] is not None and key in self._taken:
                    continue
            try:
                if isinstance(sink, Deliverer):
                    ok = sink.deliver(payload)
                else:
                    sink.send(payload)
                    ok = True
            except Exception:
                log.exception("event sink %s failed", type(sink).__name__)
                ok = False
            taken = taken and ok
            if ok and key[1] is not None:
                with self._lock:
                    self._taken[key] = None
                    if len(self._taken) > self.REMEMBERED:
                        del self._taken[next(iter(self._taken))]
        return taken

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
