"""L2: Redis (ElastiCache on AWS). Also where the fleet coordinates: single-flight leases, the
generation stamp that invalidates other containers' L1, and the shared statistics counters.

Every call has a tight socket timeout and no client-side retry: a slow or dead Redis must cost
a chunk a fraction of a second, not seconds. Any RedisError becomes CacheUnavailable.

A Redis Cluster (ElastiCache Serverless is always one) is reached through redis-py's cluster
client: entries spread over its slots, so reads of several go slot by slot (`mget_nonatomic`),
and the fleet's Lua scripts keep their keys under one hash tag (sttpipe.speech).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from itertools import islice

import redis
from redis.cluster import RedisCluster
from redis.exceptions import LockError
from redis.lock import Lock

from sttpipe.adapters.redis_connection import RedisClient
from sttpipe.cache.base import CacheBackend, CacheKey, CacheUnavailable, redis_key_pattern
from sttpipe.domain.transcripts import CacheLevel

_SCAN_BATCH = 500


def _batches(names: Iterable[bytes], size: int = _SCAN_BATCH) -> Iterator[list[bytes]]:
    # itertools.batched needs Python 3.12; the layer also runs on 3.11.
    it = iter(names)
    while batch := list(islice(it, size)):
        yield batch


@contextmanager
def _unavailable_on_error() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise CacheUnavailable(f"redis: {exc}") from exc


class Lease:
    """A single-flight lease held in Redis (SET NX PX with a random token, released by Lua)."""

    def __init__(self, lock: Lock) -> None:
        self._lock = lock

    def release(self) -> None:
        # It may have expired (another worker may hold it now) or Redis gone: nothing to undo.
        with suppress(LockError, redis.RedisError):
            self._lock.release()


class RedisCache(CacheBackend):
    level = CacheLevel.L2
    coordinates = True

    def __init__(self, client: RedisClient, namespace: str, ttl_s: float) -> None:
        self._redis = client
        self._namespace = namespace
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._generation_key = f"{namespace}:generation"
        self._stats_key = f"{namespace}:stats"

    def close(self) -> None:
        self._redis.close()

    # -- entries

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, bytes]:
        if not keys:
            return {}
        names = [k.redis_key for k in keys]
        with _unavailable_on_error():
            if isinstance(self._redis, RedisCluster):
                values = self._redis.mget_nonatomic(names)  # slot by slot
            else:
                values = self._redis.mget(names)
        return {k: _bytes(v) for k, v in zip(keys, values, strict=True) if v is not None}

    def set_many(self, entries: Mapping[CacheKey, bytes]) -> None:
        self._store(entries, only_new=False)

    def add_new(self, entries: Mapping[CacheKey, bytes]) -> int:
        return self._store(entries, only_new=True)  # SET NX: one round trip, no race

    def _store(self, entries: Mapping[CacheKey, bytes], *, only_new: bool) -> int:
        """Store entries; with `only_new` existing ones are left alone. Returns how many landed."""
        if not entries:
            return 0
        with _unavailable_on_error():
            pipe = self._redis.pipeline(transaction=False)
            for key, data in entries.items():
                pipe.set(key.redis_key, data, px=self._ttl_ms, nx=only_new)
            return sum(1 for done in pipe.execute() if done)

    def delete_many(self, keys: Sequence[CacheKey]) -> None:
        if keys:
            with _unavailable_on_error():
                self._redis.unlink(*(k.redis_key for k in keys))

    def delete_matching(
        self, *, model: str | None = None, pipeline_version: str | None = None
    ) -> int:
        """Delete every entry of a model and/or pipeline version (SCAN, then UNLINK in batches)."""
        pattern = redis_key_pattern(self._namespace, pipeline_version=pipeline_version, model=model)
        with _unavailable_on_error():
            return self._unlink_all(pattern)

    def drop_namespace(self) -> int:
        """Delete everything of this namespace, bookkeeping included (local clouds, tests)."""
        with _unavailable_on_error():
            return self._unlink_all(f"{self._namespace}:*")

    # -- coordination

    def lease(self, key: CacheKey, ttl_s: float) -> Lease | None:
        """Take the key's lease if nobody holds it; it expires by itself if the holder dies."""
        lock = self._redis.lock(self._lease_name(key), timeout=ttl_s, thread_local=False)
        with _unavailable_on_error():
            return Lease(lock) if lock.acquire(blocking=False) else None

    def peek(self, key: CacheKey) -> tuple[bytes | None, bool]:
        """The entry if stored, and whether its lease is still held: one round trip."""
        with _unavailable_on_error():
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(key.redis_key)
            pipe.exists(self._lease_name(key))
            value, held = pipe.execute()
        return value, bool(held)

    def generation(self) -> int:
        with _unavailable_on_error():
            return int(self._redis.get(self._generation_key) or 0)

    def bump_generation(self) -> int:
        with _unavailable_on_error():
            return int(self._redis.incr(self._generation_key))

    # -- statistics

    def add_counters(self, counters: Mapping[str, int]) -> None:
        if not counters:
            return
        with _unavailable_on_error():
            pipe = self._redis.pipeline(transaction=False)
            for name, value in counters.items():
                pipe.hincrby(self._stats_key, name, value)
            pipe.execute()

    def counters(self) -> dict[str, int]:
        with _unavailable_on_error():
            raw = self._redis.hgetall(self._stats_key)
        return {_text(name): int(value) for name, value in raw.items()}

    def _unlink_all(self, pattern: str) -> int:
        found = self._redis.scan_iter(match=pattern, count=_SCAN_BATCH)
        return sum(int(self._redis.unlink(*names)) for names in _batches(found))

    def _lease_name(self, key: CacheKey) -> str:
        return f"{self._namespace}:lease:{key.id}"


# The client answers bytes (decode_responses is off); its type hints also allow str.
def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
