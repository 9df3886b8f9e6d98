"""Builds the transcript cache a container uses from Settings (bootstrap calls it once)."""

from __future__ import annotations

from sttpipe.adapters.database import conninfo_from_settings, create_pool
from sttpipe.adapters.redis_connection import RedisClient, SecretCredentials, redis_client
from sttpipe.cache.base import MetricSink, no_metrics
from sttpipe.cache.memory import MemoryCache
from sttpipe.cache.postgres import PostgresCache
from sttpipe.cache.redis import RedisCache
from sttpipe.cache.tiered import TieredCache
from sttpipe.cache.transcripts import TieredTranscriptCache
from sttpipe.config import Settings


def redis_url(settings: Settings) -> str | None:
    """STT_REDIS_URL, else the ElastiCache endpoint over TLS, else None (no L2)."""
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    if settings.redis_endpoint:
        return f"rediss://{settings.redis_endpoint}/0"
    return None


def redis_for(settings: Settings) -> RedisClient | None:
    """A client on the configured Redis (see redis_url), None without one. A container makes
    one and shares it: the cache, the fleet limit and the circuit breaker all use it."""
    url = redis_url(settings)
    if not url:
        return None
    secret_id = settings.redis_auth_secret_id
    return redis_client(
        url,
        settings.cache_redis_timeout_s,
        cluster=settings.redis_cluster,
        credentials=SecretCredentials(secret_id) if secret_id else None,
    )


def build_transcript_cache(
    settings: Settings, redis: RedisClient | None, *, emit: MetricSink = no_metrics
) -> TieredTranscriptCache | None:
    """L1 always, L2 on `redis` (see redis_for) when there is one, L3 when a
    database is configured; None when disabled.

    `emit` receives every hit, miss, skipped level and corrupt entry."""
    if not settings.cache_enabled:
        return None
    has_database = settings.database_url is not None or settings.database_secret_id
    tiered = TieredCache(
        l1=MemoryCache(settings.cache_l1_max_bytes, settings.cache_l1_ttl_s),
        l2=RedisCache(redis, settings.cache_namespace, settings.cache_l2_ttl_s)
        if redis is not None
        else None,
        l3=PostgresCache(
            # Its own single connection, every statement cut off after the cache's timeout.
            create_pool(
                conninfo_from_settings(settings),
                max_size=1,
                name="sttpipe-cache",
                timeout_s=settings.cache_db_timeout_s,
                connect_kwargs={"connect_timeout": 2},
                statement_timeout_s=settings.cache_db_timeout_s,
            ),
            settings.cache_namespace,
            settings.cache_l3_ttl_s,
            settings.cache_db_timeout_s,
        )
        if has_database
        else None,
        cooldown_s=settings.cache_cooldown_s,
        sync_interval_s=settings.cache_sync_interval_s,
        lease_s=settings.cache_lease_s,
        emit=emit,
    )
    return TieredTranscriptCache(
        tiered,
        namespace=settings.cache_namespace,
        model=settings.speech_model,
        response_format=settings.speech_response_format,
        share_across_tenants=settings.cache_share_across_tenants,
        lease_wait_s=settings.cache_lease_wait_s,
    )
