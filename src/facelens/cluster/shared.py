"""State that API replicas share in Redis: token buckets, failure counts and locks, probe
marks and JSON records (liveness sessions). Each class here is only the storage half of a
policy that lives above it (service/limits.py, policy/lockout.py, liveness/sessions.py, whose
in-memory stores are the default): the policy decides, these keep its numbers where every
replica sees them, each read-modify-write atomic in Redis (one Lua script, or WATCH/MULTI).

Times are Redis's own clock (TIME) unless a caller passes a clock, so replicas on hosts whose
clocks disagree still count one window. Every key carries `prefix` and an expiry: state left
alone disappears once it could no longer change a decision.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import TypeVar, cast

import redis
from redis.client import Pipeline

from facelens.errors import FacelensError

T = TypeVar("T")

_TAKE = """
local cost, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local held = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = tonumber(held[1]) or burst
local last = tonumber(held[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
elseif rate > 0 then
  wait = (cost - tokens) / rate
else
  wait = 60
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'last', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return string.format('%.17g', wait)
"""
"""Refill and take in one step (the in-memory MemoryBuckets.take, in Lua): the wait in
seconds, 0 when taken. A bucket left alone is full again after burst/rate seconds, and so
expires then: a missing bucket is a full one."""

_FAIL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local window = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.17g', now - window))
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
return redis.call('ZCARD', KEYS[1])
"""
"""Record one failure at the server's time, forget those before the window: the count."""


class SharedStateError(FacelensError):
    """Redis could not be reached (or refused the credentials) at start: one line, exit 1."""

    exit_code = 1


class SharedState:
    """One Redis connection pool and the key prefix of one deployment (or one test run).
    Opening checks that Redis answers: a replica that cannot share its limits does not start."""

    def __init__(self, url: str, prefix: str = "facelens", timeout_s: float = 5.0) -> None:
        self.prefix = prefix
        self.redis = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                          socket_connect_timeout=timeout_s)
        try:
            self.redis.ping()
        except redis.RedisError as e:
            self.redis.close()
            where = self.redis.connection_pool.connection_kwargs  # the URL may hold a password
            raise SharedStateError(f"Redis at {where.get('host')}:{where.get('port')} is "
                                   f"unreachable: {e}") from e

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def now(self) -> float:
        """Redis's clock, in seconds."""
        seconds, micros = self.redis.time()
        return seconds + micros / 1e6

    def watched(self, name: str, attempt: Callable[[Pipeline], T]) -> T:
        """A read-modify-write of key `name` under WATCH/MULTI: `attempt(pipe)` reads, then
        either unwatches (nothing to write) or calls pipe.multi() and queues its writes; it
        runs again whenever another client wrote `name` before those went through. Returns
        what the attempt that went through returned (redis-py's own transaction loop)."""
        return cast(T, self.redis.transaction(attempt, name, value_from_callable=True))

    def close(self) -> None:
        self.redis.close()


class RedisBuckets:
    """Token buckets named `name`: the storage of service.limits.RateLimiter."""

    def __init__(self, shared: SharedState, name: str,
                 clock: Callable[[], float] | None = None) -> None:
        self.shared, self.name, self.clock = shared, name, clock
        self._take = shared.redis.register_script(_TAKE)

    def take(self, key: str, cost: float, rate: float, burst: float) -> float:
        now = "" if self.clock is None else repr(self.clock())
        wait = self._take(keys=[self.shared.key("bucket", self.name, key)],
                          args=[repr(cost), repr(rate), repr(burst), now])
        return float(wait)


class RedisFailures:
    """Failure times (a sorted set per pair) and locks (a key whose TTL is the time left):
    the storage of policy.lockout.Lockout."""

    def __init__(self, shared: SharedState, name: str = "lockout") -> None:
        self.shared, self.name = shared, name
        self._fail = shared.redis.register_script(_FAIL)

    def add_failure(self, pair: str, window_s: float) -> int:
        """Count one failure now; the failures within the last `window_s`."""
        return int(self._fail(keys=[self.shared.key(self.name, "fails", pair)],
                              args=[repr(window_s), uuid.uuid4().hex]))

    def lock(self, pair: str, lock_s: float) -> None:
        """Lock `pair` for `lock_s` and start its count afresh."""
        with self.shared.redis.pipeline() as pipe:
            pipe.set(self.shared.key(self.name, "locked", pair), 1,
                     px=max(1, math.ceil(lock_s * 1000)))
            pipe.delete(self.shared.key(self.name, "fails", pair))
            pipe.execute()

    def locked_for(self, pair: str) -> float:
        left_ms = self.shared.redis.pttl(self.shared.key(self.name, "locked", pair))
        return max(int(left_ms), 0) / 1000.0  # -2: no lock


class RedisMarks:
    """64-bit marks with their times, per key (a sorted set): the storage of
    service.limits.ProbeLimiter. `admit` reads the window and adds a mark under WATCH, so two
    replicas admitting at once cannot both take the last place."""

    def __init__(self, shared: SharedState, name: str = "probes") -> None:
        self.shared, self.name = shared, name

    def admit(self, key: str, mark: int, window_s: float, keep: int,
              decide: Callable[[list[int]], bool]) -> bool:
        """Add `mark` if `decide(marks seen within window_s)` says so; keep the newest `keep`."""
        name = self.shared.key(self.name, key)

        def attempt(pipe: Pipeline) -> bool:
            seconds, micros = pipe.time()
            now = seconds + micros / 1e6
            seen = pipe.zrangebyscore(name, now - window_s, "+inf")
            if not decide([int(m.split(b":")[0], 16) for m in seen]):
                pipe.unwatch()
                return False
            pipe.multi()
            pipe.zadd(name, {f"{mark:016x}:{uuid.uuid4().hex[:8]}": now})
            pipe.zremrangebyscore(name, "-inf", f"({now - window_s!r}")
            pipe.zremrangebyrank(name, 0, -keep - 1)
            pipe.pexpire(name, math.ceil(window_s * 1000) + 1000)
            return True

        return self.shared.watched(name, attempt)


class RedisRecords:
    """Text records by id, each with its own expiry, changed only by `update` (WATCH/MULTI):
    the storage of liveness.sessions.SessionStore."""

    def __init__(self, shared: SharedState, name: str) -> None:
        self.shared, self.name = shared, name

    def put(self, record_id: str, text: str, ttl_s: float) -> None:
        self.shared.redis.set(self.shared.key(self.name, record_id), text,
                              px=max(1, math.ceil(ttl_s * 1000)))

    def get(self, record_id: str) -> str | None:
        text = self.shared.redis.get(self.shared.key(self.name, record_id))
        return None if text is None else bytes(text).decode()

    def update(self, record_id: str, change: Callable[[str | None], tuple[str | None, T]]) -> T:
        """`change(text)` returns (the new text or None to leave it, a result); the new text
        is written only if nobody wrote the record in between, else `change` runs again on
        what they wrote. An exception from `change` writes nothing."""
        name = self.shared.key(self.name, record_id)

        def attempt(pipe: Pipeline) -> T:
            text = pipe.get(name)
            new, result = change(None if text is None else bytes(text).decode())
            if new is None:
                pipe.unwatch()
                return result
            pipe.multi()
            pipe.set(name, new, keepttl=True)
            return result

        return self.shared.watched(name, attempt)
