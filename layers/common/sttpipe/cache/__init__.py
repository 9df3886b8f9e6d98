"""The content-addressed transcript cache: L1 memory, L2 Redis, L3 PostgreSQL.

`TranscriptCache` is what services use; `TieredCache` composes the levels; one module per
backend (`memory`, `redis`, `postgres`) implements `CacheBackend`.
"""

from sttpipe.cache.base import (
    SHARED_SCOPE,
    CacheBackend,
    CacheKey,
    CacheLevel,
    CacheUnavailable,
    CorruptEntry,
    EntryKind,
    KeyParams,
)
from sttpipe.cache.factory import build_transcript_cache, redis_url
from sttpipe.cache.tiered import Hit, TieredCache
from sttpipe.cache.transcripts import (
    CachedChunk,
    CachedSegment,
    CachedUpload,
    CacheStats,
    TranscriptCache,
    WarmReport,
)

__all__ = [
    "SHARED_SCOPE",
    "CacheBackend",
    "CacheKey",
    "CacheLevel",
    "CacheStats",
    "CacheUnavailable",
    "CachedChunk",
    "CachedSegment",
    "CachedUpload",
    "CorruptEntry",
    "EntryKind",
    "Hit",
    "KeyParams",
    "TieredCache",
    "TranscriptCache",
    "WarmReport",
    "build_transcript_cache",
    "redis_url",
]
