"""The container's one Redis client, shared by the cache (L2), the fleet's speech limit, the
circuit breaker and the latency log: on a single Redis, or on a Redis Cluster (ElastiCache
Serverless is always one; STT_REDIS_CLUSTER)."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

# The container's one client: on a single Redis, or on a Redis Cluster.
RedisClient = redis.Redis | RedisCluster


def redis_client(url: str, timeout_s: float, *, cluster: bool = False) -> RedisClient:
    """A client whose every call fails within about `timeout_s` when Redis is down or slow."""
    if cluster:
        return RedisCluster.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            client_name="sttpipe-cache",
        )
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
        client_name="sttpipe-cache",
    )
