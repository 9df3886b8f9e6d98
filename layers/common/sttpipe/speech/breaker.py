"""A fleet-wide circuit breaker on the speech API, as a Transcriber decorator: the half of the
back-pressure on the speech API that stops calling it while it fails (the other half, the limit on
calls in flight, is sttpipe.speech.fleet_limit).

The circuit breaker lives in Redis. Per container, every one of many Lambda containers would
have to see `failures` failed calls before it stopped calling a broken API, each failure burning
a receive of some chunk, and after each cool-down every container would send its own trial call.
Shared, the first `failures` failures in a row anywhere stop the whole fleet, and one trial call
fleet-wide decides whether it closes. Its state (the failures in a row, the end of the cool-down,
the trial marker) is changed only by Lua scripts timed by Redis's clock, so that containers'
clocks do not matter; the trial marker expires, so that a container dying mid-trial does not keep
the circuit half open.

When Redis cannot be reached, it degrades to the same rules per container instead of stalling
(a Redis outage must not stop transcription), and tries Redis again after a cool-down (see
sttpipe.speech.redis_fallback).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Protocol

import redis
from aws_lambda_powertools import Logger

from sttpipe.adapters.redis_connection import RedisClient
from sttpipe.domain.transcripts import Transcription
from sttpipe.speech.base import (
    AuthenticationError,
    SpeechBackPressure,
    Transcriber,
    TransientSpeechError,
)
from sttpipe.speech.redis_fallback import Clock, RedisOrLocal, speech_key

logger = Logger(child=True)


class Breaker(Protocol):
    """A circuit breaker: after repeated failures of the API, calls are held back for a while."""

    def before_call(self) -> None:
        """Raises SpeechBackPressure while the circuit is open (or another call is the trial)."""
        ...

    def record(self, *, failed: bool, at_once: bool = False) -> None:
        """The outcome of a call before_call let through: `failed` if the API is to blame;
        `at_once` for a failure no retry cures (the key was refused), which opens the circuit
        now whatever the count."""
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

    def record(self, *, failed: bool, at_once: bool = False) -> None:
        with self._lock:
            self._trial_running = False
            if not (failed or at_once):
                self._failures, self._open_until = 0, None
                return
            self._failures += 1
            if at_once or self._open_until is not None or self._failures >= self._threshold:
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

# KEYS: the state hash, the trial marker. ARGV: 'failed', 'fatal' (open now) or 'ok', this
# container's token, the threshold, the cool-down (ms), the state's expiry (ms). Returns the
# failures in a row if this failure (re)opened the circuit, else 0.
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
if ARGV[1] == 'fatal' or redis.call('HEXISTS', KEYS[1], 'open_until') == 1
    or failures >= tonumber(ARGV[3]) then
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
        client: RedisClient,
        namespace: str,
        *,
        failures: int,
        cooldown_s: float,
        trial_lease_s: float,
    ) -> None:
        self._redis = client
        self._state_key = speech_key(namespace, "breaker")
        self._trial_key = speech_key(namespace, "breaker:trial")
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

    def record(self, *, failed: bool, at_once: bool = False) -> None:
        args: list[str | int] = [
            "fatal" if at_once else "failed" if failed else "ok",
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
        self._breakers = RedisOrLocal[Breaker](
            shared,
            local,
            cooldown_s=redis_cooldown_s,
            warning="speech API circuit breaker: Redis unreachable, breaking per container",
            clock=clock,
        )
        self._call = threading.local()  # .breaker: the one that let this thread's call through

    def before_call(self) -> None:
        backend = self._breakers.current()
        try:
            backend.before_call()
        except redis.RedisError as exc:
            self._breakers.failed(exc)
            backend = self._breakers.local
            backend.before_call()
        self._call.breaker = backend

    def record(self, *, failed: bool, at_once: bool = False) -> None:
        backend: Breaker = getattr(self._call, "breaker", None) or self._breakers.current()
        try:
            backend.record(failed=failed, at_once=at_once)
        except redis.RedisError as exc:
            self._breakers.failed(exc)
            self._breakers.local.record(failed=failed, at_once=at_once)

    def release(self) -> None:
        backend: Breaker = getattr(self._call, "breaker", None) or self._breakers.current()
        try:
            backend.release()
        except redis.RedisError as exc:
            self._breakers.failed(exc)  # the trial marker expires by itself

    @property
    def is_open(self) -> bool:
        try:
            return self._breakers.current().is_open
        except redis.RedisError as exc:
            self._breakers.failed(exc)
            return self._breakers.local.is_open


def circuit_breaker(
    client: RedisClient | None,
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
        except AuthenticationError as exc:
            # Every call would be refused until someone fixes the key: pause the fleet (the
            # trial after each cool-down finds out when it is fixed) and hand the chunk back
            # unspent, instead of failing it and every chunk after it.
            self._breaker.record(failed=True, at_once=True)
            logger.error("speech API refused the key; fleet paused", extra={"error": str(exc)})
            raise SpeechBackPressure(f"speech API refused the key: {exc}") from exc
        except TransientSpeechError as exc:
            # 429 is the limiter's business; 5xx, timeouts and connection errors are the API's.
            self._breaker.record(failed=exc.status_code is None or exc.status_code >= 500)
            raise
        except Exception:
            self._breaker.record(failed=False)  # the API answered (4xx): it is up
            raise
        self._breaker.record(failed=False)
        return result
