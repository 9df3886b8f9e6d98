"""The content-addressed transcript cache: L1 memory, L2 Redis, L3 PostgreSQL.

`TieredTranscriptCache` implements the `TranscriptCache` port (sttpipe.ports) on `TieredCache`,
which composes the levels; one module per backend (`memory`, `redis`, `postgres`) implements
`CacheBackend`; `factory` builds it from settings. Services see only the port.
"""

from sttpipe.cache.base import (
    SHARED_SCOPE,
    CacheBackend,
    CacheKey,
    CacheUnavailable,
    CorruptEntry,
    EntryKind,
    KeyParams,
)
from sttpipe.cache.factory import build_transcript_cache, redis_for, redis_url
from sttpipe.cache.tiered import TieredCache
from sttpipe.cache.transcripts import CacheStats, TieredTranscriptCache, WarmReport

__all__ = [
    "SHARED_SCOPE",
    "CacheBackend",
    "CacheKey",
    "CacheStats",
    "CacheUnavailable",
    "CorruptEntry",
    "EntryKind",
    "KeyParams",
    "TieredCache",
    "TieredTranscriptCache",
    "WarmReport",
    "build_transcript_cache",
    "redis_for",
    "redis_url",
]
