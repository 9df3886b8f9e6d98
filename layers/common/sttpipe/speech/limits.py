"""Back-pressure on the speech API: a fleet-wide, adaptive limit on calls in flight and a
fleet-wide circuit breaker, both as Transcriber decorators.

The limit lives in Redis so that every worker container shares it: a sorted set of lease ids
scored by their expiry (a worker that dies mid-call frees its slot when the lease runs out) and
a hash holding the current limit, both changed only by Lua scripts, so that acquiring is atomic.
The limit is adaptive (AIMD): each 429 the API answers cuts it by a factor (at most once per
`hold_s`, so one burst of 429s cuts once), each success raises it by 1/limit, so it climbs back by
about one slot per `limit` successful calls.

The circuit breaker lives in Redis too. Per container, every one of many Lambda containers would
have to see `failures` failed calls before it stopped calling a broken API, each failure burning
a receive of some chunk, and after each cool-down every container would send its own trial call.
Shared, the first `failures` failures in a row anywhere stop the whole fleet, and one trial call
fleet-wide decides whether it closes. Its state (the failures in a row, the end of the cool-down,
the trial marker) is changed only by Lua scripts timed by Redis's clock, so that containers'
clocks do not matter; the trial marker expires, so that a container dying mid-trial does not keep
the circuit half open.

When Redis cannot be reached, both degrade to the same rules per container instead of stalling
(a Redis outage must not stop transcription), and try Redis again after a cool-down.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import httpx
import redis
from aws_lambda_powertools import Logger

from sttpipe.speech.base import SpeechBackPressure, Transcriber, Transcription, TransientSpeechError

logger = Logger(child=True)

Clock = Callable[[], float]

# The priority of the chunk being transcribed (0 high, 1 normal, 2 low): waiters for a fleet
# slot are served in this order. A context variable, because the Transcriber interface is about
# the audio, not the job; the worker handler sets it per message.
_priority: ContextVar[int] = ContextVar("speech_priority", default=1)


@contextmanager
def priority_scope(rank: int) -> Iterator[None]:
    """Speech calls in the block wait for a fleet slot with this priority rank (0 first)."""
    token = _priority.set(rank)
    try:
        yield
    finally:
        _priority.reset(token)


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
-- Free slots go to the first waiters: higher priority first, then the longest waiting.
if free > 0 and redis.call('ZRANK', KEYS[3], ARGV[1]) < free then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
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


class RedisSlots:
    """The fleet-wide slots in Redis (see the module docstring). Raises redis.RedisError."""

    def __init__(self, client: redis.Redis, namespace: str, policy: LimitPolicy) -> None:
        self._redis = client
        self._leases_key = f"{namespace}:speech:leases"
        self._state_key = f"{namespace}:speech:limit"
        self._waiters_key = f"{namespace}:speech:waiters"
        self._seen_key = f"{namespace}:speech:waiters-seen"
        self._policy = policy
        self._stale_ms = max(1000, round(policy.stale_waiter_s * 1000))
        self._acquire = client.register_script(_ACQUIRE)
        self._feedback = client.register_script(_FEEDBACK)

    def try_acquire(self, lease_id: str, rank: int) -> bool:
        p = self._policy
        lease_ms = max(1, round(p.lease_s * 1000))
        keys = [self._leases_key, self._state_key, self._waiters_key, self._seen_key]
        args: list[str | int] = [lease_id, lease_ms, p.max_limit, rank, self._stale_ms]
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
        self._shared = shared
        self._local = local
        self._poll_s = poll_s
        self._cooldown_s = redis_cooldown_s
        self._clock = clock
        self._shared_down_until = float("-inf")

    def _backend(self) -> Slots:
        if self._shared is None or self._clock() < self._shared_down_until:
            return self._local
        return self._shared

    def _shared_failed(self, exc: redis.RedisError) -> None:
        self._shared_down_until = self._clock() + self._cooldown_s
        logger.warning(
            "speech API limiter: Redis unreachable, limiting per container",
            extra={"error": str(exc), "retry_redis_in_s": self._cooldown_s},
        )

    def _try(self, lease_id: str, rank: int) -> Slots | None:
        backend = self._backend()
        try:
            return backend if backend.try_acquire(lease_id, rank) else None
        except redis.RedisError as exc:
            self._shared_failed(exc)
            return self._local if self._local.try_acquire(lease_id, rank) else None

    @contextmanager
    def slot(self, wait_s: float) -> Iterator[None]:
        """Hold one slot for the block; raises SpeechBackPressure if none frees within wait_s."""
        lease_id = uuid.uuid4().hex
        rank = _priority.get()
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
                self._shared_failed(exc)  # the lease expires by itself

    def _withdraw(self, lease_id: str) -> None:
        try:
            self._backend().withdraw(lease_id)
        except redis.RedisError as exc:
            self._shared_failed(exc)  # the waiter goes stale by itself

    def feedback(self, throttled: bool) -> None:
        backend = self._backend()
        try:
            backend.feedback(throttled)
        except redis.RedisError as exc:
            self._shared_failed(exc)
            self._local.feedback(throttled)

    def response_hook(self, response: httpx.Response) -> None:
        """An httpx response hook: every 429 (retried ones too) cuts the limit, a 200 raises it."""
        if response.status_code == httpx.codes.TOO_MANY_REQUESTS:
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


class Breaker(Protocol):
    """A circuit breaker: after repeated failures of the API, calls are held back for a while."""

    def before_call(self) -> None:
        """Raises SpeechBackPressure while the circuit is open (or another call is the trial)."""
        ...

    def record(self, *, failed: bool) -> None:
        """The outcome of a call before_call let through: `failed` if the API is to blame."""
        ...

    def release(self) -> None:
        """The call before_call let through never reached the API (no slot free): no outcome,
        but a trial it was is over, so that another call can be the trial."""
        ...

    @property
    def is_open(self) -> bool:
        """Open or half open: the last calls failed and no call has succeeded since."""
        ...


def _circuit_open(left_s: float, cooldown_s: float) -> SpeechBackPressure:
    # Half open with the trial elsewhere, no time is left: ask again after a tenth of the cool-down.
    return SpeechBackPressure(
        "speech API circuit open after repeated failures",
        retry_after_s=max(left_s, cooldown_s / 10),
    )


def _log_opened(failures: int, cooldown_s: float) -> None:
    logger.warning(
        "speech API circuit opened", extra={"failures": failures, "cooldown_s": cooldown_s}
    )


class CircuitBreaker:
    """Per container: after `failures` calls in a row ended in a 5xx, a timeout or a connection
    error (after the client's own retries), stop calling for `cooldown_s`; then let one trial
    call through, which closes the circuit on success and reopens it on failure.

    The same rules as RedisCircuitBreaker, kept in memory: the fallback while Redis cannot be
    reached (the breaker must keep working when Redis is the thing that is down), and the
    breaker itself where no Redis is configured."""

    def __init__(self, failures: int, cooldown_s: float, clock: Clock = time.monotonic) -> None:
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until: float | None = None
        self._trial_running = False

    def before_call(self) -> None:
        """Raises SpeechBackPressure while the circuit is open."""
        with self._lock:
            if self._open_until is None:
                return
            left = self._open_until - self._clock()
            if left <= 0 and not self._trial_running:
                self._trial_running = True  # half open: this call is the trial
                return
            raise _circuit_open(left, self._cooldown_s)

    def record(self, *, failed: bool) -> None:
        with self._lock:
            self._trial_running = False
            if not failed:
                self._failures, self._open_until = 0, None
                return
            self._failures += 1
            if self._open_until is not None or self._failures >= self._threshold:
                self._open_until = self._clock() + self._cooldown_s
                _log_opened(self._failures, self._cooldown_s)

    def release(self) -> None:
        with self._lock:
            self._trial_running = False

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None


# KEYS: the state hash, the trial marker. ARGV: this container's token, the trial lease (ms).
# Returns {1} to call, or {0, ms left of the cool-down} (<= 0: half open, the trial elsewhere).
_BEFORE_CALL = """
local open_until = redis.call('HGET', KEYS[1], 'open_until')
if not open_until then
  return {1}
end
local t = redis.call('TIME')
local left = tonumber(open_until) - (t[1] * 1000 + math.floor(t[2] / 1000))
if left <= 0 and redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1}
end
return {0, left}
"""

# KEYS: the state hash, the trial marker. ARGV: 'failed' or 'ok', this container's token, the
# threshold, the cool-down (ms), the state's expiry (ms). Returns the failures in a row if this
# failure (re)opened the circuit, else 0.
_RECORD = """
if ARGV[1] == 'ok' then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 0
end
-- Only the trial's own failure frees the trial: a late failure of a call that started before
-- the circuit opened reopens it, but the trial running meanwhile still decides.
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local opened = 0
if redis.call('HEXISTS', KEYS[1], 'open_until') == 1 or failures >= tonumber(ARGV[3]) then
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  redis.call('HSET', KEYS[1], 'open_until', now + tonumber(ARGV[4]))
  opened = failures
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return opened
"""

# KEYS: the trial marker. ARGV: this container's token. Ends this container's trial, if any.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisCircuitBreaker:
    """The circuit breaker's rules (see CircuitBreaker) on one state in Redis that every
    container shares (see the module docstring). Raises redis.RedisError.

    After the cool-down exactly one call fleet-wide is the trial: the container that takes it
    sets a marker that expires after `trial_lease_s`, so that a trial whose container died
    lets another container try. A success anywhere closes the circuit for every container."""

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        *,
        failures: int,
        cooldown_s: float,
        trial_lease_s: float,
    ) -> None:
        self._redis = client
        self._state_key = f"{namespace}:speech:breaker"
        self._trial_key = f"{namespace}:speech:breaker:trial"
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._cooldown_ms = max(1, round(cooldown_s * 1000))
        self._trial_ms = max(1, round(trial_lease_s * 1000))
        # A failure count left over from long ago must not count towards today's threshold.
        self._expiry_ms = max(86_400_000, 2 * self._cooldown_ms)
        # Marks this container's trial. One per container, not per call: a Lambda container
        # runs one call at a time, so its failure is the trial's if it holds the marker.
        self._token = uuid.uuid4().hex
        self._before_call = client.register_script(_BEFORE_CALL)
        self._record = client.register_script(_RECORD)
        self._release = client.register_script(_RELEASE)

    def before_call(self) -> None:
        answer = self._before_call(
            keys=[self._state_key, self._trial_key], args=[self._token, self._trial_ms]
        )
        if not answer[0]:
            raise _circuit_open(int(answer[1]) / 1000, self._cooldown_s)

    def record(self, *, failed: bool) -> None:
        args: list[str | int] = [
            "failed" if failed else "ok",
            self._token,
            self._threshold,
            self._cooldown_ms,
            self._expiry_ms,
        ]
        opened = int(self._record(keys=[self._state_key, self._trial_key], args=args))
        if opened:
            _log_opened(opened, self._cooldown_s)

    def release(self) -> None:
        self._release(keys=[self._trial_key], args=[self._token])

    @property
    def is_open(self) -> bool:
        return bool(self._redis.hexists(self._state_key, "open_until"))


class FleetBreaker:
    """The shared circuit when Redis answers, else this container's (see the module docstring).
    Each outcome goes to the breaker that let its call through, so that a trial taken on the
    local breaker is also ended there."""

    def __init__(
        self,
        shared: Breaker,
        local: CircuitBreaker,
        *,
        redis_cooldown_s: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._shared = shared
        self._local = local
        self._cooldown_s = redis_cooldown_s
        self._clock = clock
        self._shared_down_until = float("-inf")
        self._call = threading.local()  # .breaker: the one that let this thread's call through

    def _backend(self) -> Breaker:
        return self._local if self._clock() < self._shared_down_until else self._shared

    def _shared_failed(self, exc: redis.RedisError) -> None:
        self._shared_down_until = self._clock() + self._cooldown_s
        logger.warning(
            "speech API circuit breaker: Redis unreachable, breaking per container",
            extra={"error": str(exc), "retry_redis_in_s": self._cooldown_s},
        )

    def before_call(self) -> None:
        backend = self._backend()
        try:
            backend.before_call()
        except redis.RedisError as exc:
            self._shared_failed(exc)
            backend = self._local
            backend.before_call()
        self._call.breaker = backend

    def record(self, *, failed: bool) -> None:
        backend: Breaker = getattr(self._call, "breaker", None) or self._backend()
        try:
            backend.record(failed=failed)
        except redis.RedisError as exc:
            self._shared_failed(exc)
            self._local.record(failed=failed)

    def release(self) -> None:
        backend: Breaker = getattr(self._call, "breaker", None) or self._backend()
        try:
            backend.release()
        except redis.RedisError as exc:
            self._shared_failed(exc)  # the trial marker expires by itself

    @property
    def is_open(self) -> bool:
        try:
            return self._backend().is_open
        except redis.RedisError as exc:
            self._shared_failed(exc)
            return self._local.is_open


def circuit_breaker(
    client: redis.Redis | None,
    namespace: str,
    *,
    failures: int,
    cooldown_s: float,
    trial_lease_s: float,
    redis_cooldown_s: float,
) -> Breaker:
    """The speech API's circuit breaker: shared through `client` (falling back to this
    container's while Redis is unreachable), or this container's alone without Redis."""
    local = CircuitBreaker(failures, cooldown_s)
    if client is None:
        return local
    shared = RedisCircuitBreaker(
        client, namespace, failures=failures, cooldown_s=cooldown_s, trial_lease_s=trial_lease_s
    )
    return FleetBreaker(shared, local, redis_cooldown_s=redis_cooldown_s)


class BreakingTranscriber:
    """Calls `inner` only while the circuit is closed (or for the half-open trial)."""

    def __init__(self, inner: Transcriber, breaker: Breaker) -> None:
        self._inner = inner
        self._breaker = breaker

    def transcribe(
        self,
        audio: bytes,
        filename: str,
        *,
        language: str | None,
        prompt: str | None = None,
        remaining_s: float | None = None,
    ) -> Transcription:
        self._breaker.before_call()
        try:
            result = self._inner.transcribe(
                audio, filename, language=language, prompt=prompt, remaining_s=remaining_s
            )
        except SpeechBackPressure:
            self._breaker.release()  # the API was not called: says nothing about it
            raise
        except TransientSpeechError as exc:
            # 429 is the limiter's business; 5xx, timeouts and connection errors are the API's.
            self._breaker.record(failed=exc.status_code is None or exc.status_code >= 500)
            raise
        except Exception:
            self._breaker.record(failed=False)  # the API answered (4xx): it is up
            raise
        self._breaker.record(failed=False)
        return result
