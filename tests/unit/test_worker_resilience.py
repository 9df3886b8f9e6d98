"""WorkerService under back-pressure: heartbeats while a chunk is transcribed, and chunks the
API was not called for (circuit open, no slot) deferred without being marked failed."""

from __future__ import annotations

import threading

import pytest
from sttpipe_testing.fakes import FakeTranscriber

from sttpipe.domain.models import ChunkState
from sttpipe.services.transcribing import (
    CHUNK_FAILED,
    ChunkDeferred,
    ChunkGaveUp,
    WorkerService,
)
from sttpipe.speech.base import SpeechBackPressure, Transcription
from tests.unit.test_worker_service import World


class HeldTranscriber(FakeTranscriber):
    """Answers only once the test lets it (after it has seen the heartbeats it waits for)."""

    def __init__(self) -> None:
        super().__init__(default="done")
        self.release = threading.Event()

    def transcribe(
        self,
        audio: bytes,
        filename: str,
        *,
        language: str | None,
        prompt: str | None = None,
        remaining_s: float | None = None,
    ) -> Transcription:
        assert self.release.wait(30), "the test never released the call"
        return super().transcribe(
            audio, filename, language=language, prompt=prompt, remaining_s=remaining_s
        )


def test_heartbeats_are_sent_while_the_chunk_is_transcribed_and_stop_after() -> None:
    api = HeldTranscriber()
    world = World(api)
    world.settings = world.settings.model_copy(update={"heartbeat_interval_s": 0.01})
    service = WorkerService(
        world.store, world.jobs, world.workflow, api, world.settings, cache=None
    )
    task = world.task()
    worker = threading.Thread(target=service.process, args=(task, 1))
    worker.start()
    # One heartbeat at the start, then the background ones while the call is held.
    while world.workflow.heartbeats.get(task.task_token, 0) < 4:
        threading.Event().wait(0.01)
    api.release.set()
    worker.join()
    assert world.chunk_state() is ChunkState.DONE
    beats = world.workflow.heartbeats[task.task_token]
    threading.Event().wait(0.05)  # five intervals: a thread still running would have beaten
    assert world.workflow.heartbeats[task.task_token] == beats
    assert not any(t.name == "task-heartbeat" for t in threading.enumerate())


def test_a_chunk_the_api_was_not_called_for_is_deferred_not_failed() -> None:
    world = World(FakeTranscriber([SpeechBackPressure("circuit open", retry_after_s=12.0)]))
    task = world.task()
    with pytest.raises(ChunkDeferred) as deferred:
        world.service.process(task, receive_count=3)  # even on the last receive
    assert deferred.value.delay_s == 12.0
    assert world.chunk_state() is ChunkState.PENDING
    assert task.task_token not in world.workflow.answers


def test_once_deferrals_are_used_up_a_chunk_without_a_call_fails_like_any_other() -> None:
    world = World(FakeTranscriber([SpeechBackPressure("circuit open", retry_after_s=12.0)]))
    task = world.task()
    with pytest.raises(ChunkGaveUp):  # the message goes to the DLQ, operators see it
        world.service.process(task, receive_count=3, may_defer=False)
    assert world.chunk_state() is ChunkState.FAILED
    answer = world.workflow.answers[task.task_token]
    assert not answer.succeeded and answer.error == CHUNK_FAILED
