"""Builds the transcript cache a container uses from Settings (bootstrap calls it once)."""

from __future__ import annotations

from sttpipe.cache.base import MetricSink, no_metrics
from sttpipe.cache.memory import MemoryCache
from sttpipe.cache.postgres import PostgresCache, cache_pool
from sttpipe.cache.redis import RedisCache, redis_client
from sttpipe.cache.tiered import TieredCache
from sttpipe.cache.transcripts import TranscriptCache
from sttpipe.config import Settings


def redis_url(settings: Settings) -> str | None:
    """STT_REDIS_URL, else the ElastiCache endpoint over TLS, else None (no L2)."""
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    if settings.redis_endpoint:
        return f"rediss://{settings.redis_endpoint}/0"
    return None


def build_transcript_cache(
    settings: Settings, *, emit: MetricSink = no_metrics
) -> TranscriptCache | None:
    """L1 always, L2 when Redis is configured, L3 when the database is; None when disabled.

    `emit` receives every hit, miss, skipped level and corrupt entry (bootstrap passes
    observability.cache_metric_sink)."""
    if not settings.cache_enabled:
        return None
    url = redis_url(settings)
    has_database = settings.database_url is not None or settings.database_secret_id
    tiered = TieredCache(
        l1=MemoryCache(settings.cache_l1_max_bytes, settings.cache_l1_ttl_s),
        l2=RedisCache(
            redis_client(url, settings.cache_redis_timeout_s),
            settings.cache_namespace,
            settings.cache_l2_ttl_s,
        )
        if url
        else None,
        l3=PostgresCache(
            cache_pool(settings),
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
    return TranscriptCache(
        tiered,
        namespace=settings.cache_namespace,
        model=settings.speech_model,
        response_format=settings.speech_response_format,
        share_across_tenants=settings.cache_share_across_tenants,
        lease_wait_s=settings.cache_lease_wait_s,
    )
