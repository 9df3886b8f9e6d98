"""MergeService on in-memory adapters: COMPLETED, PARTIAL and FAILED outcomes and their files."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sttpipe_testing.fakes import InMemoryJobRepository, InMemoryObjectStore, InMemoryWorkflow

from sttpipe.domain import keys
from sttpipe.domain.models import (
    ChunkOutcome,
    ChunkProgress,
    ChunkRef,
    ChunkState,
    ChunkTranscript,
    ExecutionInput,
    Job,
    JobFailureNotice,
    JobStatus,
    Manifest,
    MergeTask,
    TaskError,
)
from sttpipe.services.merging import MergeService

JOB_ID = "fedcba9876543210fedcba9876543210"
SPANS = [(0, 10_000), (10_000, 20_000), (20_000, 30_000)]


World = tuple[MergeService, InMemoryObjectStore, InMemoryJobRepository, InMemoryWorkflow]


@pytest.fixture
def world() -> World:
    store, jobs, workflow = InMemoryObjectStore(), InMemoryJobRepository(), InMemoryWorkflow()
    now = datetime.now(UTC)
    jobs.add(Job(job_id=JOB_ID, filename="a.wav", upload_key="u", created_at=now, updated_at=now))
    jobs.add_chunks(
        JOB_ID,
        [
            ChunkProgress(index=i, start_ms=s, end_ms=e, state=ChunkState.PENDING)
            for i, (s, e) in enumerate(SPANS)
        ],
    )
    refs = [
        ChunkRef(
            index=i, key=keys.chunk_audio(JOB_ID, i), start_ms=s, end_ms=e, pcm_sha256=f"{i:064x}"
        )
        for i, (s, e) in enumerate(SPANS)
    ]
    manifest = Manifest(
        execution=ExecutionInput(job_id=JOB_ID, language="en", queue_url="q", chunks=refs),
        duration_s=30.0,
        chunks_total=4,
        chunks_silent=1,
        split_seconds=0.5,
    )
    store.put_bytes(keys.manifest(JOB_ID), manifest.model_dump_json().encode(), "application/json")
    return MergeService(store, jobs, workflow), store, jobs, workflow


def _done(
    store: InMemoryObjectStore, index: int, text: str, level: str | None = None
) -> ChunkOutcome:
    start, end = SPANS[index]
    result = ChunkTranscript(
        index=index,
        start_ms=start,
        end_ms=end,
        text=text,
        api_calls=1,
        cache_level=level,
        seconds=0.25,
    )
    key = keys.chunk_result(JOB_ID, index)
    store.put_bytes(key, result.model_dump_json().encode(), "application/json")
    return ChunkOutcome(index=index, result_key=key)


def _failed(
    index: int, error: str = "Chunk.Failed", cause: str | None = "HTTP 400"
) -> ChunkOutcome:
    return ChunkOutcome(index=index, error=TaskError(Error=error, Cause=cause))


def test_all_chunks_done_completes_the_job_with_every_format(world: World) -> None:
    service, store, jobs, workflow = world
    token = workflow.open_task()
    outcomes = [
        _done(store, 2, "Third one."),
        _done(store, 0, "First one.", "L2"),
        _done(store, 1, "Second one."),
    ]
    assert (
        service.merge(MergeTask(task_token=token, job_id=JOB_ID, results=outcomes))
        is JobStatus.COMPLETED
    )

    text = store.get_bytes(keys.transcript(JOB_ID, "txt")).decode()
    assert text.split() == ["First", "one.", "Second", "one.", "Third", "one."]
    document = json.loads(store.get_bytes(keys.transcript(JOB_ID, "json")))
    stats = document["stats"]
    assert stats["chunks"] == 4 and stats["chunks_silent"] == 1
    assert stats["chunks_transcribed"] == 3 and stats["speech_api_calls"] == 3
    assert stats["cache_hits"] == {"L1": 0, "L2": 1, "L3": 0}
    assert {"split_seconds", "transcribe_seconds", "merge_seconds"} <= set(stats)
    assert stats["runs"] == 1
    assert store.get_bytes(keys.transcript(JOB_ID, "vtt")).decode().startswith("WEBVTT")
    assert store.get_bytes(keys.transcript(JOB_ID, "tsv")).decode().startswith("start\tend\t")
    view = jobs.get(JOB_ID)
    assert view is not None and view.job.status is JobStatus.COMPLETED
    assert workflow.answers[token].succeeded


def test_some_chunks_failed_makes_a_partial_transcript_that_names_them(world: World) -> None:
    service, store, jobs, workflow = world
    outcomes = [
        _done(store, 0, "First one."),
        _failed(1, "States.HeartbeatTimeout", None),
        _done(store, 2, "Third one."),
    ]
    status = service.merge(
        MergeTask(task_token=workflow.open_task(), job_id=JOB_ID, results=outcomes)
    )
    assert status is JobStatus.PARTIAL
    view = jobs.get(JOB_ID)
    assert view is not None
    assert view.job.failure_reason == "1 chunk(s) failed: 1"
    assert [c.state for c in view.chunks] == [
        ChunkState.PENDING,
        ChunkState.FAILED,
        ChunkState.PENDING,
    ]
    assert "timed out" in (view.chunks[1].error or "")
    document = json.loads(store.get_bytes(keys.transcript(JOB_ID, "json")))
    assert [f["index"] for f in document["failed_chunks"]] == [1]


def test_every_chunk_failed_fails_the_job_with_the_first_reason_and_writes_nothing(
    world: World,
) -> None:
    service, store, jobs, workflow = world
    outcomes = [
        _failed(0, cause="Chunk 0 could not be transcribed: HTTP 503"),
        _failed(1),
        _failed(2),
    ]
    status = service.merge(
        MergeTask(task_token=workflow.open_task(), job_id=JOB_ID, results=outcomes)
    )
    assert status is JobStatus.FAILED
    view = jobs.get(JOB_ID)
    assert (
        view is not None and view.job.failure_reason == "Chunk 0 could not be transcribed: HTTP 503"
    )
    assert store.size(keys.transcript(JOB_ID, "txt")) is None


def test_the_reason_a_worker_recorded_wins_over_a_missing_cause(world: World) -> None:
    service, store, jobs, workflow = world
    jobs.set_chunk_state(
        JOB_ID, 1, ChunkState.FAILED, error="Chunk 1 could not be transcribed: 413"
    )
    outcomes = [_done(store, 0, "One."), _failed(1, cause=None), _done(store, 2, "Three.")]
    service.merge(MergeTask(task_token=workflow.open_task(), job_id=JOB_ID, results=outcomes))
    document = json.loads(store.get_bytes(keys.transcript(JOB_ID, "json")))
    assert document["failed_chunks"][0]["reason"] == "Chunk 1 could not be transcribed: 413"


def test_a_failure_of_the_state_machine_itself_fails_the_job(world: World) -> None:
    service, _, jobs, _ = world
    service.record_failure(JobFailureNotice(job_id=JOB_ID, error=TaskError(Error="States.Timeout")))
    view = jobs.get(JOB_ID)
    assert view is not None and view.job.status is JobStatus.FAILED
    assert view.job.failure_reason == "The job's state machine failed with States.Timeout."


def _merge(
    service: MergeService, workflow: InMemoryWorkflow, *outcomes: ChunkOutcome, run: int = 1
) -> JobStatus | None:
    return service.merge(
        MergeTask(task_token=workflow.open_task(), job_id=JOB_ID, results=list(outcomes), run=run)
    )


def test_a_rerun_merges_its_chunks_with_those_an_earlier_run_stored(world: World) -> None:
    service, store, jobs, workflow = world
    first = _merge(
        service,
        workflow,
        _done(store, 0, "First one.", "L1"),
        _failed(1, cause="HTTP 503"),
        _done(store, 2, "Third one."),
    )
    assert first is JobStatus.PARTIAL
    assert jobs.reopen(JOB_ID) == 2

    # The re-run's Map held only chunk 1.
    assert _merge(service, workflow, _done(store, 1, "Second one."), run=2) is JobStatus.COMPLETED

    text = store.get_bytes(keys.transcript(JOB_ID, "txt")).decode()
    assert text.split() == ["First", "one.", "Second", "one.", "Third", "one."]
    stats = json.loads(store.get_bytes(keys.transcript(JOB_ID, "json")))["stats"]
    assert stats["chunks_transcribed"] == 3 and stats["chunks_failed"] == 0
    assert stats["speech_api_calls"] == 3  # every stored result's, not only the re-run's
    assert stats["cache_hits"] == {"L1": 1, "L2": 0, "L3": 0}
    assert stats["runs"] == 2
    view = jobs.get(JOB_ID)
    assert view is not None
    assert (view.job.status, view.job.failure_reason) == (JobStatus.COMPLETED, None)
    assert view.job.stats["runs"] == 2


def test_a_chunk_of_a_rerun_with_no_stored_result_counts_as_failed(world: World) -> None:
    service, store, jobs, workflow = world
    _merge(service, workflow, _done(store, 0, "First one."), _failed(1), _failed(2))
    jobs.reopen(JOB_ID)
    store.delete_prefix(keys.chunk_result(JOB_ID, 0))  # e.g. removed by hand since

    status = _merge(
        service, workflow, _done(store, 1, "Second one."), _done(store, 2, "Third."), run=2
    )

    assert status is JobStatus.PARTIAL
    view = jobs.get(JOB_ID)
    assert view is not None and view.job.failure_reason == "1 chunk(s) failed: 0"
    assert view.chunks[0].state is ChunkState.FAILED  # so that a next re-run redoes it
    assert "no result was stored" in (view.chunks[0].error or "")
    document = json.loads(store.get_bytes(keys.transcript(JOB_ID, "json")))
    assert [f["index"] for f in document["failed_chunks"]] == [0]
    assert document["stats"]["chunks_transcribed"] == 2


def test_a_late_merge_of_an_earlier_run_changes_nothing(world: World) -> None:
    service, store, jobs, workflow = world
    first_run = (_done(store, 0, "First one."), _failed(1), _done(store, 2, "Third one."))
    assert _merge(service, workflow, *first_run) is JobStatus.PARTIAL
    assert jobs.reopen(JOB_ID) == 2
    written = store.get_bytes(keys.transcript(JOB_ID, "json"))

    # Run 1's merge message again: an SQS duplicate, or a redriven dead letter.
    token = workflow.open_task()
    late = service.merge(MergeTask(task_token=token, job_id=JOB_ID, results=[*first_run], run=1))

    assert late is None
    view = jobs.get(JOB_ID)
    assert view is not None
    assert (view.job.status, view.job.runs) == (JobStatus.TRANSCRIBING, 2)
    assert view.chunks[1].state is ChunkState.PENDING  # the re-run's chunk is not failed
    assert store.get_bytes(keys.transcript(JOB_ID, "json")) == written
    assert jobs.reopen(JOB_ID) is None  # no third run beside the second
    assert workflow.answers[token].succeeded  # whoever waits for run 1 is let go


def test_a_failure_notice_of_an_earlier_run_changes_nothing(world: World) -> None:
    service, store, jobs, workflow = world
    _merge(service, workflow, _done(store, 0, "First one."), _failed(1), _failed(2))
    assert jobs.reopen(JOB_ID) == 2

    service.record_failure(
        JobFailureNotice(job_id=JOB_ID, error=TaskError(Error="States.Timeout"), run=1)
    )

    view = jobs.get(JOB_ID)
    assert view is not None
    assert (view.job.status, view.job.failure_reason) == (JobStatus.TRANSCRIBING, None)


def test_without_the_maps_results_every_chunk_is_read_from_its_stored_result(world: World) -> None:
    service, store, jobs, workflow = world
    _done(store, 0, "First one.")
    _done(store, 2, "Third one.")
    jobs.set_chunk_state(JOB_ID, 1, ChunkState.FAILED, error="Chunk 1: HTTP 400 bad audio")

    # The Map's results no longer travel: a long recording's would outgrow the payload limit.
    assert _merge(service, workflow) is JobStatus.PARTIAL

    document = json.loads(store.get_bytes(keys.transcript(JOB_ID, "json")))
    assert [f["reason"] for f in document["failed_chunks"]] == ["Chunk 1: HTTP 400 bad audio"]
    text = store.get_bytes(keys.transcript(JOB_ID, "txt")).decode()
    assert "First one." in text and "Third one." in text


def test_a_state_machine_failure_tells_the_tenant_no_internals(world: World) -> None:
    service, _, jobs, _ = world
    cause = (
        "Map Run arn:aws:states:us-east-1:123456789012:mapRun:stt-transcription/TranscribeChunks:"
        "0f1e failed: tolerated failure threshold exceeded"
    )
    service.record_failure(
        JobFailureNotice(
            job_id=JOB_ID,
            error=TaskError(Error="States.ExceedToleratedFailureThreshold", Cause=cause),
        )
    )
    view = jobs.get(JOB_ID)
    assert view is not None and view.job.status is JobStatus.FAILED
    reason = view.job.failure_reason or ""
    assert "States.ExceedToleratedFailureThreshold" in reason
    assert "arn:" not in reason and "123456789012" not in reason
