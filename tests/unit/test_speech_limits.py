"""The per-container halves of the speech API back-pressure: AIMD slots, the circuit breaker,
and the limiter's and breaker's fall-back when Redis cannot be reached (a real client on a closed
port, or a stand-in that fails on demand)."""

from __future__ import annotations

import logging
import socket
import threading

import pytest
import redis
from sttpipe_testing.fakes import FakeTranscriber

from sttpipe.adapters.redis_connection import redis_client
from sttpipe.speech.base import AuthenticationError, SpeechBackPressure, TransientSpeechError
from sttpipe.speech.breaker import (
    BreakingTranscriber,
    CircuitBreaker,
    FleetBreaker,
    circuit_breaker,
)
from sttpipe.speech.fleet_limit import (
    FleetLimiter,
    LimitedTranscriber,
    LimitPolicy,
    LocalSlots,
    RedisSlots,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_local_slots_cut_on_429_once_per_hold_and_recover_slowly() -> None:
    clock = Clock()
    slots = LocalSlots(LimitPolicy(max_limit=8, min_limit=1, hold_s=2.0), clock)
    assert slots.feedback(throttled=True) == 4.0
    assert slots.feedback(throttled=True) == 4.0  # same burst: one cut
    clock.now += 2.0
    assert slots.feedback(throttled=True) == 2.0
    for _ in range(3):
        clock.now += 2.0
        slots.feedback(throttled=True)
    assert slots.feedback(throttled=False) == pytest.approx(2.0)  # floor 1, then +1/1
    # Additive increase: about one slot per `limit` successes, never above the maximum.
    successes = 0
    while slots.feedback(throttled=False) < 8:
        successes += 1
    assert 20 < successes < 40
    assert slots.feedback(throttled=False) == 8


def test_local_slots_hold_the_limit() -> None:
    slots = LocalSlots(LimitPolicy(max_limit=2))
    assert slots.try_acquire("a", 1) and slots.try_acquire("b", 1)
    assert not slots.try_acquire("c", 1)
    slots.release("a")
    assert slots.try_acquire("c", 1)


def test_limiter_refuses_after_its_wait_and_never_calls_the_api() -> None:
    limiter = FleetLimiter(None, LocalSlots(LimitPolicy(max_limit=1)), poll_s=0.01)
    api = FakeTranscriber(default="hello")
    limited = LimitedTranscriber(api, limiter, max_wait_s=0.05)
    with limiter.slot(0), pytest.raises(SpeechBackPressure) as raised:
        limited.transcribe(b"x", "a.flac", language="en")
    assert raised.value.attempts == 0
    assert api.calls == []
    assert limited.transcribe(b"x", "a.flac", language="en").text == "hello"


def dead_redis() -> redis.Redis:
    """A real client of a Redis that is not there: every call fails at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return redis_client(f"redis://127.0.0.1:{port}/0", 0.2)


def test_limiter_degrades_to_the_container_when_redis_is_down() -> None:
    policy = LimitPolicy(max_limit=2)
    dead = RedisSlots(dead_redis(), "t", policy)
    limiter = FleetLimiter(dead, LocalSlots(policy), poll_s=0.01, redis_cooldown_s=60)
    api = FakeTranscriber(default="ok")
    limited = LimitedTranscriber(api, limiter, max_wait_s=1)
    assert limited.transcribe(b"x", "a.flac", language="en").text == "ok"
    limiter.feedback(throttled=True)  # no exception: the local limit is cut instead
    # The local limit (now 1) is what holds.
    with limiter.slot(0), pytest.raises(SpeechBackPressure):
        limited.transcribe(b"x", "a.flac", language="en")
    assert len(api.calls) == 1


def test_limited_calls_never_exceed_the_limit_across_threads() -> None:
    limiter = FleetLimiter(None, LocalSlots(LimitPolicy(max_limit=3)), poll_s=0.005)
    lock = threading.Lock()
    in_flight = peak = 0

    class Counting(FakeTranscriber):
        def transcribe(self, *args: object, **kwargs: object):
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            try:
                threading.Event().wait(0.01)
                return super().transcribe(*args, **kwargs)  # type: ignore[arg-type]
            finally:
                with lock:
                    in_flight -= 1

    limited = LimitedTranscriber(Counting(default="x"), limiter, max_wait_s=30)
    threads = [
        threading.Thread(target=limited.transcribe, args=(b"x", "a"), kwargs={"language": None})
        for _ in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3


def _failure(status: int | None) -> TransientSpeechError:
    return TransientSpeechError("boom", status_code=status)


def test_breaker_opens_after_consecutive_failures_then_lets_one_trial_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=2, cooldown_s=30, clock=clock)
    api = FakeTranscriber([_failure(503), _failure(None), _failure(503)], default="back")
    breaking = BreakingTranscriber(api, breaker)
    for _ in range(2):
        with pytest.raises(TransientSpeechError):
            breaking.transcribe(b"x", "a", language=None)
    with pytest.raises(SpeechBackPressure) as raised:
        breaking.transcribe(b"x", "a", language=None)
    assert raised.value.retry_after_s == 30
    assert len(api.calls) == 2
    clock.now += 30
    with pytest.raises(TransientSpeechError):  # the trial fails: open again at once
        breaking.transcribe(b"x", "a", language=None)
    with pytest.raises(SpeechBackPressure):
        breaking.transcribe(b"x", "a", language=None)
    clock.now += 30
    assert breaking.transcribe(b"x", "a", language=None).text == "back"
    assert not breaker.is_open
    assert len(api.calls) == 4


def test_a_trial_that_got_no_slot_neither_closes_the_circuit_nor_blocks_the_next_trial() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_s=30, clock=clock)
    no_slot = SpeechBackPressure("no slot free", retry_after_s=0.1)
    api = FakeTranscriber([_failure(503), no_slot], default="back")
    breaking = BreakingTranscriber(api, breaker)
    with pytest.raises(TransientSpeechError):
        breaking.transcribe(b"x", "a", language=None)
    clock.now += 30
    with pytest.raises(SpeechBackPressure):  # the trial's call found no slot
        breaking.transcribe(b"x", "a", language=None)
    assert breaker.is_open
    assert breaking.transcribe(b"x", "a", language=None).text == "back"  # the next trial
    assert not breaker.is_open


def test_breaker_ignores_429_and_client_errors() -> None:
    breaker = CircuitBreaker(failures=1, cooldown_s=30)
    api = FakeTranscriber([_failure(429)], default="ok")
    breaking = BreakingTranscriber(api, breaker)
    with pytest.raises(TransientSpeechError):
        breaking.transcribe(b"x", "a", language=None)
    assert not breaker.is_open
    assert breaking.transcribe(b"x", "a", language=None).text == "ok"


def test_a_refused_key_pauses_the_fleet_at_once_and_spends_no_chunk() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=5, cooldown_s=30, clock=clock)
    refused = AuthenticationError("HTTP 401: invalid API key", status_code=401)
    api = FakeTranscriber([refused, refused], default="back")
    breaking = BreakingTranscriber(api, breaker)

    # Back-pressure, not a permanent failure: the worker defers the chunk without a receive.
    with pytest.raises(SpeechBackPressure, match="refused the key"):
        breaking.transcribe(b"x", "a", language=None)
    assert breaker.is_open  # after one refusal, not five
    with pytest.raises(SpeechBackPressure):
        breaking.transcribe(b"x", "a", language=None)
    assert len(api.calls) == 1  # the fleet stopped calling

    clock.now += 30
    with pytest.raises(SpeechBackPressure):  # the trial: still refused, paused again
        breaking.transcribe(b"x", "a", language=None)
    clock.now += 30
    assert breaking.transcribe(b"x", "a", language=None).text == "back"  # the key was fixed
    assert not breaker.is_open and len(api.calls) == 3


def _redis_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum("Redis unreachable" in r.getMessage() for r in caplog.records)


def test_breaker_without_redis_is_the_containers_own() -> None:
    breaker = circuit_breaker(
        None, "t", failures=1, cooldown_s=30, trial_lease_s=30, redis_cooldown_s=30
    )
    assert isinstance(breaker, CircuitBreaker)


def test_breaker_degrades_to_the_container_when_redis_is_down_and_tries_it_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    breaker = circuit_breaker(
        dead_redis(), "t", failures=2, cooldown_s=30, trial_lease_s=30, redis_cooldown_s=0.3
    )
    api = FakeTranscriber([_failure(503), _failure(503)], default="ok")
    breaking = BreakingTranscriber(api, breaker)
    for _ in range(2):
        with pytest.raises(TransientSpeechError):
            breaking.transcribe(b"x", "a", language=None)
    assert breaker.is_open  # this container's own count opened it
    with pytest.raises(SpeechBackPressure):
        breaking.transcribe(b"x", "a", language=None)
    assert len(api.calls) == 2
    assert _redis_warnings(caplog) == 1  # Redis is not asked again during its cool-down
    threading.Event().wait(0.35)
    with pytest.raises(SpeechBackPressure):
        breaking.transcribe(b"x", "a", language=None)
    assert _redis_warnings(caplog) == 2


class FlakyShared:
    """Stands in for the Redis breaker: always closed, keeps the outcomes, or is unreachable."""

    def __init__(self) -> None:
        self.down = False
        self.outcomes: list[bool] = []

    def _reach(self) -> None:
        if self.down:
            raise redis.ConnectionError("Redis is down")

    def before_call(self) -> None:
        self._reach()

    def record(self, *, failed: bool, at_once: bool = False) -> None:
        self._reach()
        self.outcomes.append(failed)

    def release(self) -> None:
        self._reach()

    @property
    def is_open(self) -> bool:
        self._reach()
        return False


def test_each_outcome_goes_to_the_breaker_that_let_its_call_through() -> None:
    clock = Clock()
    shared, local = FlakyShared(), CircuitBreaker(failures=1, cooldown_s=30, clock=clock)
    breaker = FleetBreaker(shared, local, redis_cooldown_s=10, clock=clock)
    shared.down = True
    breaker.before_call()
    breaker.record(failed=True)
    assert breaker.is_open and local.is_open
    clock.now += 30
    breaker.before_call()  # Redis is still down: the local trial
    clock.now += 10  # the trial outlasts Redis's cool-down, and Redis is back
    shared.down = False
    breaker.record(failed=False)  # still the local trial's outcome: it closes the local circuit
    assert not local.is_open
    assert shared.outcomes == []
    breaker.before_call()  # through Redis now
    shared.down = True
    breaker.record(failed=True)  # lost on the way to Redis: counted by this container instead
    assert local.is_open
    shared.down = False
    clock.now += 10
    breaker.before_call()  # through Redis again, although the local circuit is open
    breaker.record(failed=False)
    assert shared.outcomes == [False]
    assert local.is_open  # untouched by a call it did not let through
