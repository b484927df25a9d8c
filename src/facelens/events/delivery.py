"""Alert delivery: a durable JetStream consumer hands each alert to the MQTT/webhook sinks and
acknowledges it only once they took it (at-least-once; payloads carry event_id, so receivers
drop repeats). Every process running one shares the consumer: each alert goes to one of them,
and one killed mid-alert leaves it to be redelivered after `ack_wait_s`.

`start_delivery` is what a process that records or announces alerts runs: the outbox relay,
plus this consumer when NATS is configured (the embedded default hands rows to the sinks)."""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from facelens.events.relay import OutboxRelay, ensure_stream, stream_names, to_jetstream, to_sinks
from facelens.events.sinks import Fanout
from facelens.events.store import EventStore
from facelens.settings import Settings

if TYPE_CHECKING:  # nats-py is the optional `cluster` extra: the embedded default runs without
    from facelens.cluster.bus import Bus

log = logging.getLogger("facelens.events")

DURABLE = "facelens-delivery"
CHECK_EVERY = 10
"""Empty fetches (of 1 s) between checks that the consumer still exists."""


class StreamDelivery:
    """Pulls alerts from the stream in a thread; acks each after `sink.deliver` took it,
    naks it (redelivered after `retry_s`) when a sink did not. `ack_wait_s` outlasts a webhook's
    retries (≤ 6 tries of 5 s plus 15.5 s of backoff), so a slow delivery is not re-sent."""

    def __init__(self, bus: Bus, sink: Fanout, stream: str, subjects: str, *,
                 durable: str = DURABLE, ack_wait_s: float = 60.0,
                 retry_s: float = 5.0, batch: int = 10) -> None:
        from nats.js.api import ConsumerConfig

        self.bus, self.sink, self.stream, self.durable = bus, sink, stream, durable
        self.subjects, self.retry_s, self.batch = subjects, retry_s, batch
        self._config = ConsumerConfig(ack_wait=ack_wait_s, max_deliver=-1)
        self.delivered = 0
        self._sub = self._subscribe()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facelens-delivery", daemon=True)

    def _subscribe(self) -> Any:
        ensure_stream(self.bus, self.stream, self.subjects)
        return self.bus.call(self.bus.js.pull_subscribe(
            f"{self.subjects}.>", durable=self.durable, stream=self.stream,
            config=self._config))

    def _still_subscribed(self) -> None:
        """A NATS that lost its JetStream store (restarted without it) has neither the stream
        nor this consumer, and a fetch from a consumer that is gone only times out: alerts
        then waited in the stream the relay made again, undelivered until a restart."""
        from nats.js.errors import NotFoundError

        try:
            self.bus.call(self.bus.js.consumer_info(self.stream, self.durable))
        except NotFoundError:
            log.warning("alert delivery: the stream or its consumer was gone; made again")
            self._sub = self._subscribe()

    def start(self) -> StreamDelivery:
        self._thread.start()
        return self

    def _run(self) -> None:
        idle = 0
        while not self._stop.is_set():
            try:
                if idle >= CHECK_EVERY:
                    idle = 0
                    self._still_subscribed()
                messages = self.bus.call(self._sub.fetch(self.batch, timeout=1.0),
                                         timeout_s=10.0)
            except TimeoutError:  # nothing to deliver (nats-py raises its own or the plain one)
                idle += 1
                continue
            except Exception:  # the broker went away: the client reconnects by itself
                log.exception("alert delivery: fetch failed")
                self._stop.wait(1.0)
                continue
            idle = 0
            for message in messages:
                self._deliver(message)

    def _deliver(self, message: Any) -> None:
        try:
            payload = json.loads(message.data)
        except ValueError:
            log.error("alert delivery: dropped a message that is not JSON")
            self.bus.call(message.term())
            return
        try:
            if self.sink.deliver(payload):
                self.bus.call(message.ack_sync())
                self.delivered += 1
            else:
                self.bus.call(message.nak(delay=self.retry_s))
        except Exception:  # an ack lost: the alert comes again after ack_wait, never lost
            log.exception("alert delivery: event %s", payload.get("event_id"))

    def pending(self) -> int:
        """Alerts in the stream not yet acknowledged (waiting or in flight)."""
        info = self.bus.call(self.bus.js.consumer_info(self.stream, self.durable))
        return int(info.num_pending + info.num_ack_pending)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)
        try:
            self.bus.call(self._sub.unsubscribe())  # the durable consumer stays on the server
        except Exception:
            log.debug("alert delivery: unsubscribe failed", exc_info=True)


class AlertDelivery:
    """What hands this process's alerts on. `relay` is what camera threads poke; `bus`, when
    set, is the connection it opened (and closes)."""

    def __init__(self, relay: OutboxRelay, consumer: StreamDelivery | None = None,
                 bus: Bus | None = None) -> None:
        self.relay, self.consumer, self.bus = relay, consumer, bus

    def close(self) -> None:
        self.relay.close()
        if self.consumer is not None:
            self.consumer.close()
        if self.bus is not None:
            self.bus.close()


def start_delivery(settings: Settings, events: EventStore, sink: Fanout,
                   bus: Bus | None = None) -> AlertDelivery:
    """The relay (to JetStream with `nats_url`, else to `sink`) and, with NATS, the consumer
    delivering to `sink`; both threads, stopped by `close()`. `bus`: the process's NATS
    connection to share (else one of its own, closed with it)."""
    if not settings.nats_url:
        return AlertDelivery(OutboxRelay(events, to_sinks(sink)).start())
    from facelens.cluster.bus import Bus

    own = bus is None
    bus = bus or Bus(settings.nats_url, name="facelens-alerts")
    try:
        stream, subjects = stream_names(settings.nats_prefix)
        publish = to_jetstream(bus, stream, subjects)
        consumer = StreamDelivery(bus, sink, stream, subjects)
        return AlertDelivery(OutboxRelay(events, publish).start(), consumer.start(),
                             bus if own else None)
    except Exception:
        if own:
            bus.close()
        raise
