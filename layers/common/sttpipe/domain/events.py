"""Domain events of the job lifecycle, published on EventBridge (source `sttpipe`).

Each event is versioned twice over: the detail-type names it with its version
(`JobQueued.v1`), so that rules can route by version, and the detail carries `version`, so
that a consumer holding only the detail knows which schema it reads. A change that removes or
retypes a field is a new version (`v2`), published next to the old one until consumers move.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from sttpipe.domain.models import JobStatus, Priority

EVENT_SOURCE = "sttpipe"


class DomainEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    NAME: ClassVar[str]
    VERSION: ClassVar[int] = 1

    # Delivery is at least once (as is every message in the pipeline): consumers dedupe on
    # event_id where a repeat matters.
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    job_id: str | None = None

    @classmethod
    def detail_type(cls) -> str:
        return f"{cls.NAME}.v{cls.VERSION}"

    def detail(self) -> dict[str, Any]:
        return {"version": self.VERSION, **self.model_dump(mode="json")}


class JobQueued(DomainEvent):
    """The upload was split and its chunks handed to the priority queue."""

    NAME = "JobQueued"
    job_id: str
    tenant_id: str
    priority: Priority
    chunks_total: int
    chunks_to_transcribe: int  # silent chunks never reach the queue
    run: int = 1  # 1 for the upload's split, higher for a re-run of its failed chunks


class ChunkCompleted(DomainEvent):
    NAME = "ChunkCompleted"
    job_id: str
    chunk_index: int


class ChunkFailed(DomainEvent):
    """A chunk was given up on (its last delivery, or an error retrying cannot fix)."""

    NAME = "ChunkFailed"
    job_id: str
    chunk_index: int
    reason: str | None = None


class _FileFinished(DomainEvent):
    job_id: str
    tenant_id: str
    reason: str | None = None
    duration_s: float | None = None  # of the recording
    chunks_total: int | None = None
    chunks_failed: int | None = None
    # The status it ended from: SPLITTING when the splitter ended it (a rejected upload, or one
    # answered from the cache), else the transcription's end.
    ended_from: JobStatus | None = None
    seconds_since_created: float | None = None  # from the upload form to the final status


class FileCompleted(_FileFinished):
    NAME = "FileCompleted"


class FilePartial(_FileFinished):
    """Transcripts were written, with the failed chunks marked in them."""

    NAME = "FilePartial"


class FileFailed(_FileFinished):
    NAME = "FileFailed"


class CacheInvalidated(DomainEvent):
    """Cached transcripts were dropped, e.g. for one job or one tenant (job_id None)."""

    NAME = "CacheInvalidated"
    tenant_id: str
    entries: int
    reason: str


FILE_FINISHED: dict[JobStatus, type[_FileFinished]] = {
    JobStatus.COMPLETED: FileCompleted,
    JobStatus.PARTIAL: FilePartial,
    JobStatus.FAILED: FileFailed,
}

EVENT_TYPES: dict[str, type[DomainEvent]] = {
    t.detail_type(): t
    for t in (
        JobQueued,
        ChunkCompleted,
        ChunkFailed,
        FileCompleted,
        FilePartial,
        FileFailed,
        CacheInvalidated,
    )
}


def parse_event(detail_type: str, detail: dict[str, Any]) -> DomainEvent:
    """The event an EventBridge entry (or a rule target's `detail-type`/`detail`) carries."""
    kind = EVENT_TYPES.get(detail_type)
    if kind is None:
        raise ValueError(f"unknown domain event type {detail_type!r}")
    body = dict(detail)
    version = body.pop("version", None)
    if version != kind.VERSION:
        raise ValueError(f"{detail_type} carries version {version!r}, expected {kind.VERSION}")
    return kind.model_validate(body)
