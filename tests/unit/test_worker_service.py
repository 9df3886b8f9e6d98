"""WorkerService on in-memory adapters: the answer it gives the state machine in each case."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sttpipe.adapters.memory import (
    FakeTranscriber,
    InMemoryJobRepository,
    InMemoryObjectStore,
    InMemoryWorkflow,
)
from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import (
    ChunkOutcome,
    ChunkProgress,
    ChunkRef,
    ChunkState,
    ChunkTask,
    ChunkTranscript,
    Job,
)
from sttpipe.services.transcribing import CHUNK_FAILED, ChunkRetryLater, WorkerService
from sttpipe.speech.base import (
    PermanentSpeechError,
    RelativeSegment,
    Transcription,
    TransientSpeechError,
)

JOB_ID = "0123456789abcdef0123456789abcdef"


class World:
    def __init__(self, transcriber: FakeTranscriber) -> None:
        self.store = InMemoryObjectStore()
        self.jobs = InMemoryJobRepository()
        self.workflow = InMemoryWorkflow()
        self.transcriber = transcriber
        self.settings = Settings(max_receives=3, default_language="ru")
        self.service = WorkerService(
            self.store, self.jobs, self.workflow, transcriber, self.settings
        )
        now = datetime.now(UTC)
        self.jobs.add(
            Job(
                job_id=JOB_ID,
                filename="a.wav",
                upload_key="uploads/x/a.wav",
                created_at=now,
                updated_at=now,
            )
        )
        self.chunk = ChunkRef(
            index=2,
            key=keys.chunk_audio(JOB_ID, 2),
            start_ms=60_000,
            end_ms=90_000,
            pcm_sha256="ab" * 32,
        )
        self.jobs.add_chunks(
            JOB_ID,
            [ChunkProgress(index=2, start_ms=60_000, end_ms=90_000, state=ChunkState.PENDING)],
        )
        self.store.put_bytes(self.chunk.key, b"fLaC-audio", "audio/flac")

    def task(self, language: str | None = "en") -> ChunkTask:
        return ChunkTask(
            task_token=self.workflow.open_task(), job_id=JOB_ID, language=language, chunk=self.chunk
        )

    def chunk_state(self) -> ChunkState:
        view = self.jobs.get(JOB_ID)
        assert view is not None
        return view.chunks[0].state


def test_success_stores_absolute_segments_and_answers_the_token() -> None:
    world = World(
        FakeTranscriber(
            [
                Transcription(
                    "hello world", (RelativeSegment(1.5, 3.0, " hello world "),), attempts=2
                )
            ]
        )
    )
    task = world.task()
    world.service.process(task, receive_count=1, remaining_s=250.0)

    answer = world.workflow.answers[task.task_token]
    assert answer.succeeded
    outcome = ChunkOutcome.model_validate_json(answer.output or "")
    assert outcome == ChunkOutcome(index=2, result_key=keys.chunk_result(JOB_ID, 2))
    stored = ChunkTranscript.model_validate_json(world.store.get_bytes(outcome.result_key or ""))
    assert stored.text == "hello world"
    assert [(s.start_ms, s.end_ms, s.text) for s in stored.segments] == [
        (61_500, 63_000, "hello world")
    ]
    assert stored.api_calls == 2
    assert world.chunk_state() is ChunkState.DONE
    assert world.workflow.heartbeats[task.task_token] == 1
    call = world.transcriber.calls[0]
    assert (call.audio, call.language, call.remaining_s) == (b"fLaC-audio", "en", 250.0)


def test_job_without_language_uses_the_configured_default() -> None:
    world = World(FakeTranscriber(default="x"))
    world.service.process(world.task(language=None), receive_count=1)
    assert world.transcriber.calls[0].language == "ru"


def test_transient_error_before_the_last_receive_leaves_the_message_for_retry() -> None:
    world = World(FakeTranscriber([TransientSpeechError("HTTP 429")]))
    task = world.task()
    with pytest.raises(ChunkRetryLater):
        world.service.process(task, receive_count=1)
    assert task.task_token not in world.workflow.answers
    assert world.chunk_state() is ChunkState.PENDING


def test_transient_error_on_the_last_receive_fails_the_task_and_goes_to_the_dlq() -> None:
    world = World(FakeTranscriber([TransientSpeechError("HTTP 503")]))
    task = world.task()
    with pytest.raises(ChunkRetryLater):
        world.service.process(task, receive_count=3)
    answer = world.workflow.answers[task.task_token]
    assert not answer.succeeded and answer.error == CHUNK_FAILED
    assert "Chunk 2" in (answer.cause or "") and "HTTP 503" in (answer.cause or "")
    assert world.chunk_state() is ChunkState.FAILED


def test_permanent_error_fails_the_task_at_once_and_consumes_the_message() -> None:
    world = World(FakeTranscriber([PermanentSpeechError("HTTP 400: bad audio")]))
    task = world.task()
    world.service.process(task, receive_count=1)  # no exception: nothing to retry
    answer = world.workflow.answers[task.task_token]
    assert not answer.succeeded and "bad audio" in (answer.cause or "")
    assert world.chunk_state() is ChunkState.FAILED


def test_redelivery_after_a_stored_result_answers_without_calling_the_api_again() -> None:
    world = World(FakeTranscriber(["first"]))
    first = world.task()
    world.service.process(first, receive_count=1)
    second = world.task()  # same chunk, a new token (the Map retried the task)
    world.service.process(second, receive_count=1)
    assert len(world.transcriber.calls) == 1
    assert world.workflow.answers[second.task_token].succeeded


def test_a_token_the_state_machine_gave_up_on_is_dropped_without_work() -> None:
    world = World(FakeTranscriber(["never used"]))
    task = world.task()
    world.workflow.time_out(task.task_token)
    world.service.process(task, receive_count=1)
    assert world.transcriber.calls == []
