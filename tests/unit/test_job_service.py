"""JobService on in-memory adapters: upload tickets, status views, tenant isolation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sttpipe.adapters.memory import InMemoryJobRepository, InMemoryObjectStore
from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import ChunkProgress, ChunkState, JobStatus, Priority
from sttpipe.services.jobs import JobService, RequestRejected, UploadRequest


@pytest.fixture
def service() -> JobService:
    settings = Settings(max_upload_bytes=10_000_000, default_language="ru")
    return JobService(InMemoryObjectStore(), InMemoryJobRepository(), settings)


def request(**overrides: object) -> UploadRequest:
    fields: dict[str, object] = {
        "filename": "../../etc/Meeting notes (1).mp3",
        "content_type": "audio/mpeg",
        "size_bytes": 1234,
    }
    fields.update(overrides)
    return UploadRequest.model_validate(fields)


def test_ticket_targets_a_safe_key_under_the_jobs_prefix(service: JobService) -> None:
    ticket = service.create_upload(request(), tenant_id="t1")
    key = ticket.upload["fields"]["key"]
    assert key == f"uploads/{ticket.job_id}/Meeting_notes_1_.mp3"
    view = service.status(ticket.job_id, "t1")
    assert view is not None
    assert view.status is JobStatus.AWAITING_UPLOAD
    assert view.language == "ru" and view.priority is Priority.NORMAL
    assert view.downloads == {}


def test_unknown_types_and_oversized_uploads_are_refused(service: JobService) -> None:
    with pytest.raises(ValidationError, match="unsupported content type"):
        request(content_type="application/pdf")
    with pytest.raises(ValidationError):
        request(size_bytes=0)
    with pytest.raises(ValidationError):
        request(language="english")
    with pytest.raises(RequestRejected, match="over the limit"):
        service.create_upload(request(size_bytes=10_000_001), tenant_id="t1")


def test_another_tenant_cannot_see_the_job(service: JobService) -> None:
    ticket = service.create_upload(request(), tenant_id="t1")
    assert service.status(ticket.job_id, "t2") is None
    assert [j.job_id for j in service.list_jobs("t1", limit=10, before=None)] == [ticket.job_id]
    assert service.list_jobs("t2", limit=10, before=None) == []


def test_progress_and_downloads_follow_the_job(service: JobService) -> None:
    ticket = service.create_upload(request(priority="high"), tenant_id="t1")
    jobs = service._jobs
    jobs.add_chunks(
        ticket.job_id,
        [
            ChunkProgress(index=0, start_ms=0, end_ms=1000, state=ChunkState.DONE),
            ChunkProgress(index=1, start_ms=1000, end_ms=2000, state=ChunkState.SILENT),
            ChunkProgress(index=2, start_ms=2000, end_ms=3000, state=ChunkState.PENDING),
        ],
    )
    view = service.status(ticket.job_id, "t1")
    assert view is not None
    assert view.progress == {"chunks_total": 3, "chunks_finished": 2}
    jobs.finish(ticket.job_id, JobStatus.COMPLETED, stats={"chunks": 3})
    view = service.status(ticket.job_id, "t1")
    assert view is not None
    assert set(view.downloads) == set(keys.TRANSCRIPT_FORMATS)
    assert keys.transcript(ticket.job_id, "srt") in view.downloads["srt"]
