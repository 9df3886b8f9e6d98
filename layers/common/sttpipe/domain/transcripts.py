"""What transcription produces, at every stage: a speech backend's answer for one chunk, the
cached value of a chunk or a whole upload (times relative, so the same audio reuses it anywhere),
and a job's assembled transcript. Pure values; the ports trade in them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import BaseModel, Field

from sttpipe.domain.models import ChunkRef, ChunkTranscript, LanguageSource, Segment, Timing

T = TypeVar("T")


# ---- a speech backend's answer -----------------------------------------------------------------


@dataclass(frozen=True)
class RelativeSegment:
    """A segment with times relative to the start of the chunk, in seconds."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Transcription:
    text: str
    segments: tuple[RelativeSegment, ...] = field(default=())
    language: str | None = None
    attempts: int = 1  # HTTP calls it took, retries included


# ---- the transcript cache ----------------------------------------------------------------------


class CacheLevel(StrEnum):
    L1 = "L1"  # this container's memory
    L2 = "L2"  # Redis (ElastiCache)
    L3 = "L3"  # PostgreSQL (RDS)


@dataclass(frozen=True)
class Hit(Generic[T]):
    """A value found in the cache, and the level it came from."""

    value: T
    level: CacheLevel


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
        """The transcript of `chunk` with absolute times, as the worker stores it (times in its
        audio, less the lead-in the splitter put before the recording's)."""
        offset = chunk.start_ms - chunk.lead_in_ms
        return ChunkTranscript(
            index=chunk.index,
            start_ms=chunk.start_ms,
            end_ms=chunk.end_ms,
            text=self.text,
            segments=[
                Segment(
                    start_ms=max(chunk.start_ms, offset + s.start_ms),
                    end_ms=min(chunk.end_ms, offset + s.end_ms),
                    text=s.text,
                    chunk_index=chunk.index,
                    timing=Timing.API,
                )
                for s in self.segments
            ],
            api_calls=api_calls,
            cache_level=cache_level.value if cache_level else None,
            seconds=seconds,
        )


# ---- a job's transcript ------------------------------------------------------------------------


class FailedChunk(BaseModel):
    """A stretch of the recording with no transcript, and why."""

    index: int
    start_ms: int
    end_ms: int
    reason: str


class Transcript(BaseModel):
    language: str | None = None
    # How `language` was chosen: "requested", "detected" (once, then sent with every chunk) or
    # "per_chunk" (none: each chunk's call detected its own).
    language_source: LanguageSource | None = None
    segments: list[Segment] = Field(default_factory=list)  # ordered, non-overlapping
    failed: list[FailedChunk] = Field(default_factory=list)  # ordered by index

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)


class CachedUpload(BaseModel):
    """A whole upload's finished transcript (times absolute: it is the same file)."""

    transcript: Transcript
    duration_s: float
    chunks: int
    chunks_silent: int
