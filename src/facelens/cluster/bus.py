"""One NATS connection for synchronous code: nats-py is asyncio, facelens is threads, so the
connection lives on its own event loop in a daemon thread and callers hand it coroutines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

T = TypeVar("T")
log = logging.getLogger("facelens.bus")


class BusError(RuntimeError):
    """NATS could not be reached or refused an operation."""


class Bus:
    """A NATS (JetStream) connection usable from any thread.

    `call(coro)` runs a coroutine on the bus's loop and returns its result; handlers given
    to `subscribe` run on that loop and must not block (hand work to a queue)."""

    def __init__(self, url: str, name: str = "facelens", timeout_s: float = 5.0) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.shown = shown_url(url)
        """The URL without its credentials: what messages and logs name."""
        self.closing = False
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"nats-{name}",
                                        daemon=True)
        self._thread.start()

        # One line when the connection goes and one when it is back: nats-py's own logging
        # wrote a traceback for every reconnect attempt (one per 2 s per connection).
        async def disconnected() -> None:
            if not self.closing:
                log.warning("NATS at %s: connection lost, reconnecting", self.shown)

        async def reconnected() -> None:
            log.warning("NATS at %s: reconnected", self.shown)

        async def failed(e: Exception) -> None:
            log.debug("NATS at %s: %s: %s", self.shown, type(e).__name__, e)

        try:
            self.nc = self.call(nats.connect(servers=[url], name=name,
                                             connect_timeout=timeout_s,
                                             max_reconnect_attempts=-1,
                                             allow_reconnect=True, error_cb=failed,
                                             disconnected_cb=disconnected,
                                             reconnected_cb=reconnected))
        except Exception as e:
            self._stop_loop()
            raise BusError(f"NATS at {self.shown} is unreachable: {e}") from e
        self.js: JetStreamContext = self.nc.jetstream()
        try:  # leases, the alert stream and locks need it: say so now, not as each is used
            self.call(self.js.account_info())
        except Exception as e:
            self.close()
            raise BusError(f"NATS at {self.shown} has no JetStream: start nats-server with "
                           "-js") from e

    def call(self, coro: Awaitable[T], timeout_s: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(_awaited(coro), self.loop)
        return future.result(timeout_s or self.timeout_s)

    def kv(self, bucket: str, ttl_s: float | None = None, history: int = 1) -> KeyValue:
        """The key-value bucket, created on first use (entries expire after ttl_s)."""

        async def open_or_create() -> KeyValue:
            try:
                return await self.js.key_value(bucket)
            except BucketNotFoundError:
                return await self.js.create_key_value(bucket=bucket, ttl=ttl_s,
                                                      history=history)

        return self.call(open_or_create())

    def subscribe(self, subject: str, handler: Callable[[Any], Awaitable[None]],
                  queue: str = "") -> Any:
        """A core-NATS subscription; `handler(msg)` runs on the bus's loop."""
        return self.call(self.nc.subscribe(subject, queue=queue, cb=handler))

    def publish(self, subject: str, data: bytes) -> None:
        self.call(self.nc.publish(subject, data))

    def close(self) -> None:
        self.closing = True
        with contextlib.suppress(Exception):  # a connection that broke has nothing to flush
            self.call(self.nc.drain())
        self._stop_loop()

    def _stop_loop(self) -> None:
        """Cancel what still runs on the loop (a connect or reconnect attempt), then stop it:
        left pending, each printed "Task was destroyed but it is pending!" at exit."""

        async def cancel_the_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        with contextlib.suppress(Exception):  # a task that will not end: stop regardless
            self.call(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(2.0)


def shown_url(url: str) -> str:
    """`url` without the user and password it may carry (nats://user:pass@host)."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


async def _awaited(coro: Awaitable[T]) -> T:
    return await coro
