"""A fleet-wide, adaptive limit on speech API calls in flight, as a Transcriber decorator: the
half of the back-pressure on the speech API that spaces the calls out (the other half, the circuit
breaker, is sttpipe.speech.breaker).

The limit lives in Redis so that every worker container shares it: a sorted set of lease ids
scored by their expiry (a worker that dies mid-call frees its slot when the lease runs out) and
a hash holding the current limit, both changed only by Lua scripts, so that acquiring is atomic.
The limit is adaptive (AIMD): each 429 the API answers cuts it by a factor (at most once per
`hold_s`, so one burst of 429s cuts once), each success raises it by 1/limit, so it climbs back by
about one slot per `limit` successful calls.

When Redis cannot be reached, it degrades to the same rules per container instead of stalling
(a Redis outage must not stop transcription), and tries Redis again after a cool-down (see
sttpipe.speech.redis_fallback).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol

import redis

from sttpipe.adapters.redis_connection import RedisClient
from sttpipe.domain.transcripts import Transcription
from sttpipe.speech.base import (
    SpeechBackPressure,
    Transcriber,
    current_priority,
    current_tenant,
)
from sttpipe.speech.redis_fallback import Clock, RedisOrLocal, speech_key

if TYPE_CHECKING:
    import httpx

_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
-- Forget waiters that stopped asking (gave up or died).
local stale = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[5]))
for _, gone in ipairs(stale) do
  redis.call('ZREM', KEYS[3], gone)
  redis.call('ZREM', KEYS[4], gone)
end
redis.call('ZADD', KEYS[3], 'NX', tonumber(ARGV[4]) * 1e13 + now, ARGV[1])
redis.call('ZADD', KEYS[4], now, ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
redis.call('PEXPIRE', KEYS[4], ARGV[2])
local max = tonumber(ARGV[3])
local limit = math.min(max, tonumber(redis.call('HGET', KEYS[2], 'limit') or max))
local free = math.max(1, math.floor(limit)) - redis.call('ZCARD', KEYS[1])
if free <= 0 then
  return 0
end
-- Free slots go to the first waiters: higher priority first, then (fair share) the waiter whose
-- tenant would hold the fewest slots, its earlier waiters counted, then the longest waiting.
-- A member is "<unique id>@<tenant>".
local function tenant_of(member)
  local at = string.find(member, '@', 1, true)
  if ARGV[6] ~= '1' or not at then
    return ''
  end
  return string.sub(member, at + 1)
end
local held = {}
for _, lease in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local tenant = tenant_of(lease)
  held[tenant] = (held[tenant] or 0) + 1
end
local waiting = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
local order = {}
for i = 1, #waiting, 2 do
  local member, score = waiting[i], tonumber(waiting[i + 1])
  local tenant = tenant_of(member)
  local share = held[tenant] or 0
  held[tenant] = share + 1
  order[#order + 1] = {math.floor(score / 1e13), share, score, member}
end
table.sort(order, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end)
for i = 1, math.min(free, #order) do
  if order[i][4] == ARGV[1] then
    redis.call('ZREM', KEYS[3], ARGV[1])
    redis.call('ZREM', KEYS[4], ARGV[1])
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
  end
end
return 0
"""

_FEEDBACK = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local max, min = tonumber(ARGV[2]), tonumber(ARGV[3])
local limit = math.min(max, tonumber(redis.call('HGET', KEYS[1], 'limit') or max))
if ARGV[1] == 'throttled' then
  local cut_at = tonumber(redis.call('HGET', KEYS[1], 'cut_at') or 0)
  if now - cut_at >= tonumber(ARGV[5]) then
    limit = math.max(min, limit * tonumber(ARGV[4]))
    redis.call('HSET', KEYS[1], 'cut_at', now)
  end
else
  limit = math.min(max, limit + 1 / limit)
end
redis.call('HSET', KEYS[1], 'limit', tostring(limit))
redis.call('PEXPIRE', KEYS[1], 86400000)
return tostring(limit)
"""


@dataclass(frozen=True)
class LimitPolicy:
    max_limit: int  # the configured limit: never exceeded
    min_limit: int = 1
    decrease: float = 0.5  # multiplied into the limit on a 429
    hold_s: float = 2.0  # at most one cut per this many seconds
    lease_s: float = 330.0  # a slot held longer than this is taken to be a dead worker's
    stale_waiter_s: float = 2.0  # a waiter that has not asked again for this long has left
    # Waiters of a priority are served by their tenant's share of the slots first, so that one
    # tenant's backlog cannot hold every slot; off: by arrival only.
    fair_share: bool = True


class Slots(Protocol):
    def try_acquire(self, lease_id: str, rank: int) -> bool:
        """Take a slot for `lease_id` if one is free for it (lower `rank` is served first)."""
        ...

    def withdraw(self, lease_id: str) -> None:
        """Stop waiting (gave up before getting a slot)."""
        ...

    def release(self, lease_id: str) -> None: ...

    def feedback(self, throttled: bool) -> float:
        """Adjust the limit after an answer (429 or success); returns the new limit."""
        ...

    def limit(self) -> float:
        """The limit now (after 429 cuts), at most the configured one."""
        ...


class RedisSlots:
    """The fleet-wide slots in Redis (see the module docstring). Raises redis.RedisError."""

    def __init__(self, client: RedisClient, namespace: str, policy: LimitPolicy) -> None:
        self._redis = client
        self._leases_key = speech_key(namespace, "leases")
        self._state_key = speech_key(namespace, "limit")
        self._waiters_key = speech_key(namespace, "waiters")
        self._seen_key = speech_key(namespace, "waiters-seen")
        self._policy = policy
        self._stale_ms = max(1000, round(policy.stale_waiter_s * 1000))
        self._acquire = client.register_script(_ACQUIRE)
        self._feedback = client.register_script(_FEEDBACK)

    def try_acquire(self, lease_id: str, rank: int) -> bool:
        p = self._policy
        lease_ms = max(1, round(p.lease_s * 1000))
        keys = [self._leases_key, self._state_key, self._waiters_key, self._seen_key]
        fair = int(p.fair_share)
        args: list[str | int] = [lease_id, lease_ms, p.max_limit, rank, self._stale_ms, fair]
        return bool(self._acquire(keys=keys, args=args))

    def withdraw(self, lease_id: str) -> None:
        self._redis.zrem(self._waiters_key, lease_id)
        self._redis.zrem(self._seen_key, lease_id)

    def release(self, lease_id: str) -> None:
        self._redis.zrem(self._leases_key, lease_id)

    def feedback(self, throttled: bool) -> float:
        p = self._policy
        args = ["throttled" if throttled else "ok", p.max_limit, p.min_limit, p.decrease]
        hold_ms = round(p.hold_s * 1000)
        return float(self._feedback(keys=[self._state_key], args=[*args, hold_ms]))

    def limit(self) -> float:
        stored = self._redis.hget(self._state_key, "limit")
        return min(float(self._policy.max_limit), float(stored or self._policy.max_limit))

    def in_flight(self) -> int:
        """Leases held now (expired ones included until the next acquire sweeps them)."""
        return int(self._redis.zcard(self._leases_key))


class LocalSlots:
    """The same rules within one container: the fallback while Redis is unreachable."""

    def __init__(self, policy: LimitPolicy, clock: Clock = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._limit = float(policy.max_limit)
        self._cut_at = float("-inf")

    def try_acquire(self, lease_id: str, rank: int) -> bool:
        # One container serves one message at a time on Lambda: no queue of waiters to order.
        with self._lock:
            if len(self._held) >= max(1, int(self._limit)):
                return False
            self._held.add(lease_id)
            return True

    def withdraw(self, lease_id: str) -> None:
        pass

    def release(self, lease_id: str) -> None:
        with self._lock:
            self._held.discard(lease_id)

    def feedback(self, throttled: bool) -> float:
        p = self._policy
        with self._lock:
            now = self._clock()
            if not throttled:
                self._limit = min(p.max_limit, self._limit + 1 / self._limit)
            elif now - self._cut_at >= p.hold_s:
                self._limit = max(p.min_limit, self._limit * p.decrease)
                self._cut_at = now
            return self._limit

    def limit(self) -> float:
        return self._limit


class FleetLimiter:
    """Slots from Redis when it answers, else from this container (see the module docstring)."""

    def __init__(
        self,
        shared: RedisSlots | None,
        local: LocalSlots,
        *,
        poll_s: float = 0.1,
        redis_cooldown_s: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._slots = RedisOrLocal[Slots](
            shared,
            local,
            cooldown_s=redis_cooldown_s,
            warning="speech API limiter: Redis unreachable, limiting per container",
            clock=clock,
        )
        self._poll_s = poll_s
        self._clock = clock

    def _try(self, lease_id: str, rank: int) -> Slots | None:
        backend = self._slots.current()
        try:
            return backend if backend.try_acquire(lease_id, rank) else None
        except redis.RedisError as exc:
            self._slots.failed(exc)
            local = self._slots.local
            return local if local.try_acquire(lease_id, rank) else None

    @contextmanager
    def slot(self, wait_s: float) -> Iterator[None]:
        """Hold one slot for the block; raises SpeechBackPressure if none frees within wait_s."""
        lease_id = f"{uuid.uuid4().hex}@{current_tenant()}"  # the tenant for the fair share
        rank = current_priority()
        deadline = self._clock() + wait_s
        while (backend := self._try(lease_id, rank)) is None:
            left = deadline - self._clock()
            if left <= 0:
                self._withdraw(lease_id)
                raise SpeechBackPressure(
                    f"no speech API slot free within {wait_s:.0f} s", retry_after_s=self._poll_s
                )
            # Jittered, so that waiting workers do not all ask Redis in the same instant.
            time.sleep(min(left, random.uniform(0.5, 1.5) * self._poll_s))
        try:
            yield
        finally:
            try:
                backend.release(lease_id)
            except redis.RedisError as exc:
                self._slots.failed(exc)  # the lease expires by itself

    def _withdraw(self, lease_id: str) -> None:
        try:
            self._slots.current().withdraw(lease_id)
        except redis.RedisError as exc:
            self._slots.failed(exc)  # the waiter goes stale by itself

    def feedback(self, throttled: bool) -> None:
        backend = self._slots.current()
        try:
            backend.feedback(throttled)
        except redis.RedisError as exc:
            self._slots.failed(exc)
            self._slots.local.feedback(throttled)

    def current_limit(self) -> float:
        """Speech calls the fleet may have in flight now (the adaptive limit)."""
        try:
            return self._slots.current().limit()
        except redis.RedisError as exc:
            self._slots.failed(exc)
            return self._slots.local.limit()

    def response_hook(self, response: httpx.Response) -> None:
        """An httpx response hook: every 429 (retried ones too) cuts the limit, a 200 raises it."""
        if response.status_code == HTTPStatus.TOO_MANY_REQUESTS:
            self.feedback(throttled=True)
        elif response.is_success:
            self.feedback(throttled=False)


class LimitedTranscriber:
    """Holds a fleet slot for each call of `inner` (its retries included)."""

    def __init__(self, inner: Transcriber, limiter: FleetLimiter, *, max_wait_s: float) -> None:
        self._inner = inner
        self._limiter = limiter
        self._max_wait_s = max_wait_s

    def transcribe(
        self,
        audio: bytes,
        filename: str,
        *,
        language: str | None,
        prompt: str | None = None,
        remaining_s: float | None = None,
    ) -> Transcription:
        # Waiting for a slot must leave at least half the time for the call itself.
        wait_s = self._max_wait_s if remaining_s is None else min(self._max_wait_s, remaining_s / 2)
        started = time.monotonic()
        with self._limiter.slot(wait_s):
            left = None if remaining_s is None else remaining_s - (time.monotonic() - started)
            return self._inner.transcribe(
                audio, filename, language=language, prompt=prompt, remaining_s=left
            )
