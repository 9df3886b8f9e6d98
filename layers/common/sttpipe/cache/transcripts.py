"""The `TranscriptCache` port on the tiered cache: what a chunk or a whole upload turned into, and
every operation the services, the cache warmer, the API and the CLI need ("never pay twice for the
same audio"). Keys are built here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from sttpipe import PIPELINE_VERSION
from sttpipe.cache.base import SHARED_SCOPE, CacheKey, EntryKind, KeyParams
from sttpipe.cache.tiered import TieredCache
from sttpipe.domain.events import CacheInvalidated
from sttpipe.domain.models import ChunkRef
from sttpipe.domain.transcripts import CachedChunk, CachedUpload, CacheLevel, Hit
from sttpipe.ports import EventPublisher

M = TypeVar("M", bound=BaseModel)


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


class TieredTranscriptCache:
    """The TranscriptCache port (and the operators' operations) on a TieredCache."""

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
        chunk: ChunkRef,
        compute: Callable[[], CachedChunk],
        *,
        language: str | None,
        prompt: str | None = None,
        wait_s: float | None = None,
    ) -> tuple[CachedChunk, CacheLevel | None]:
        key = self.chunk_key(
            chunk.pcm_sha256, tenant=chunk.tenant_id, language=language, prompt=prompt
        )
        wait = self._lease_wait_s if wait_s is None else min(wait_s, self._lease_wait_s)
        try:
            return self.tiered.get_or_compute(key, CHUNKS, compute, wait_s=wait)
        finally:
            self.tiered.flush()

    # -- uploads

    def upload(
        self, upload_sha256: str, *, tenant: str, language: str | None, prompt: str | None = None
    ) -> Hit[CachedUpload] | None:
        key = self.upload_key(upload_sha256, tenant=tenant, language=language, prompt=prompt)
        try:
            return self.tiered.get(key, UPLOADS)
        finally:
            self.tiered.flush()

    def store_upload(
        self,
        upload_sha256: str,
        value: CachedUpload,
        *,
        tenant: str,
        language: str | None,
        prompt: str | None = None,
    ) -> None:
        key = self.upload_key(upload_sha256, tenant=tenant, language=language, prompt=prompt)
        self.tiered.put(key, value, UPLOADS)
        self.tiered.flush()

    # -- invalidation (raises CacheUnavailable when a level cannot be reached: retry it)

    def forget_contents(self, tenant: str, content_sha256s: Sequence[str]) -> int:
        """Delete a tenant's entries of these contents (chunk PCM or upload hashes) everywhere.
        With entries shared across tenants, the shared ones go: the owner wants them gone."""
        scope = SHARED_SCOPE if self._shared else tenant
        return self.tiered.forget_contents(scope, content_sha256s)

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

    def __init__(self, cache: TieredTranscriptCache, events: EventPublisher | None = None) -> None:
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
