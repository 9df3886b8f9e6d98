"""JobService on in-memory adapters: upload tickets, status views, tenant isolation, re-runs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sttpipe_testing.fakes import (
    InMemoryEventPublisher,
    InMemoryJobRepository,
    InMemoryObjectStore,
    InMemoryWorkflow,
    started_run,
)

from sttpipe.adapters.stepfunctions import execution_name
from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.events import JobQueued
from sttpipe.domain.models import (
    ChunkProgress,
    ChunkRef,
    ChunkState,
    ExecutionInput,
    JobStatus,
    LanguageSource,
    Manifest,
    Priority,
)
from sttpipe.services.jobs import (
    FeatureUnavailable,
    JobBusy,
    JobService,
    NothingToRerun,
    RequestRejected,
    UploadRequest,
)
from sttpipe.services.lifecycle import PublishingJobRepository


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


# ---- re-runs --------------------------------------------------------------------------------

HIGH_QUEUE = "https://sqs/high"
PENDING, DONE, FAILED, SILENT = (
    ChunkState.PENDING,
    ChunkState.DONE,
    ChunkState.FAILED,
    ChunkState.SILENT,
)


class Rerun:
    """A job service with a workflow, its repository announcing events as on AWS."""

    def __init__(
        self, workflow: InMemoryWorkflow | None = None, jobs: InMemoryJobRepository | None = None
    ) -> None:
        self.store = InMemoryObjectStore()
        self.events = InMemoryEventPublisher()
        self.jobs = PublishingJobRepository(jobs or InMemoryJobRepository(), self.events)
        self.workflow = workflow or InMemoryWorkflow()
        self.service = JobService(
            self.store,
            self.jobs,
            Settings(queue_url_high=HIGH_QUEUE, queue_url_normal="https://sqs/normal"),
            workflow=self.workflow,
        )

    def ended_job(
        self,
        states: list[ChunkState],
        status: JobStatus = JobStatus.PARTIAL,
        *,
        reason: str | None = "1 chunk(s) failed: 1",
        tenant: str = "t1",
    ) -> str:
        """A split job of high priority whose chunks ended in `states`, then `status`."""
        job_id = self.service.create_upload(request(priority="high"), tenant_id=tenant).job_id
        spans = [(i, i * 1000, (i + 1) * 1000) for i in range(len(states))]
        refs = [
            ChunkRef(
                index=i, key=keys.chunk_audio(job_id, i), start_ms=s, end_ms=e, pcm_sha256="a" * 64
            )
            for (i, s, e), state in zip(spans, states, strict=True)
            if state is not ChunkState.SILENT
        ]
        manifest = Manifest(
            execution=ExecutionInput(job_id=job_id, language="ru", queue_url="old", chunks=refs),
            duration_s=len(states),
            chunks_total=len(states),
            chunks_silent=states.count(ChunkState.SILENT),
            split_seconds=0.1,
        )
        self.store.put_bytes(keys.manifest(job_id), manifest.model_dump_json().encode(), "x/json")
        self.jobs.add_chunks(
            job_id,
            [ChunkProgress(index=i, start_ms=s, end_ms=e, state=PENDING) for i, s, e in spans],
        )
        for (i, _, _), state in zip(spans, states, strict=True):
            error = "HTTP 500" if state is ChunkState.FAILED else None
            self.jobs.set_chunk_state(job_id, i, state, error=error)
        self.jobs.finish(job_id, status, stats={"chunks": len(states)}, reason=reason)
        return job_id

    def executions(self) -> dict[str, ExecutionInput]:
        return {
            arn.rsplit(":", 1)[-1]: started_run(self.store, body)
            for arn, body in self.workflow.executions.items()
        }


def test_rerun_of_a_partial_job_starts_run_2_with_only_its_failed_chunk() -> None:
    world = Rerun()
    job_id = world.ended_job([DONE, FAILED, SILENT, DONE])

    view = world.service.rerun(job_id, "t1")

    assert view is not None
    assert (view.status, view.runs, view.failure_reason) == (JobStatus.TRANSCRIBING, 2, None)
    assert [(c.state, c.error) for c in view.chunks] == [
        (DONE, None),
        (PENDING, None),
        (SILENT, None),
        (DONE, None),
    ]
    started = world.executions()
    assert list(started) == [execution_name(job_id, 2)]
    execution = started[execution_name(job_id, 2)]
    assert [c.index for c in execution.chunks] == [1]
    assert execution.queue_url == HIGH_QUEUE  # the job's priority, not the old URL
    assert execution.language == "ru"
    queued = [e for e in world.events.events if isinstance(e, JobQueued)]
    assert [(e.chunks_total, e.chunks_to_transcribe) for e in queued] == [(4, 1)]


def test_a_job_the_state_machine_failed_reruns_its_pending_and_failed_chunks() -> None:
    world = Rerun()
    job_id = world.ended_job(
        [DONE, FAILED, PENDING], JobStatus.FAILED, reason="The job's state machine failed"
    )
    assert world.service.rerun(job_id, "t1") is not None
    assert [c.index for c in world.executions()[execution_name(job_id, 2)].chunks] == [1, 2]


def test_a_running_job_cannot_be_rerun_again() -> None:
    world = Rerun()
    job_id = world.ended_job([DONE, FAILED])
    world.service.rerun(job_id, "t1")
    with pytest.raises(JobBusy, match="TRANSCRIBING"):
        world.service.rerun(job_id, "t1")
    assert len(world.workflow.executions) == 1


class RacedRepository(InMemoryJobRepository):
    """Another request reopens the job between this one's read of it and its own reopen."""

    def reopen(self, job_id: str) -> int | None:
        super().reopen(job_id)
        return super().reopen(job_id)


def test_a_rerun_that_loses_the_race_to_reopen_the_job_is_busy() -> None:
    world = Rerun(jobs=RacedRepository())
    job_id = world.ended_job([DONE, FAILED])
    with pytest.raises(JobBusy, match="already being re-run"):
        world.service.rerun(job_id, "t1")
    assert world.workflow.executions == {}


@pytest.mark.parametrize(
    ("states", "status", "reason", "message"),
    [
        ([DONE, DONE], JobStatus.COMPLETED, None, "is COMPLETED: nothing to re-run"),
        ([DONE, SILENT], JobStatus.FAILED, "merge failed", "has no failed chunks to re-run"),
    ],
)
def test_a_job_with_nothing_to_redo_is_refused(
    states: list[ChunkState], status: JobStatus, reason: str | None, message: str
) -> None:
    world = Rerun()
    job_id = world.ended_job(states, status, reason=reason)
    with pytest.raises(NothingToRerun, match=message):
        world.service.rerun(job_id, "t1")
    view = world.jobs.get(job_id)
    assert view is not None and (view.job.status, view.job.runs) == (status, 1)
    assert world.workflow.executions == {}


def test_a_rejected_or_missing_upload_is_refused_with_what_to_do() -> None:
    world = Rerun()
    waiting = world.service.create_upload(request(), tenant_id="t1").job_id
    with pytest.raises(NothingToRerun, match="AWAITING_UPLOAD: nothing to re-run"):
        world.service.rerun(waiting, "t1")
    rejected = world.service.create_upload(request(), tenant_id="t1").job_id
    world.jobs.finish(rejected, JobStatus.FAILED, stats={}, reason="not an audio file")
    with pytest.raises(
        NothingToRerun, match="the upload was rejected: not an audio file; upload it again"
    ):
        world.service.rerun(rejected, "t1")
    assert world.workflow.executions == {}


def test_another_tenants_or_an_unknown_job_is_not_found() -> None:
    world = Rerun()
    job_id = world.ended_job([DONE, FAILED], tenant="t1")
    assert world.service.rerun(job_id, "t2") is None
    assert world.service.rerun("0" * 32, "t1") is None
    view = world.jobs.get(job_id)
    assert view is not None and view.job.status is JobStatus.PARTIAL
    assert world.workflow.executions == {}


class BrokenWorkflow(InMemoryWorkflow):
    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    def start(self, job_id: str, execution_input: str, run: int = 1) -> str:
        if self.broken:
            raise ConnectionError("Step Functions is unreachable")
        return super().start(job_id, execution_input, run)


def test_a_failed_start_puts_the_job_back_as_it_ended() -> None:
    workflow = BrokenWorkflow()
    world = Rerun(workflow)
    job_id = world.ended_job([DONE, FAILED])

    with pytest.raises(ConnectionError):
        world.service.rerun(job_id, "t1")

    view = world.jobs.get(job_id)
    assert view is not None
    assert (view.job.status, view.job.failure_reason, view.job.stats) == (
        JobStatus.PARTIAL,
        "1 chunk(s) failed: 1",
        {"chunks": 2},
    )
    # It can be re-run again; the failed start's run number is not reused, since that start
    # may have created its execution after all.
    workflow.broken = False
    again = world.service.rerun(job_id, "t1")
    assert again is not None and again.runs == 3
    assert list(world.executions()) == [execution_name(job_id, 3)]


def test_without_a_workflow_reruns_are_unavailable(service: JobService) -> None:
    with pytest.raises(FeatureUnavailable, match="re-runs"):
        service.rerun("0" * 32, "t1")


def test_a_prompt_is_kept_with_the_job_and_bounded(service: JobService) -> None:
    ticket = service.create_upload(request(prompt="Grafana, Kubernetes, Anna"), tenant_id="t1")
    view = service.status(ticket.job_id, "t1")
    assert view is not None and view.prompt == "Grafana, Kubernetes, Anna"
    with pytest.raises(ValidationError):
        request(prompt="x" * 801)
    with pytest.raises(ValidationError):
        request(prompt="")


@pytest.mark.parametrize(
    ("fields", "default", "expected"),
    [
        ({"language": "de"}, "ru", ("de", LanguageSource.REQUESTED)),
        ({}, "ru", ("ru", LanguageSource.REQUESTED)),
        ({}, None, (None, LanguageSource.DETECT)),
        ({"mixed_languages": True}, None, (None, LanguageSource.PER_CHUNK)),
        ({"mixed_languages": True}, "ru", (None, LanguageSource.PER_CHUNK)),
    ],
)
def test_a_job_without_language_detects_it_once_unless_it_allows_mixed_languages(
    fields: dict[str, object], default: str | None, expected: tuple[str | None, LanguageSource]
) -> None:
    jobs = InMemoryJobRepository()
    service = JobService(InMemoryObjectStore(), jobs, Settings(default_language=default))
    ticket = service.create_upload(request(**fields), tenant_id="t1")
    view = jobs.get(ticket.job_id)
    assert view is not None
    assert (view.job.language, view.job.language_source) == expected
    with pytest.raises(ValidationError):
        request(language="de", mixed_languages=True)  # one language or many, not both
