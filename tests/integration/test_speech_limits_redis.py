"""The fleet-wide speech API limit and circuit breaker on the real Redis (127.0.0.1:6379):
several limiters (as several containers would have) share one limit, dead workers' leases
expire, 429s cut it; several breakers share one circuit with one trial call fleet-wide."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterator

import pytest
import redis
from sttpipe_testing.audio import tone
from sttpipe_testing.fakes import FakeTranscriber

from sttpipe.adapters.redis_connection import redis_client
from sttpipe.audio import encode_flac
from sttpipe.domain.models import SpeechCapacity
from sttpipe.speech.base import (
    AuthenticationError,
    PermanentSpeechError,
    SpeechBackPressure,
    TransientSpeechError,
    priority_scope,
)
from sttpipe.speech.breaker import Breaker, BreakingTranscriber, circuit_breaker
from sttpipe.speech.fleet_limit import FleetLimiter, LimitPolicy, LocalSlots, RedisSlots
from sttpipe.speech.latency import FleetSpeechCapacity, LatencyLog
from sttpipe.speech.metered import MeteredTranscriber
from sttpipe.speech.redis_fallback import speech_key
from tests.unit.test_speech_limits import dead_redis

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"test-limits-{secrets.token_hex(4)}"
    client = redis_client(URL, 2.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis on {URL}: {exc}")
    yield name
    keys = ("leases", "limit", "waiters", "waiters-seen", "breaker", "breaker:trial")
    client.delete(*(speech_key(name, k) for k in keys))
    client.close()


def _container(namespace: str, policy: LimitPolicy) -> tuple[RedisSlots, FleetLimiter]:
    shared = RedisSlots(redis_client(URL, 2.0), namespace, policy)
    return shared, FleetLimiter(shared, LocalSlots(policy), poll_s=0.005)


def test_containers_share_one_limit(namespace: str) -> None:
    policy = LimitPolicy(max_limit=3)
    containers = [_container(namespace, policy)[1] for _ in range(4)]
    lock = threading.Lock()
    in_flight = peak = 0

    def call(limiter: FleetLimiter) -> None:
        nonlocal in_flight, peak
        for _ in range(5):
            with limiter.slot(30):
                with lock:
                    in_flight += 1
                    peak = max(peak, in_flight)
                threading.Event().wait(0.005)
                with lock:
                    in_flight -= 1

    # Two threads per container: eight callers, three slots.
    threads = [threading.Thread(target=call, args=(c,)) for c in containers * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3


def test_a_dead_workers_lease_expires(namespace: str) -> None:
    shared, _ = _container(namespace, LimitPolicy(max_limit=1, lease_s=0.2))
    assert shared.try_acquire("dead-worker", 1)  # never released
    assert not shared.try_acquire("other", 1)
    threading.Event().wait(0.3)
    assert shared.try_acquire("other", 1)
    assert shared.in_flight() == 1


def test_429s_cut_the_shared_limit_and_successes_restore_it(namespace: str) -> None:
    policy = LimitPolicy(max_limit=4, min_limit=1, hold_s=60)
    shared, limiter = _container(namespace, policy)
    other, _ = _container(namespace, policy)
    assert shared.feedback(throttled=True) == 2.0
    assert other.feedback(throttled=True) == 2.0  # the same burst, seen by another container
    assert other.try_acquire("a", 1) and other.try_acquire("b", 1)
    assert not shared.try_acquire("c", 1)  # the cut limit holds across containers
    other.release("a")
    other.release("b")
    for _ in range(10):
        limiter.feedback(throttled=False)
    assert shared.feedback(throttled=False) == 4.0


def test_a_free_slot_goes_to_the_highest_priority_waiter(namespace: str) -> None:
    shared, _ = _container(namespace, LimitPolicy(max_limit=1, stale_waiter_s=1.0))
    assert shared.try_acquire("busy", 1)
    assert not shared.try_acquire("low", 2)
    assert not shared.try_acquire("high", 0)
    shared.release("busy")
    assert not shared.try_acquire("low", 2)  # waited longer, but high is ahead of it
    assert shared.try_acquire("high", 0)
    shared.release("high")
    assert shared.try_acquire("low", 2)


def test_a_free_slot_goes_to_the_tenant_holding_the_fewest(namespace: str) -> None:
    """Fair share: a tenant's backlog of waiters does not hold every slot against another's."""
    shared, _ = _container(namespace, LimitPolicy(max_limit=2, stale_waiter_s=5.0))
    assert shared.try_acquire("a1@flood", 1) and shared.try_acquire("a2@flood", 1)
    for n in range(3, 7):  # the flood's backlog waits first
        assert not shared.try_acquire(f"a{n}@flood", 1)
    assert not shared.try_acquire("b1@quiet", 1)
    shared.release("a1@flood")
    assert not shared.try_acquire("a3@flood", 1)  # waited longest, but its tenant holds one
    assert shared.try_acquire("b1@quiet", 1)
    shared.release("a2@flood")
    assert shared.try_acquire("a3@flood", 1)  # one each now: then by arrival


def test_without_fair_share_the_longest_waiter_is_served_first(namespace: str) -> None:
    shared, _ = _container(namespace, LimitPolicy(max_limit=1, fair_share=False))
    assert shared.try_acquire("a1@flood", 1)
    assert not shared.try_acquire("a2@flood", 1)
    assert not shared.try_acquire("b1@quiet", 1)
    shared.release("a1@flood")
    assert not shared.try_acquire("b1@quiet", 1)
    assert shared.try_acquire("a2@flood", 1)


def test_a_quiet_tenants_calls_pass_a_flooding_tenants_backlog(namespace: str) -> None:
    """Eight callers of one tenant flood two slots; a second tenant's three calls, asked for
    after the whole flood, are each served before the flood's next ones, not after them."""
    policy = LimitPolicy(max_limit=2, stale_waiter_s=5.0)
    started: list[str] = []
    lock = threading.Lock()

    def call(tenant: str, n: int, limiter: FleetLimiter) -> None:
        with priority_scope(1, tenant), limiter.slot(30):
            with lock:
                started.append(tenant)
            threading.Event().wait(0.05)

    flood = [
        threading.Thread(target=call, args=("flood", n, _container(namespace, policy)[1]))
        for n in range(8)
    ]
    for t in flood:
        t.start()
    for _ in range(1000):  # until the flood holds both slots and six of it wait
        if len(started) == 2:
            break
        threading.Event().wait(0.005)
    quiet = [
        threading.Thread(target=call, args=("quiet", n, _container(namespace, policy)[1]))
        for n in range(3)
    ]
    for t in quiet:
        t.start()
    for t in flood + quiet:
        t.join()
    # Each quiet call gets one of the next slots to free: within the first 2 + 2 * 3 starts.
    assert max(i for i, tenant in enumerate(started) if tenant == "quiet") < 2 + 2 * 3
    assert started[-1] == "flood"


def test_a_waiter_that_stopped_asking_does_not_block_the_queue(namespace: str) -> None:
    shared, _ = _container(namespace, LimitPolicy(max_limit=1, stale_waiter_s=1.0))
    assert shared.try_acquire("busy", 1)
    assert not shared.try_acquire("died-waiting", 0)
    shared.release("busy")
    assert not shared.try_acquire("low", 2)
    threading.Event().wait(1.1)
    assert shared.try_acquire("low", 2)


def _breaker(
    namespace: str,
    *,
    failures: int = 1,
    cooldown_s: float = 30.0,
    trial_lease_s: float = 30.0,
    client: redis.Redis | None = None,
) -> Breaker:
    """One container's breaker, as bootstrap builds it (on the real Redis unless `client`)."""
    return circuit_breaker(
        client or redis_client(URL, 2.0),
        namespace,
        failures=failures,
        cooldown_s=cooldown_s,
        trial_lease_s=trial_lease_s,
        redis_cooldown_s=60,
    )


def _call(breaking: BreakingTranscriber) -> str:
    return breaking.transcribe(b"x", "a.flac", language=None).text


def _failure(status: int | None) -> TransientSpeechError:
    return TransientSpeechError("boom", status_code=status)


def test_failures_in_two_containers_open_the_circuit_for_both(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    first, second = _breaker(namespace, failures=2), _breaker(namespace, failures=2)
    first_api = FakeTranscriber([_failure(503)], default="ok")
    second_api = FakeTranscriber([_failure(None)], default="ok")  # a timeout
    with pytest.raises(TransientSpeechError):
        _call(BreakingTranscriber(first_api, first))
    assert not second.is_open
    with pytest.raises(TransientSpeechError):
        _call(BreakingTranscriber(second_api, second))
    assert first.is_open and second.is_open
    for api, breaker in ((first_api, first), (second_api, second)):
        with pytest.raises(SpeechBackPressure) as deferred:
            _call(BreakingTranscriber(api, breaker))
        assert deferred.value.retry_after_s == pytest.approx(30, abs=1)
        assert len(api.calls) == 1  # the second call never reached the API
    # Logged by the container that opened it only.
    assert sum(r.getMessage() == "speech API circuit opened" for r in caplog.records) == 1


def test_a_key_refused_in_one_container_pauses_every_container(namespace: str) -> None:
    first, second = _breaker(namespace, failures=5), _breaker(namespace, failures=5)
    refused = AuthenticationError("HTTP 403: forbidden", status_code=403)
    with pytest.raises(SpeechBackPressure):
        _call(BreakingTranscriber(FakeTranscriber([refused]), first))
    assert second.is_open
    other_api = FakeTranscriber(default="ok")
    with pytest.raises(SpeechBackPressure) as deferred:
        _call(BreakingTranscriber(other_api, second))
    assert deferred.value.retry_after_s == pytest.approx(30, abs=1)
    assert other_api.calls == []


def _half_open(namespace: str, trial_lease_s: float = 30.0) -> tuple[Breaker, Breaker]:
    """Two containers' breakers after one failure opened the circuit and its 0.2 s passed."""
    first, second = (
        _breaker(namespace, cooldown_s=0.2, trial_lease_s=trial_lease_s) for _ in range(2)
    )
    first.before_call()
    first.record(failed=True)
    threading.Event().wait(0.25)
    return first, second


def test_after_the_cool_down_one_trial_fleet_wide_and_its_failure_reopens(
    namespace: str,
) -> None:
    first, second = _half_open(namespace)
    first.before_call()  # the trial
    for breaker in (second, first):  # nobody else, not even the same container again
        with pytest.raises(SpeechBackPressure) as deferred:
            breaker.before_call()
        assert deferred.value.retry_after_s == pytest.approx(0.02)  # a tenth of the cool-down
    first.record(failed=True)
    with pytest.raises(SpeechBackPressure) as deferred:
        second.before_call()
    assert deferred.value.retry_after_s == pytest.approx(0.2, abs=0.05)  # a fresh cool-down
    threading.Event().wait(0.25)
    second.before_call()  # the failed trial freed the marker: the next trial may start


def test_a_trial_that_succeeds_closes_the_circuit_for_every_container(namespace: str) -> None:
    first, second = (_breaker(namespace, failures=2, cooldown_s=0.2) for _ in range(2))
    for breaker in (first, second):
        breaker.before_call()
        breaker.record(failed=True)
    threading.Event().wait(0.25)
    api = FakeTranscriber(default="back")
    assert _call(BreakingTranscriber(api, second)) == "back"  # the trial
    assert not first.is_open and not second.is_open
    first.before_call()
    first.record(failed=True)
    assert not first.is_open  # the count started again from zero
    first.before_call()
    first.record(failed=True)
    threading.Event().wait(0.25)
    first.before_call()  # the next trial: the success freed the last one's marker


def test_a_dead_trial_holder_does_not_keep_the_circuit_half_open(namespace: str) -> None:
    first, second = _half_open(namespace, trial_lease_s=0.3)
    first.before_call()  # the trial, and then this container dies
    with pytest.raises(SpeechBackPressure):
        second.before_call()
    threading.Event().wait(0.35)
    second.before_call()  # the marker expired: another trial


def test_a_trial_that_got_no_slot_lets_another_container_try_and_leaves_it_open(
    namespace: str,
) -> None:
    first, second = _half_open(namespace)
    no_slot = FakeTranscriber([SpeechBackPressure("no slot free", retry_after_s=0.1)])
    with pytest.raises(SpeechBackPressure):
        _call(BreakingTranscriber(no_slot, first))  # the trial never reached the API
    assert first.is_open and second.is_open  # which says nothing about the API
    second.before_call()  # the next trial


def test_a_late_failure_elsewhere_does_not_free_the_running_trial(namespace: str) -> None:
    first, second = _breaker(namespace, cooldown_s=0.2), _breaker(namespace, cooldown_s=0.2)
    second.before_call()  # a call that will fail late, after the circuit opened
    first.before_call()
    first.record(failed=True)
    threading.Event().wait(0.25)
    first.before_call()  # the trial
    second.record(failed=True)  # reopens the circuit...
    threading.Event().wait(0.25)
    with pytest.raises(SpeechBackPressure):
        second.before_call()  # ...but the trial still runs and decides
    first.record(failed=False)
    assert not second.is_open
    second.before_call()


def test_429s_and_client_errors_do_not_count(namespace: str) -> None:
    first, second = _breaker(namespace), _breaker(namespace)
    first_api = FakeTranscriber([_failure(429)], default="ok")
    second_api = FakeTranscriber([PermanentSpeechError("bad", status_code=400), _failure(502)])
    with pytest.raises(TransientSpeechError):
        _call(BreakingTranscriber(first_api, first))
    with pytest.raises(PermanentSpeechError):
        _call(BreakingTranscriber(second_api, second))
    assert not first.is_open and not second.is_open
    with pytest.raises(TransientSpeechError):
        _call(BreakingTranscriber(second_api, second))  # a 5xx does, and opens it for both
    with pytest.raises(SpeechBackPressure):
        _call(BreakingTranscriber(first_api, first))
    assert len(first_api.calls) == 1


def test_without_redis_a_container_breaks_alone_and_warns(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    fleet = _breaker(namespace)
    cut_off, other_cut_off = (_breaker(namespace, client=dead_redis()) for _ in range(2))
    fleet.before_call()
    fleet.record(failed=True)
    assert fleet.is_open
    api = FakeTranscriber([_failure(503)], default="ok")
    with pytest.raises(TransientSpeechError):  # it cannot see the fleet's open circuit...
        _call(BreakingTranscriber(api, cut_off))
    with pytest.raises(SpeechBackPressure):  # ...but its own failure opens its own
        _call(BreakingTranscriber(api, cut_off))
    assert len(api.calls) == 1
    other_cut_off.before_call()  # which is not shared either
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 2  # once per cut-off container, then not during the cool-down


def test_the_fleet_learns_the_apis_latency_and_sizes_by_its_current_limit(namespace: str) -> None:
    """Workers' calls recorded in Redis (by MeteredTranscriber) give the model every splitter
    sizes by; a 429 somewhere lowers the limit it plans waves for."""
    policy = LimitPolicy(max_limit=4, hold_s=0)
    prior = SpeechCapacity(fixed_s=0.5, per_audio_s=0.01, tail=1.0, limit=4)
    _, limiter = _container(namespace, policy)
    log = LatencyLog(redis_client(URL, 2.0), namespace)
    gauge = FleetSpeechCapacity(log, limiter, prior)
    try:
        assert gauge.estimate() == prior  # nothing measured yet
        speech = FakeTranscriber(default="words")
        worker = MeteredTranscriber(
            speech, lambda *_: None, LatencyLog(redis_client(URL, 2.0), namespace)
        )
        for seconds in (2.0, 6.0, 12.0) * 4:
            worker.transcribe(encode_flac(tone(seconds)), "c.flac", language="en")
        limiter.feedback(throttled=True)  # a 429: 4 -> 2

        measured = gauge.estimate()

        assert len(log.samples()) == 12
        assert measured.limit == 2 and measured.fixed_s < 0.5 and measured.tail >= 1.0
    finally:
        redis_client(URL, 2.0).delete(speech_key(namespace, "latency"))
