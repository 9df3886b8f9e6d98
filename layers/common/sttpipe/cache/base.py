"""What every cache level shares: keys, the sealed entry format, the level interface, errors.

A key names exactly what was computed: the content's SHA-256 (canonical PCM of a chunk, or the
uploaded object) with the model, language, prompt, response format and pipeline version, under
a namespace and a scope (the tenant, or `SHARED_SCOPE` when tenants share entries). Its `id`
hashes all of that but the namespace; model and pipeline version also stay readable in the
Redis key and the L3 row, so that they can be invalidated without knowing every key.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Protocol
from urllib.parse import quote

from sttpipe.domain.transcripts import CacheLevel
from sttpipe.observability import Metric

SHARED_SCOPE = "*"


class EntryKind(StrEnum):
    CHUNK = "chunk"
    UPLOAD = "upload"


class CacheUnavailable(Exception):
    """A level failed or timed out; the tiered cache skips it for a cool-down."""


class CorruptEntry(ValueError):
    """Stored bytes that are not a sealed entry of the key asked for."""


@dataclass(frozen=True)
class KeyParams:
    """Everything besides the audio that decides a transcription."""

    namespace: str
    scope: str
    model: str
    language: str | None
    prompt: str | None
    response_format: str
    pipeline_version: str


@dataclass(frozen=True)
class CacheKey:
    namespace: str
    kind: EntryKind
    id: str  # hex SHA-256 of kind, content hash and every parameter but the namespace
    content_sha256: str
    model: str
    pipeline_version: str
    scope: str
    redis_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Quoting keeps ':' and glob characters out of each part, so patterns match exactly.
        object.__setattr__(
            self,
            "redis_key",
            redis_key_pattern(
                self.namespace, self.kind, self.pipeline_version, self.model, self.id
            ),
        )

    @classmethod
    def build(cls, kind: EntryKind, content_sha256: str, params: KeyParams) -> CacheKey:
        described = json.dumps(
            [
                kind.value,
                content_sha256,
                params.scope,
                params.model,
                params.language,
                params.prompt,
                params.response_format,
                params.pipeline_version,
            ]
        )
        return cls(
            namespace=params.namespace,
            kind=kind,
            id=hashlib.sha256(described.encode()).hexdigest(),
            content_sha256=content_sha256,
            model=params.model,
            pipeline_version=params.pipeline_version,
            scope=params.scope,
        )


def redis_key_pattern(
    namespace: str,
    kind: str = "*",
    pipeline_version: str | None = None,
    model: str | None = None,
    key_id: str = "*",
) -> str:
    """`namespace:kind:version:model:id`; parts left out become `*` (for SCAN MATCH)."""
    version = "*" if pipeline_version is None else quote(pipeline_version, safe="")
    name = "*" if model is None else quote(model, safe="")
    return f"{namespace}:{kind}:{version}:{name}:{key_id}"


def seal(key: CacheKey, payload: bytes) -> bytes:
    """The stored form: the key's id and a checksum of the payload, a newline, the payload."""
    checksum = hashlib.blake2b(payload, digest_size=8).hexdigest()
    return f"{key.id}:{checksum}\n".encode() + payload


def unseal(key: CacheKey, data: bytes) -> bytes:
    """The payload of a sealed entry; CorruptEntry when it is not `key`'s or was damaged."""
    header, newline, payload = data.partition(b"\n")
    if not newline:
        raise CorruptEntry("no header")
    expected = f"{key.id}:{hashlib.blake2b(payload, digest_size=8).hexdigest()}".encode()
    if header != expected:
        raise CorruptEntry("key or checksum mismatch")
    return payload


class Lease(Protocol):
    """A single-flight lease on a key: while held, other workers wait for its holder's result."""

    def release(self) -> None:
        """Give it up (a lease that expired or whose store is gone needs nothing undone)."""
        ...


class CacheBackend(ABC):
    """One level of the tiered cache, the way Powertools' `BasePersistenceLayer` is one
    idempotency store: the tiered cache knows levels only through this class.

    Every level stores, finds and deletes sealed entries. The other operations are capabilities
    that a level may lack; their defaults say "nothing here" (no entries found by content, no
    usage figures, no hit counts), so the tiered cache calls every level alike. Failures (down,
    timed out) raise CacheUnavailable and nothing else.
    """

    level: CacheLevel
    # Seen by every container (Redis, PostgreSQL); False for a container's own memory.
    shared: ClassVar[bool] = True
    # Holds the fleet's coordination: single-flight leases, the generation stamp that
    # invalidates every container's L1, and the shared statistics counters.
    coordinates: ClassVar[bool] = False

    @abstractmethod
    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, bytes]: ...

    @abstractmethod
    def set_many(self, entries: Mapping[CacheKey, bytes]) -> None: ...

    @abstractmethod
    def delete_many(self, keys: Sequence[CacheKey]) -> None: ...

    @abstractmethod
    def delete_matching(
        self, *, model: str | None = None, pipeline_version: str | None = None
    ) -> int:
        """Delete every entry of a model and/or pipeline version; returns how many went."""

    def add_new(self, entries: Mapping[CacheKey, bytes]) -> int:
        """Store the entries this level does not hold yet; returns how many it stored."""
        held = self.get_many(list(entries))
        new = {key: data for key, data in entries.items() if key not in held}
        self.set_many(new)
        return len(new)

    def delete_contents(self, scope: str, content_sha256s: Sequence[str]) -> list[CacheKey]:
        """Delete the entries of these contents in `scope` and return their keys, so that the
        other levels drop them too. Only a level that indexes contents can find them."""
        return []

    def forget_local(self) -> None:
        """Drop whatever only this container holds (another container may have invalidated
        it); shared levels hold nothing of the kind."""
        return None  # nothing to do by default

    def record_hits(self, hits: Mapping[CacheKey, int]) -> None:
        """Add hits counted at any level, for a level that ranks entries by use."""
        return None  # nothing to do by default

    def most_used(self, limit: int, min_hits: int) -> list[tuple[CacheKey, bytes]]:
        """Live entries with at least `min_hits` hits, the most used first."""
        return []

    def purge_expired(self) -> int:
        """Delete expired entries a level does not expire by itself; returns how many."""
        return 0

    def usage(self) -> tuple[int, int] | None:
        """(entries, bytes) stored, None when the level cannot tell cheaply."""
        return None

    def close(self) -> None:
        """Release connections and pools."""
        return None  # nothing to do by default

    # -- coordination: only a level with `coordinates` answers these

    def lease(self, key: CacheKey, ttl_s: float) -> Lease | None:
        """The key's lease if nobody holds it (it expires if its holder dies), else None."""
        raise NotImplementedError(f"{self.level} does not coordinate the fleet")

    def peek(self, key: CacheKey) -> tuple[bytes | None, bool]:
        """The entry if stored, and whether its lease is still held."""
        raise NotImplementedError(f"{self.level} does not coordinate the fleet")

    def generation(self) -> int:
        raise NotImplementedError(f"{self.level} does not coordinate the fleet")

    def bump_generation(self) -> int:
        raise NotImplementedError(f"{self.level} does not coordinate the fleet")

    def add_counters(self, counters: Mapping[str, int]) -> None:
        raise NotImplementedError(f"{self.level} does not coordinate the fleet")

    def counters(self) -> dict[str, int]:
        raise NotImplementedError(f"{self.level} does not coordinate the fleet")


# Where the tiered cache reports what happened: metric, level (None when there is none), value.
MetricSink = Callable[[Metric, CacheLevel | None, int], None]


def no_metrics(metric: Metric, level: CacheLevel | None, value: int) -> None:
    """The default sink: counters are still kept (TieredCache.counters)."""
