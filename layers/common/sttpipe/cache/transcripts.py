"""Transcripts in the cache: what a chunk or a whole upload turned into, and every operation the
services, the cache warmer, the API and the CLI need ("never pay twice for the same audio").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from sttpipe import PIPELINE_VERSION
from sttpipe.cache.base import SHARED_SCOPE, CacheKey, CacheLevel, EntryKind, KeyParams
from sttpipe.cache.tiered import Hit, TieredCache
from sttpipe.domain.events import CacheInvalidated
from sttpipe.domain.models import ChunkRef, ChunkTranscript, Segment
from sttpipe.ports import EventPublisher
from sttpipe.speech.base import Transcription
from sttpipe.transcript import Transcript

M = TypeVar("M", bound=BaseModel)


class CachedSegment(BaseModel):
    start_ms: int = Field(ge=0)  # relative to the start of the chunk
    end_ms: int = Field(ge=0)
    text: str


class CachedChunk(BaseModel):
    """A chunk's transcription with times relative to the chunk's start, so that the same audio
    at another offset (another upload, another cut) reuses it."""

    text: str
    segments: list[CachedSegment] = Field(default_factory=list)
    language: str | None = None

    @classmethod
    def of(cls, result: Transcription) -> CachedChunk:
        return cls(
            text=result.text.strip(),
            segments=[
                CachedSegment(
                    start_ms=max(0, round(s.start_s * 1000)),
                    end_ms=max(0, round(s.end_s * 1000)),
                    text=s.text.strip(),
                )
                for s in result.segments
            ],
            language=result.language,
        )

    def placed(
        self,
        chunk: ChunkRef,
        *,
        api_calls: int,
        cache_level: CacheLevel | None,
        seconds: float,
    ) -> ChunkTranscript:
        """The transcript of `chunk` with absolute times, as the worker stores it."""
        offset = chunk.start_ms
        return ChunkTranscript(
            index=chunk.index,
            start_ms=chunk.start_ms,
            end_ms=chunk.end_ms,
            text=self.text,
            segments=[
                Segment(
                    start_ms=offset + s.start_ms,
                    end_ms=min(chunk.end_ms, offset + s.end_ms),
                    text=s.text,
                    chunk_index=chunk.index,
                )
                for s in self.segments
            ],
            api_calls=api_calls,
            cache_level=cache_level.value if cache_level else None,
            seconds=seconds,
        )


class CachedUpload(BaseModel):
    """A whole upload's finished transcript (times absolute: it is the same file)."""

    transcript: Transcript
    duration_s: float
    chunks: int
    chunks_silent: int
    # id -> canonical-PCM hash of each chunk entry it was made from (invalidation by upload).
    chunk_keys: dict[str, str] = Field(default_factory=dict)


class ModelCodec(Generic[M]):
    def __init__(self, model: type[M]) -> None:
        self._model = model

    def encode(self, value: M) -> bytes:
        return value.model_dump_json().encode()

    def decode(self, data: bytes) -> M:
        return self._model.model_validate_json(data)


CHUNKS = ModelCodec(CachedChunk)
UPLOADS = ModelCodec(CachedUpload)


class CacheStats(BaseModel):
    namespace: str
    levels: list[str]
    counted_by: str  # "fleet" (Redis counters) or "container" (Redis unreachable)
    hits: dict[str, int]
    misses: int
    hit_rate: float | None
    writes: int
    corrupt_entries: dict[str, int]
    level_unavailable: dict[str, int]
    entries_warmed: int
    stored: dict[str, dict[str, int]]  # level -> entries, bytes (L1: this container's)


class WarmReport(BaseModel):
    candidates: int
    warmed: int  # copied into L2 (entries already there are left alone)
    purged: int  # expired L3 rows deleted


class TranscriptCache:
    def __init__(
        self,
        tiered: TieredCache,
        *,
        namespace: str,
        model: str,
        response_format: str,
        share_across_tenants: bool = False,
        lease_wait_s: float = 60.0,
        pipeline_version: str = PIPELINE_VERSION,
    ) -> None:
        self.tiered = tiered
        self.namespace = namespace
        self._model = model
        self._response_format = response_format
        self._shared = share_across_tenants
        self._lease_wait_s = lease_wait_s
        self._pipeline_version = pipeline_version

    # -- keys

    def chunk_key(
        self, pcm_sha256: str, *, tenant: str, language: str | None, prompt: str | None = None
    ) -> CacheKey:
        return CacheKey.build(EntryKind.CHUNK, pcm_sha256, self._params(tenant, language, prompt))

    def upload_key(
        self, upload_sha256: str, *, tenant: str, language: str | None, prompt: str | None = None
    ) -> CacheKey:
        params = self._params(tenant, language, prompt)
        return CacheKey.build(EntryKind.UPLOAD, upload_sha256, params)

    def _params(self, tenant: str, language: str | None, prompt: str | None) -> KeyParams:
        return KeyParams(
            namespace=self.namespace,
            scope=SHARED_SCOPE if self._shared else tenant,
            model=self._model,
            language=language,
            prompt=prompt,
            response_format=self._response_format,
            pipeline_version=self._pipeline_version,
        )

    # -- chunks

    def chunk(
        self,
        key: CacheKey,
        compute: Callable[[], CachedChunk],
        *,
        wait_s: float | None = None,
    ) -> tuple[CachedChunk, CacheLevel | None]:
        """The cached transcription of a chunk, or `compute()`'s, computed once across the fleet.

        `wait_s` bounds the wait for another worker computing the same chunk (default: the
        configured lease wait)."""
        wait = self._lease_wait_s if wait_s is None else min(wait_s, self._lease_wait_s)
        try:
            return self.tiered.get_or_compute(key, CHUNKS, compute, wait_s=wait)
        finally:
            self.tiered.flush()

    def chunks(self, keys: Sequence[CacheKey]) -> dict[CacheKey, Hit[CachedChunk]]:
        """Batched lookup (one MGET, one SELECT) of the chunks that are cached."""
        return self.tiered.get_many(keys, CHUNKS)

    # -- uploads

    def upload(self, key: CacheKey) -> Hit[CachedUpload] | None:
        try:
            return self.tiered.get(key, UPLOADS)
        finally:
            self.tiered.flush()

    def store_upload(self, key: CacheKey, value: CachedUpload) -> None:
        self.tiered.put(key, value, UPLOADS)
        self.tiered.flush()

    # -- invalidation (raises CacheUnavailable when a level cannot be reached: retry it)

    def invalidate_chunk(self, key: CacheKey) -> None:
        self.tiered.invalidate([key])

    def invalidate_upload(self, key: CacheKey) -> int:
        """Delete an upload's transcript and the chunk entries it was made from; returns how
        many chunk entries that named."""
        found = self.tiered.get(key, UPLOADS)
        chunk_keys = [
            CacheKey(
                namespace=key.namespace,
                kind=EntryKind.CHUNK,
                id=key_id,
                content_sha256=pcm_sha256,
                model=key.model,
                pipeline_version=key.pipeline_version,
                scope=key.scope,
            )
            for key_id, pcm_sha256 in (found.value.chunk_keys.items() if found else ())
        ]
        self.tiered.invalidate([key, *chunk_keys])
        return len(chunk_keys)

    def forget_contents(self, tenant: str, content_sha256s: Sequence[str]) -> int:
        """Delete a tenant's entries of these contents (chunk PCM or upload hashes) everywhere.
        With entries shared across tenants, the shared ones go: the owner wants them gone."""
        scope = SHARED_SCOPE if self._shared else tenant
        return self.tiered.forget_contents(scope, content_sha256s)

    def invalidate_model(self, model: str) -> int:
        return self.tiered.invalidate_matching(model=model)

    def invalidate_pipeline_version(self, version: str) -> int:
        return self.tiered.invalidate_matching(pipeline_version=version)

    # -- warming and statistics

    def warm(self, limit: int, min_hits: int) -> WarmReport:
        candidates, warmed = self.tiered.warm(limit, min_hits)
        return WarmReport(candidates=candidates, warmed=warmed, purged=self.tiered.purge_expired())

    def stats(self) -> CacheStats:
        shared = self.tiered.shared_counters()
        counters = dict(self.tiered.counters) if shared is None else shared
        levels = [level.value for level in self.tiered.levels]
        hits = {level.value: counters.get(f"hits:{level}", 0) for level in CacheLevel}
        misses = counters.get("misses", 0)
        lookups = sum(hits.values()) + misses
        return CacheStats(
            namespace=self.namespace,
            levels=levels,
            counted_by="container" if shared is None else "fleet",
            hits=hits,
            misses=misses,
            hit_rate=round(sum(hits.values()) / lookups, 4) if lookups else None,
            writes=counters.get("writes", 0),
            corrupt_entries={lv: counters.get(f"corrupt:{lv}", 0) for lv in levels},
            level_unavailable={lv: counters.get(f"unavailable:{lv}", 0) for lv in levels},
            entries_warmed=counters.get("warmed", 0),
            stored={
                level.value: {"entries": entries, "bytes": size}
                for level, (entries, size) in self.tiered.usage().items()
            },
        )


class CacheAdministration:
    """The HTTP API's view of the cache (the `CacheAdmin` port); announces what it drops."""

    def __init__(self, cache: TranscriptCache, events: EventPublisher | None = None) -> None:
        self._cache = cache
        self._events = events

    def forget(self, scope: str, content_sha256s: Sequence[str]) -> int:
        dropped = self._cache.forget_contents(scope, content_sha256s)
        self._announce(scope, dropped, "a job's recordings were deleted")
        return dropped

    def invalidate(self, *, model: str | None = None, pipeline_version: str | None = None) -> int:
        tiered = self._cache.tiered
        dropped = tiered.invalidate_matching(model=model, pipeline_version=pipeline_version)
        named = ", ".join(
            f"{name} {value}"
            for name, value in (("model", model), ("pipeline version", pipeline_version))
            if value
        )
        self._announce(SHARED_SCOPE, dropped, f"invalidated by {named}")
        return dropped

    def _announce(self, tenant_id: str, entries: int, reason: str) -> None:
        if self._events is not None:
            event = CacheInvalidated(tenant_id=tenant_id, entries=entries, reason=reason)
            self._events.publish(event)

    def stats(self) -> dict[str, Any]:
        return self._cache.stats().model_dump()
