"""The cache's parts that need no server: keys, sealed entries, the L1 LRU, the tiered logic on L1.

Redis and PostgreSQL levels are tested against the real servers in
tests/integration/test_cache_levels.py.
"""

from __future__ import annotations

import pytest

from sttpipe import PIPELINE_VERSION
from sttpipe.cache import (
    SHARED_SCOPE,
    CacheKey,
    CorruptEntry,
    EntryKind,
    KeyParams,
    TieredCache,
    TieredTranscriptCache,
)
from sttpipe.cache.base import seal, unseal
from sttpipe.cache.memory import MemoryCache
from sttpipe.cache.transcripts import CHUNKS
from sttpipe.domain.models import ChunkRef
from sttpipe.domain.transcripts import (
    CachedChunk,
    CachedSegment,
    CacheLevel,
    RelativeSegment,
    Transcription,
)
from sttpipe.observability import Metric

PCM = "ab" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def params(**changes: object) -> KeyParams:
    base: dict[str, object] = {
        "namespace": "ns",
        "scope": "tenant-a",
        "model": "openai/whisper-large-v3",
        "language": "en",
        "prompt": None,
        "response_format": "json",
        "pipeline_version": PIPELINE_VERSION,
    }
    return KeyParams(**{**base, **changes})  # type: ignore[arg-type]


def key(n: int = 0) -> CacheKey:
    return CacheKey.build(EntryKind.CHUNK, f"{n:064x}", params())


# ---- keys and sealed entries ----------------------------------------------------------------


def test_a_key_changes_with_everything_that_decides_the_result() -> None:
    base = CacheKey.build(EntryKind.CHUNK, PCM, params())
    variants = [
        CacheKey.build(EntryKind.UPLOAD, PCM, params()),
        CacheKey.build(EntryKind.CHUNK, "cd" * 32, params()),
        *(
            CacheKey.build(EntryKind.CHUNK, PCM, params(**{field: value}))
            for field, value in [
                ("scope", "tenant-b"),
                ("model", "openai/whisper-1"),
                ("language", "ru"),
                ("language", None),
                ("prompt", "glossary"),
                ("response_format", "text"),
                ("pipeline_version", "0"),
            ]
        ),
    ]
    assert len({base.id, *(v.id for v in variants)}) == len(variants) + 1
    # The namespace isolates by itself (it prefixes every stored name) and is not in the id.
    other_ns = CacheKey.build(EntryKind.CHUNK, PCM, params(namespace="other"))
    assert other_ns.id == base.id and other_ns.redis_key != base.redis_key
    assert base.redis_key == f"ns:chunk:{PIPELINE_VERSION}:openai%2Fwhisper-large-v3:{base.id}"


def test_sealed_entries_only_open_for_their_key_and_intact() -> None:
    sealed = seal(key(1), b'{"text": "hi"}')
    assert unseal(key(1), sealed) == b'{"text": "hi"}'
    with pytest.raises(CorruptEntry):
        unseal(key(2), sealed)  # another key's entry
    with pytest.raises(CorruptEntry):
        unseal(key(1), sealed.replace(b"hi", b"ho"))  # damaged payload
    with pytest.raises(CorruptEntry):
        unseal(key(1), b"garbage without a header")


def test_tenants_are_isolated_unless_sharing_is_switched_on() -> None:
    def cache(shared: bool) -> TieredTranscriptCache:
        return TieredTranscriptCache(
            TieredCache(),
            namespace="ns",
            model="m",
            response_format="json",
            share_across_tenants=shared,
        )

    isolated = cache(False)
    a = isolated.chunk_key(PCM, tenant="a", language="en")
    b = isolated.chunk_key(PCM, tenant="b", language="en")
    assert a != b and a.scope == "a"
    shared = cache(True)
    assert shared.chunk_key(PCM, tenant="a", language="en") == shared.chunk_key(
        PCM, tenant="b", language="en"
    )
    assert shared.chunk_key(PCM, tenant="a", language="en").scope == SHARED_SCOPE


# ---- values are position-independent --------------------------------------------------------


def test_a_cached_chunk_is_placed_at_whatever_offset_the_audio_recurs() -> None:
    value = CachedChunk.of(
        Transcription(" hello there ", (RelativeSegment(0.5, 2.25, " hello there "),))
    )
    assert value.segments == [CachedSegment(start_ms=500, end_ms=2250, text="hello there")]
    for start in (0, 90_000):
        chunk = ChunkRef(index=3, key="k", start_ms=start, end_ms=start + 2000, pcm_sha256=PCM)
        placed = value.placed(chunk, api_calls=0, cache_level=CacheLevel.L2, seconds=0.0)
        assert placed.text == "hello there" and placed.cache_level == "L2"
        # Shifted to the chunk, and never past its end.
        assert [(s.start_ms, s.end_ms) for s in placed.segments] == [(start + 500, start + 2000)]


# ---- L1 ------------------------------------------------------------------------------------


def test_l1_expires_entries_after_its_ttl() -> None:
    clock = Clock()
    l1 = MemoryCache(max_bytes=10_000, ttl_s=60, clock=clock)
    l1.set_many({key(1): b"one"})
    clock.now += 59
    assert l1.get_many([key(1)]) == {key(1): b"one"}
    clock.now += 2
    assert l1.get_many([key(1)]) == {}
    assert l1.usage() == (0, 0)


def test_l1_evicts_the_least_recently_used_within_its_byte_bound() -> None:
    l1 = MemoryCache(max_bytes=3 * (100 + 200), ttl_s=60)  # three 100-byte entries
    l1.set_many({key(n): bytes(100) for n in range(3)})
    l1.get_many([key(0)])  # 0 is now the most recently used
    l1.set_many({key(3): bytes(100)})
    assert set(l1.get_many([key(n) for n in range(4)])) == {key(0), key(2), key(3)}
    entries, size = l1.usage()
    assert entries == 3 and size <= 3 * 300
    l1.set_many({key(9): bytes(10_000)})  # larger than the whole bound: not kept
    assert l1.get_many([key(9)]) == {}


# ---- the tiered logic on L1 alone -----------------------------------------------------------


def test_a_miss_computes_once_and_writes_through() -> None:
    events: list[tuple[Metric, CacheLevel | None, int]] = []
    tiered = TieredCache(l1=MemoryCache(1 << 20, 60), emit=lambda *e: events.append(e))
    computed: list[int] = []

    def compute() -> CachedChunk:
        computed.append(1)
        return CachedChunk(text="once")

    first = tiered.get_or_compute(key(1), CHUNKS, compute, wait_s=1)
    second = tiered.get_or_compute(key(1), CHUNKS, compute, wait_s=1)
    assert first == (CachedChunk(text="once"), None)
    assert second == (CachedChunk(text="once"), CacheLevel.L1)
    assert len(computed) == 1
    assert tiered.counters == {"misses": 1, "writes": 1, "hits:L1": 1}
    assert (Metric.CACHE_MISSES, None, 1) in events
    assert (Metric.CACHE_HITS, CacheLevel.L1, 1) in events


def test_a_corrupt_entry_is_never_served_but_deleted_and_rewritten() -> None:
    l1 = MemoryCache(1 << 20, 60)
    tiered = TieredCache(l1=l1)
    l1.set_many({key(1): seal(key(1), b'{"text": 42}')})  # sealed, but not a CachedChunk
    l1.set_many({key(2): b"\x00\xff not even sealed"})
    assert tiered.get_many([key(1), key(2)], CHUNKS) == {}
    assert l1.usage()[0] == 0  # both deleted
    assert tiered.counters["corrupt:L1"] == 2

    value, level = tiered.get_or_compute(key(1), CHUNKS, lambda: CachedChunk(text="ok"), wait_s=0)
    assert (value.text, level) == ("ok", None)
    assert CHUNKS.decode(unseal(key(1), l1.get_many([key(1)])[key(1)])).text == "ok"


def test_a_failing_compute_caches_nothing() -> None:
    tiered = TieredCache(l1=MemoryCache(1 << 20, 60))

    def fail() -> CachedChunk:
        raise RuntimeError("speech API down")

    with pytest.raises(RuntimeError):
        tiered.get_or_compute(key(1), CHUNKS, fail, wait_s=0)
    assert tiered.get(key(1), CHUNKS) is None


def test_without_any_level_every_lookup_computes() -> None:
    tiered = TieredCache()
    for _ in range(2):
        assert (
            tiered.get_or_compute(key(1), CHUNKS, lambda: CachedChunk(text="x"), wait_s=0)[1]
            is None
        )
