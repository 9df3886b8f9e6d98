"""The tiered cache: L1 (memory) -> L2 (Redis) -> L3 (PostgreSQL), any of them optional.

- Reads go down the levels and promote what they find into the levels above.
- A computed value is written through to every level.
- A level that fails or times out is skipped for a cool-down, with a warning and a metric, and
  tried again afterwards: the cache never fails a lookup, it only misses.
- An entry that fails validation (seal or decoding) is never served: it is deleted at that
  level and rewritten from a lower level or by the computation.
- Single flight: on a miss the first worker takes a Redis lease and computes; the others poll
  Redis for its result, bounded, and compute themselves if it does not come (a lease expires
  by itself when its holder dies).
- Invalidation deletes at every level and bumps a generation stamp in Redis; every container
  compares it at most once per `sync_interval_s` and empties its L1 when it changed.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeGuard, TypeVar

from aws_lambda_powertools import Logger

from sttpipe.cache.base import (
    CacheBackend,
    CacheKey,
    CacheUnavailable,
    CorruptEntry,
    Lease,
    MetricSink,
    no_metrics,
    seal,
    unseal,
)
from sttpipe.domain.transcripts import CacheLevel, Hit
from sttpipe.observability import Metric

logger = Logger(child=True)

T = TypeVar("T")
R = TypeVar("R")


class Codec(Protocol[T]):
    def encode(self, value: T) -> bytes: ...

    def decode(self, data: bytes) -> T:
        """Raises ValueError (pydantic's ValidationError is one) when `data` is not a value."""
        ...


class _Down:
    """What a guarded call returns when its level is skipped or just failed."""


DOWN = _Down()


def _held(lease: Lease | _Down | None) -> TypeGuard[Lease]:
    """Whether `_lease` handed us the lease (not: held by another, or no coordinating level)."""
    return lease is not None and not isinstance(lease, _Down)


@dataclass
class _Health:
    down_until: float = -math.inf
    down: bool = False


class TieredCache:
    """Composes levels it knows only as CacheBackend: which one is the container's own and which
    coordinates the fleet, each level says itself (`shared`, `coordinates`)."""

    def __init__(
        self,
        *,
        l1: CacheBackend | None = None,
        l2: CacheBackend | None = None,
        l3: CacheBackend | None = None,
        cooldown_s: float = 30.0,
        sync_interval_s: float = 5.0,
        lease_s: float = 180.0,
        poll_s: float = 0.1,
        emit: MetricSink = no_metrics,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.l1, self.l2, self.l3 = l1, l2, l3
        self._levels: list[CacheBackend] = [b for b in (l1, l2, l3) if b is not None]
        # Leases, the generation stamp and the fleet's counters (Redis), when a level keeps them.
        self._fleet = next((b for b in self._levels if b.coordinates), None)
        self._cooldown_s = cooldown_s
        self._sync_interval_s = sync_interval_s
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._emit = emit
        self._clock = clock
        self._sleep = sleep
        self._health = {b.level: _Health() for b in self._levels}
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()  # since this container started
        self._unflushed: Counter[str] = Counter()
        self._hits_by_key: Counter[CacheKey] = Counter()
        self._generation: int | None = None
        self._next_sync = -math.inf

    @property
    def levels(self) -> tuple[CacheLevel, ...]:
        return tuple(b.level for b in self._levels)

    def close(self) -> None:
        """Push the counters, then close every level's clients and pools."""
        self.flush()
        for backend in self._levels:
            backend.close()

    # -- reading and writing

    def get_many(self, keys: Sequence[CacheKey], codec: Codec[T]) -> dict[CacheKey, Hit[T]]:
        """What the levels hold for `keys`, each from the highest level that has it intact."""
        return self._lookup(keys, codec, count_misses=True)

    def _lookup(
        self, keys: Sequence[CacheKey], codec: Codec[T], *, count_misses: bool
    ) -> dict[CacheKey, Hit[T]]:
        self._sync_generation()
        found: dict[CacheKey, Hit[T]] = {}
        pending = list(dict.fromkeys(keys))
        above: list[CacheBackend] = []
        for backend in self._levels:
            if not pending:
                break
            stored = self._call(backend, partial(backend.get_many, pending))
            if not isinstance(stored, _Down):
                intact = self._validate(backend, stored, codec, found)
                if intact:
                    for upper in above:  # promote
                        self._call(upper, partial(upper.set_many, intact))
                    self._count(f"hits:{backend.level}", len(intact), Metric.CACHE_HITS, backend)
                    pending = [k for k in pending if k not in intact]
            above.append(backend)
        if pending and count_misses:
            self._count("misses", len(pending), Metric.CACHE_MISSES)
        with self._lock:
            self._hits_by_key.update(found.keys())
        return found

    def get(self, key: CacheKey, codec: Codec[T]) -> Hit[T] | None:
        return self.get_many([key], codec).get(key)

    def put_many(self, entries: Mapping[CacheKey, T], codec: Codec[T]) -> None:
        """Write through to every level that is up."""
        if not entries:
            return
        sealed = {key: seal(key, codec.encode(value)) for key, value in entries.items()}
        for backend in self._levels:
            self._call(backend, partial(backend.set_many, sealed))
        self._count("writes", len(sealed))

    def put(self, key: CacheKey, value: T, codec: Codec[T]) -> None:
        self.put_many({key: value}, codec)

    def get_or_compute(
        self, key: CacheKey, codec: Codec[T], compute: Callable[[], T], *, wait_s: float
    ) -> tuple[T, CacheLevel | None]:
        """The cached value and its level, or `compute()`'s (level None), written through.

        While another worker holds the key's lease, waits up to `wait_s` for its result.
        Exceptions from `compute` propagate (the lease is released first).
        """
        # A miss is counted only when we compute: a result that another worker's lease brings
        # is a hit (at L2).
        hit = self._lookup([key], codec, count_misses=False).get(key)
        if hit is not None:
            return hit.value, hit.level
        lease = self._lease(key)
        if lease is None:  # another worker is computing it
            hit = self._wait_for(key, codec, wait_s)
            if hit is not None:
                return hit.value, hit.level
            lease = self._lease(key)  # it gave up or died: take over if nobody else did
        if _held(lease):
            # Its holder may have finished between our lookup and our lease.
            hit = self._peek(key, codec)[0]
            if hit is not None:
                lease.release()
                return hit.value, hit.level
        self._count("misses", 1, Metric.CACHE_MISSES)
        try:
            value = compute()
            self.put(key, value, codec)
        finally:
            if _held(lease):
                lease.release()
        return value, None

    def _lease(self, key: CacheKey) -> Lease | _Down | None:
        """The key's lease; None while another worker holds it; DOWN without Redis."""
        if self._fleet is None:
            return DOWN
        return self._call(self._fleet, partial(self._fleet.lease, key, self._lease_s))

    def _wait_for(self, key: CacheKey, codec: Codec[T], wait_s: float) -> Hit[T] | None:
        """Poll Redis for the lease holder's result until it lands, the lease goes, or time's up."""
        deadline = self._clock() + wait_s
        while self._clock() < deadline:
            self._sleep(self._poll_s)
            hit, held = self._peek(key, codec)
            if hit is not None or not held:
                return hit
        return None

    def _peek(self, key: CacheKey, codec: Codec[T]) -> tuple[Hit[T] | None, bool]:
        """The entry in the coordinating level (promoted to the levels above it, counted as its
        hit), and whether its lease is held; (None, False) when that level cannot tell."""
        fleet = self._fleet
        peeked = DOWN if fleet is None else self._call(fleet, partial(fleet.peek, key))
        if fleet is None or isinstance(peeked, _Down):
            return None, False
        data, held = peeked
        found: dict[CacheKey, Hit[T]] = {}
        if data is None or not self._validate(fleet, {key: data}, codec, found):
            return None, held
        for upper in self._levels[: self._levels.index(fleet)]:
            self._call(upper, partial(upper.set_many, {key: data}))
        self._count(f"hits:{fleet.level}", 1, Metric.CACHE_HITS, fleet)
        with self._lock:
            self._hits_by_key[key] += 1
        return found[key], held

    def _validate(
        self,
        backend: CacheBackend,
        stored: Mapping[CacheKey, bytes],
        codec: Codec[T],
        found: dict[CacheKey, Hit[T]],
    ) -> dict[CacheKey, bytes]:
        """The intact entries of `stored` (decoded into `found`); corrupt ones are deleted."""
        intact: dict[CacheKey, bytes] = {}
        corrupt: list[CacheKey] = []
        for key, data in stored.items():
            try:
                value = codec.decode(unseal(key, data))
            except (CorruptEntry, ValueError):
                corrupt.append(key)
                continue
            found[key] = Hit(value, backend.level)
            intact[key] = data
        if corrupt:
            logger.warning(
                "corrupt cache entries ignored and deleted",
                extra={"level": backend.level, "keys": [k.id for k in corrupt]},
            )
            self._count(
                f"corrupt:{backend.level}", len(corrupt), Metric.CACHE_CORRUPT_ENTRIES, backend
            )
            self._call(backend, partial(backend.delete_many, corrupt))
        return intact

    # -- invalidation (operator actions: a level that is down makes them raise, not skip)

    def invalidate(self, keys: Sequence[CacheKey]) -> None:
        """Delete `keys` at every level, here and (through the generation) in every L1."""
        for backend in reversed(self._levels):
            backend.delete_many(keys)
        self._bump_generation()

    def forget_contents(self, scope: str, content_sha256s: Sequence[str]) -> int:
        """Delete the entries of these contents in `scope` at every level. The levels that index
        contents (L3) find them and the others drop the same keys; an entry only in L2 (L3 was
        down when it was written) expires by TTL."""
        found: dict[CacheLevel, list[CacheKey]] = {
            b.level: b.delete_contents(scope, content_sha256s) for b in reversed(self._levels)
        }
        keys = list(dict.fromkeys(k for level_keys in found.values() for k in level_keys))
        for backend in self._levels:
            if keys and backend.shared and not found[backend.level]:
                backend.delete_many(keys)
        self._bump_generation()
        return len(keys)

    def invalidate_matching(
        self, *, model: str | None = None, pipeline_version: str | None = None
    ) -> int:
        """Delete every entry of a model and/or pipeline version; returns how many the deepest
        shared level (the one that holds the most) deleted."""
        if model is None and pipeline_version is None:
            raise ValueError("name a model or a pipeline version")
        return self._delete_matching(model=model, pipeline_version=pipeline_version)

    def clear(self) -> int:
        """Delete every entry of the namespace, at every level (`stt cache clear`); returns how
        many the deepest shared level deleted."""
        return self._delete_matching(model=None, pipeline_version=None)

    def _delete_matching(self, *, model: str | None, pipeline_version: str | None) -> int:
        deleted = {
            b.level: b.delete_matching(model=model, pipeline_version=pipeline_version)
            for b in reversed(self._levels)
            if b.shared
        }
        self._bump_generation()
        return next(iter(deleted.values()), 0)

    def _bump_generation(self) -> None:
        if self._fleet is not None:
            self._generation = self._fleet.bump_generation()
        self._forget_local()

    def _forget_local(self) -> None:
        for backend in self._levels:
            backend.forget_local()

    def _sync_generation(self) -> None:
        if self._fleet is None or all(b.shared for b in self._levels):
            return
        now = self._clock()
        if now < self._next_sync:
            return
        self._next_sync = now + self._sync_interval_s
        generation = self._call(self._fleet, self._fleet.generation)
        if isinstance(generation, _Down) or generation == self._generation:
            return
        # Changed, or first seen (an L1 filled while Redis was away may hold stale entries).
        self._forget_local()
        self._generation = generation

    # -- warming and statistics

    def warm(self, limit: int, min_hits: int) -> tuple[int, int]:
        """Copy the most used entries of the deepest level into the shared level above it where
        missing (L3 into L2): (candidates, copied)."""
        source, above = self._levels[-1], [b for b in self._levels[:-1] if b.shared]
        if not above or limit <= 0:
            return 0, 0
        candidates = dict(source.most_used(limit, min_hits))
        warmed = above[-1].add_new(candidates)
        self._count("warmed", warmed)  # the warmer function emits the metric
        self.flush()
        return len(candidates), warmed

    def shared_counters(self) -> dict[str, int] | None:
        """The fleet's counters from Redis (after pushing ours), None without Redis."""
        self.flush()
        if self._fleet is None:
            return None
        counters = self._call(self._fleet, self._fleet.counters)
        return None if isinstance(counters, _Down) else counters

    def usage(self) -> dict[CacheLevel, tuple[int, int]]:
        """(entries, bytes) stored at each level that can tell (this container's L1, L3), where
        reachable."""
        usage: dict[CacheLevel, tuple[int, int]] = {}
        for backend in self._levels:
            held = self._call(backend, backend.usage)
            if held is not None and not isinstance(held, _Down):
                usage[backend.level] = held
        return usage

    def purge_expired(self) -> int:
        """Delete expired entries at the levels that do not expire them by themselves (L3)."""
        purged = (self._call(b, b.purge_expired) for b in self._levels)
        return sum(n for n in purged if not isinstance(n, _Down))

    def flush(self) -> None:
        """Push this container's counters to the fleet (Redis) and its hit counts to the levels
        that rank entries by use (L3); best effort."""
        with self._lock:
            counters, self._unflushed = self._unflushed, Counter()
            hits, self._hits_by_key = self._hits_by_key, Counter()
        if self._fleet is not None and counters:
            self._call(self._fleet, partial(self._fleet.add_counters, counters))
        if hits:
            for backend in self._levels:
                self._call(backend, partial(backend.record_hits, hits))

    def _count(
        self,
        name: str,
        value: int,
        metric: Metric | None = None,
        backend: CacheBackend | None = None,
    ) -> None:
        if value <= 0:
            return
        with self._lock:
            self.counters[name] += value
            self._unflushed[name] += value
        if metric is not None:
            self._emit(metric, backend.level if backend else None, value)

    def _call(self, backend: CacheBackend, fn: Callable[[], R]) -> R | _Down:
        health = self._health[backend.level]
        if self._clock() < health.down_until:
            return DOWN
        try:
            result = fn()
        except CacheUnavailable as exc:
            health.down_until = self._clock() + self._cooldown_s
            health.down = True
            logger.warning(
                "cache level unavailable; skipped for the cool-down",
                extra={"level": backend.level, "error": str(exc), "cooldown_s": self._cooldown_s},
            )
            self._count(f"unavailable:{backend.level}", 1, Metric.CACHE_LEVEL_UNAVAILABLE, backend)
            return DOWN
        if health.down:
            health.down = False
            logger.info("cache level back in use", extra={"level": backend.level})
        return result
