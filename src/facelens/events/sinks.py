"""Where alerts go besides the database: webhooks (HMAC-signed, retried with backoff) and MQTT
(`<prefix>/<camera>/events`, JSON that Home Assistant's MQTT integration reads as is).

Payloads carry ids, names, confidence and time — never images or embeddings; a receiver with
an `events` key fetches the pictures from the API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from typing import Any, Protocol
from urllib.parse import urlparse

import httpx

log = logging.getLogger("facelens.events")


class Sink(Protocol):
    def send(self, payload: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def signature(secret: str, body: bytes) -> str:
    """The X-Facelens-Signature header: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSink:
    """POSTs each payload to `url` from a background thread; retries 5xx and network errors
    `retries` times with exponential backoff, then gives up (and logs the event id only)."""

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

    def _run(self) -> None:
        while (payload := self._queue.get()) is not None:
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
                        break
                except httpx.HTTPError:
                    pass
                if attempt == self.retries:
                    self.failed += 1
                    log.warning("webhook gave up on event %s", payload.get("event_id"))
                else:
                    time.sleep(self.backoff_s * 2**attempt)
            self._queue.task_done()
        self._queue.task_done()

    def flush(self) -> None:
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._client.close()


class MqttSink:
    """Publishes to `<prefix>/<camera>/events` (QoS 1) on an MQTT broker (mqtt://host:port)."""

    def __init__(self, url: str, *, prefix: str = "facelens") -> None:
        import paho.mqtt.client as mqtt

        where = urlparse(url)
        self.prefix = prefix
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"facelens-{threading.get_native_id()}")
        if where.username:
            self._client.username_pw_set(where.username, where.password)
        self._client.connect_async(where.hostname or "127.0.0.1", where.port or 1883)
        self._client.loop_start()  # reconnects by itself; QoS 1 messages wait in its queue

    def send(self, payload: dict[str, Any]) -> None:
        topic = f"{self.prefix}/{payload.get('camera', 'unknown')}/events"
        self._client.publish(topic, json.dumps(payload, sort_keys=True, default=str), qos=1)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class Fanout:
    """Every sink gets every payload; one failing sink does not stop the others."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def send(self, payload: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink.send(payload)
            except Exception:
                log.exception("event sink %s failed", type(sink).__name__)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
