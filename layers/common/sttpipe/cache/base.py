"""What every cache level shares: keys, the sealed entry format, the backend interface, errors.

A key names exactly what was computed: the content's SHA-256 (canonical PCM of a chunk, or the
uploaded object) with the model, language, prompt, response format and pipeline version, under
a namespace and a scope (the tenant, or `SHARED_SCOPE` when tenants share entries). Its `id`
hashes all of that but the namespace; model and pipeline version also stay readable in the
Redis key and the L3 row, so that they can be invalidated without knowing every key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol
from urllib.parse import quote

from sttpipe.observability import Metric

SHARED_SCOPE = "*"


class CacheLevel(StrEnum):
    L1 = "L1"  # this container's memory
    L2 = "L2"  # Redis (ElastiCache)
    L3 = "L3"  # PostgreSQL (RDS)


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


class CacheBackend(Protocol):
    """One level. Failures (down, timed out) raise CacheUnavailable and nothing else."""

    level: CacheLevel

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, bytes]: ...

    def set_many(self, entries: Mapping[CacheKey, bytes]) -> None: ...

    def delete_many(self, keys: Sequence[CacheKey]) -> None: ...


# Where the tiered cache reports what happened: metric, level (None when there is none), value.
MetricSink = Callable[[Metric, CacheLevel | None, int], None]


def no_metrics(metric: Metric, level: CacheLevel | None, value: int) -> None:
    """The default sink: counters are still kept (TieredCache.counters)."""
