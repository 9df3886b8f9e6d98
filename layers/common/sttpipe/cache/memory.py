"""L1: this container's memory. An LRU bounded in bytes, with a TTL, safe across threads.

A warm Lambda container keeps it between invocations; entries of other containers' writes and
invalidations reach it through the tiered cache's generation check.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from sttpipe.cache.base import CacheBackend, CacheKey
from sttpipe.domain.transcripts import CacheLevel

# Rough per-entry bookkeeping (dict slot, tuple, key string) counted against the byte bound.
_ENTRY_OVERHEAD = 200


class MemoryCache(CacheBackend):
    level = CacheLevel.L1
    shared = False

    def __init__(
        self, max_bytes: int, ttl_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[CacheKey, bytes, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, bytes]:
        now = self._clock()
        found: dict[CacheKey, bytes] = {}
        with self._lock:
            for key in keys:
                entry = self._entries.get(key.id)
                if entry is None:
                    continue
                _, data, expires = entry
                if expires <= now:
                    self._drop(key.id)
                    continue
                self._entries.move_to_end(key.id)
                found[key] = data
        return found

    def set_many(self, entries: Mapping[CacheKey, bytes]) -> None:
        expires = self._clock() + self._ttl_s
        with self._lock:
            for key, data in entries.items():
                self._drop(key.id)
                size = len(data) + _ENTRY_OVERHEAD
                if size > self._max_bytes:
                    continue  # would evict everything else and still not fit
                self._entries[key.id] = (key, data, expires)
                self._bytes += size
            while self._bytes > self._max_bytes:
                oldest = next(iter(self._entries))
                self._drop(oldest)

    def delete_many(self, keys: Sequence[CacheKey]) -> None:
        with self._lock:
            for key in keys:
                self._drop(key.id)

    def delete_matching(
        self, *, model: str | None = None, pipeline_version: str | None = None
    ) -> int:
        with self._lock:
            matching = [
                key_id
                for key_id, (key, _, _) in self._entries.items()
                if (model is None or key.model == model)
                and (pipeline_version is None or key.pipeline_version == pipeline_version)
            ]
            for key_id in matching:
                self._drop(key_id)
        return len(matching)

    def forget_local(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def usage(self) -> tuple[int, int]:
        """(entries, bytes) held now, bookkeeping included."""
        with self._lock:
            return len(self._entries), self._bytes

    def _drop(self, key_id: str) -> None:
        entry = self._entries.pop(key_id, None)
        if entry is not None:
            self._bytes -= len(entry[1]) + _ENTRY_OVERHEAD
