"""Everything the fleet keeps in Redis, on a real Redis Cluster (ElastiCache Serverless is
always cluster mode): the speech limit's and the breaker's Lua scripts keep their keys in one
slot (a hash tag), and the cache's multi-key reads and deletes cross slots safely."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from sttpipe_testing.redis_cluster import LocalRedisCluster, running_cluster

from sttpipe.cache import CacheKey, EntryKind, KeyParams
from sttpipe.cache.factory import redis_for
from sttpipe.cache.redis import RedisCache
from sttpipe.config import Settings
from sttpipe.speech.breaker import circuit_breaker
from sttpipe.speech.fleet_limit import FleetLimiter, LimitPolicy, LocalSlots, RedisSlots
from sttpipe.speech.latency import LatencyLog


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    yield from running_cluster()


@pytest.fixture
def client(cluster: LocalRedisCluster) -> Iterator[RedisCluster]:
    made = cluster.client()
    yield made
    made.close()


def test_stt_redis_cluster_makes_the_containers_client_a_cluster_client(
    cluster: LocalRedisCluster,
) -> None:
    made = redis_for(Settings(redis_url=SecretStr(cluster.url), redis_cluster=True))
    assert isinstance(made, RedisCluster) and made.ping()
    made.close()


@pytest.fixture
def namespace() -> str:
    return f"test-cluster-{secrets.token_hex(4)}"


def test_the_speech_limit_is_shared_and_fair_on_a_cluster(
    client: RedisCluster, namespace: str
) -> None:
    policy = LimitPolicy(max_limit=2, stale_waiter_s=5.0)
    slots = RedisSlots(client, namespace, policy)
    assert slots.try_acquire("a1@flood", 1) and slots.try_acquire("a2@flood", 1)
    assert not slots.try_acquire("a3@flood", 1) and not slots.try_acquire("b1@quiet", 1)
    slots.release("a1@flood")
    assert not slots.try_acquire("a3@flood", 1) and slots.try_acquire("b1@quiet", 1)
    assert slots.feedback(throttled=True) == 1.0
    limiter = FleetLimiter(slots, LocalSlots(policy), poll_s=0.005)
    assert limiter.current_limit() == 1.0


def test_the_circuit_opens_for_the_fleet_on_a_cluster(client: RedisCluster, namespace: str) -> None:
    here, there = (
        circuit_breaker(
            client,
            namespace,
            failures=1,
            cooldown_s=30,
            trial_lease_s=30,
            redis_cooldown_s=60,
        )
        for _ in range(2)
    )
    here.before_call()
    here.record(failed=True)
    assert there.is_open


def test_latency_samples_are_kept_on_a_cluster(client: RedisCluster, namespace: str) -> None:
    log = LatencyLog(client, namespace)
    log.record(30.0, 1.2)
    assert log.samples() == [(30.0, 1.2)]


def test_cache_entries_across_slots_are_read_and_deleted_on_a_cluster(
    client: RedisCluster, namespace: str
) -> None:
    cache = RedisCache(client, namespace, ttl_s=60)
    params = KeyParams(namespace, "tenant", "model", "en", None, "json", "1")
    entries = {CacheKey.build(EntryKind.CHUNK, f"{n:064x}", params): b"v%d" % n for n in range(20)}
    cache.set_many(entries)
    assert cache.get_many(list(entries)) == entries  # twenty keys, spread over the slots
    assert cache.add_new(entries) == 0
    cache.delete_many(list(entries)[:5])
    assert len(cache.get_many(list(entries))) == 15
    assert cache.delete_matching(model="model") == 15
    assert cache.get_many(list(entries)) == {}
    cache.bump_generation()
    assert cache.generation() >= 1
    cache.drop_namespace()


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[LocalRedisCluster]:
    yield from running_cluster(tls=True)


def test_the_stacks_cache_endpoint_is_a_cluster_reached_over_verified_tls(
    tls_cluster: LocalRedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The template's STT_REDIS_ENDPOINT/STT_REDIS_CLUSTER for the created ElastiCache Serverless
    # cache, which speaks only TLS with a certificate the system store trusts: here the test
    # CA stands in for the store (SSL_CERT_FILE).
    settings = Settings(redis_endpoint=f"127.0.0.1:{tls_cluster.ports[0]}", redis_cluster=True)
    monkeypatch.setenv("SSL_CERT_FILE", tls_cluster.ca_file)
    made = redis_for(settings)
    assert isinstance(made, RedisCluster)
    cache = RedisCache(made, f"test-tls-{secrets.token_hex(4)}", ttl_s=60)
    params = KeyParams("tls", "tenant", "model", "en", None, "json", "1")
    entries = {CacheKey.build(EntryKind.CHUNK, f"{n:064x}", params): b"v%d" % n for n in range(9)}
    cache.set_many(entries)
    assert cache.get_many(list(entries)) == entries  # through every node
    cache.drop_namespace()
    made.close()
    # A server whose certificate the store does not trust is refused, never used unverified.
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(RedisClusterException, match="CERTIFICATE_VERIFY_FAILED"):
        redis_for(settings)
