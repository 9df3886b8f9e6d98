"""Domain events at the moment each lifecycle transition is recorded.

Every transition of a job or a chunk goes through the JobRepository, so wrapping it announces
each one exactly where it happens, after it is stored, without the services knowing about
events: the splitter's TRANSCRIBING and a re-run's reopen are JobQueued, a worker's DONE/FAILED
chunk is ChunkCompleted/ChunkFailed, the merge's (or a rejected upload's) finish is
FileCompleted, FilePartial or FileFailed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sttpipe.domain.events import (
    FILE_FINISHED,
    ChunkCompleted,
    ChunkFailed,
    DomainEvent,
    JobQueued,
)
from sttpipe.domain.models import ChunkProgress, ChunkState, Job, JobStatus, JobView
from sttpipe.ports import EventPublisher, JobRepository


class PublishingJobRepository:
    def __init__(self, inner: JobRepository, events: EventPublisher) -> None:
        self._inner = inner
        self._events = events

    def set_status(self, job_id: str, status: JobStatus, *, reason: str | None = None) -> None:
        self._inner.set_status(job_id, status, reason=reason)
        if status is JobStatus.TRANSCRIBING:
            self._queued(job_id)

    def claim_upload(self, job_id: str, etag: str) -> bool:
        return self._inner.claim_upload(job_id, etag)

    def reopen(self, job_id: str) -> int | None:
        run = self._inner.reopen(job_id)
        if run is not None:
            self._queued(job_id)  # the chunks it made PENDING again are the ones to transcribe
        return run

    def set_chunk_state(
        self,
        job_id: str,
        index: int,
        state: ChunkState,
        *,
        error: str | None = None,
        run: int | None = None,
    ) -> bool:
        if not self._inner.set_chunk_state(job_id, index, state, error=error, run=run):
            return False
        if state is ChunkState.DONE:
            self._events.publish(ChunkCompleted(job_id=job_id, chunk_index=index))
        elif state is ChunkState.FAILED:
            self._events.publish(ChunkFailed(job_id=job_id, chunk_index=index, reason=error))
        return True

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        stats: dict[str, Any],
        reason: str | None = None,
        run: int | None = None,
    ) -> bool:
        before = self._view(job_id).job  # the status it ends from
        if not self._inner.finish(job_id, status, stats=stats, reason=reason, run=run):
            return False
        event = FILE_FINISHED.get(status)
        if event is not None:
            since_created = (datetime.now(UTC) - before.created_at).total_seconds()
            self._events.publish(
                event(
                    job_id=job_id,
                    tenant_id=before.tenant_id,
                    reason=reason,
                    duration_s=stats.get("duration_s"),
                    chunks_total=stats.get("chunks"),
                    chunks_failed=stats.get("chunks_failed"),
                    ended_from=before.status,
                    seconds_since_created=max(0.0, since_created),
                )
            )
        return True

    def _queued(self, job_id: str) -> None:
        view = self._view(job_id)
        self._events.publish(
            JobQueued(
                job_id=job_id,
                tenant_id=view.job.tenant_id,
                priority=view.job.priority,
                chunks_total=len(view.chunks),
                chunks_to_transcribe=sum(c.state is ChunkState.PENDING for c in view.chunks),
                run=view.job.runs,
            )
        )

    def _view(self, job_id: str) -> JobView:
        view = self._inner.get(job_id)
        if view is None:  # the inner repository just wrote it: this would be a bug there
            raise LookupError(f"job {job_id} vanished while being updated")
        return view

    # ---- unchanged --------------------------------------------------------------------------

    def add(self, job: Job) -> None:
        self._inner.add(job)

    def get(self, job_id: str) -> JobView | None:
        return self._inner.get(job_id)

    def add_chunks(self, job_id: str, chunks: list[ChunkProgress]) -> None:
        self._inner.add_chunks(job_id, chunks)

    def list_jobs(self, tenant_id: str, limit: int, before: str | None = None) -> list[Job]:
        return self._inner.list_jobs(tenant_id, limit, before)

    def unsettled(self, *, unchanged_since: datetime, limit: int) -> list[Job]:
        return self._inner.unsettled(unchanged_since=unchanged_since, limit=limit)

    def pin_language(self, job_id: str, language: str, *, run: int) -> bool:
        return self._inner.pin_language(job_id, language, run=run)

    def remember_content(self, job_id: str, content_sha256s: Sequence[str]) -> None:
        self._inner.remember_content(job_id, content_sha256s)

    def content_hashes(self, job_id: str) -> list[str]:
        return self._inner.content_hashes(job_id)

    def delete(self, job_id: str) -> None:
        self._inner.delete(job_id)


class FanOut:
    """One EventPublisher that hands every event to several."""

    def __init__(self, *publishers: EventPublisher) -> None:
        self._publishers = publishers

    def publish(self, *events: DomainEvent) -> None:
        for publisher in self._publishers:
            publisher.publish(*events)
