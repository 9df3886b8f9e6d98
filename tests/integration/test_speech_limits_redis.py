"""The fleet-wide speech API limit on the real Redis (127.0.0.1:6379): several limiters (as
several containers would have) share one limit, dead workers' leases expire, 429s cut it."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator

import pytest
import redis

from sttpipe.cache.redis import redis_client
from sttpipe.speech.limits import FleetLimiter, LimitPolicy, LocalSlots, RedisSlots

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
    client.delete(*(f"{name}:speech:{k}" for k in ("leases", "limit", "waiters", "waiters-seen")))
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


def test_a_waiter_that_stopped_asking_does_not_block_the_queue(namespace: str) -> None:
    shared, _ = _container(namespace, LimitPolicy(max_limit=1, stale_waiter_s=1.0))
    assert shared.try_acquire("busy", 1)
    assert not shared.try_acquire("died-waiting", 0)
    shared.release("busy")
    assert not shared.try_acquire("low", 2)
    threading.Event().wait(1.1)
    assert shared.try_acquire("low", 2)
