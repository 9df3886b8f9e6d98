"""WorkerService on in-memory adapters: the answer it gives the state machine in each case."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sttpipe_testing.fakes import (
    FakeTranscriber,
    InMemoryJobRepository,
    InMemoryObjectStore,
    InMemoryWorkflow,
)

from sttpipe.cache import TieredCache, TieredTranscriptCache
from sttpipe.cache.memory import MemoryCache
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
    JobStatus,
    LanguageDetected,
    LanguageSource,
)
from sttpipe.domain.transcripts import RelativeSegment, Transcription
from sttpipe.services.transcribing import (
    CHUNK_FAILED,
    ChunkGaveUp,
    ChunkRetryLater,
    WorkerService,
)
from sttpipe.speech.base import PermanentSpeechError, TransientSpeechError

JOB_ID = "0123456789abcdef0123456789abcdef"


class World:
    def __init__(
        self,
        transcriber: FakeTranscriber,
        cache: TieredTranscriptCache | None = None,
        store: InMemoryObjectStore | None = None,
        language_source: LanguageSource = LanguageSource.REQUESTED,
    ) -> None:
        self.store = store or InMemoryObjectStore()
        self.jobs = InMemoryJobRepository()
        self.workflow = InMemoryWorkflow()
        self.transcriber = transcriber
        self.settings = Settings(max_receives=3, default_language="ru")
        self.service = WorkerService(
            self.store, self.jobs, self.workflow, transcriber, self.settings, cache
        )
        now = datetime.now(UTC)
        self.jobs.add(
            Job(
                job_id=JOB_ID,
                filename="a.wav",
                upload_key="uploads/x/a.wav",
                created_at=now,
                updated_at=now,
                language_source=language_source,
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

    def task(self, language: str | None = "en", prompt: str | None = None) -> ChunkTask:
        return ChunkTask(
            task_token=self.workflow.open_task(),
            job_id=JOB_ID,
            language=language,
            prompt=prompt,
            chunk=self.chunk,
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


def test_segment_times_leave_out_the_silence_put_before_the_chunk() -> None:
    world = World(FakeTranscriber([Transcription("hi", (RelativeSegment(0.1, 3.0, "hi"),))]))
    world.chunk = world.chunk.model_copy(update={"lead_in_ms": 200})
    task = world.task()
    world.service.process(task, receive_count=1)
    stored = ChunkTranscript.model_validate_json(
        world.store.get_bytes(keys.chunk_result(JOB_ID, 2))
    )
    # 0.1 s into the audio is still the lead-in: the chunk's start; 3.0 s is 2.8 s into it.
    assert [(s.start_ms, s.end_ms) for s in stored.segments] == [(60_000, 62_800)]


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
    with pytest.raises(ChunkGaveUp):
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


class RacedStore(InMemoryObjectStore):
    """Another delivery of the same message, or the chunk sent ahead by the splitter, stores the
    chunk's result while this one fetches the chunk's audio for its own call."""

    def get_bytes(self, key: str) -> bytes:
        if key == keys.chunk_audio(JOB_ID, 2):
            won = ChunkTranscript(index=2, start_ms=60_000, end_ms=90_000, text="won", api_calls=1)
            result_key = keys.chunk_result(JOB_ID, 2)
            self.put_bytes(result_key, won.model_dump_json().encode(), "application/json")
        return super().get_bytes(key)


def test_a_delivery_that_loses_the_race_to_store_keeps_the_first_result_and_answers() -> None:
    # The first writer may be a chunk sent ahead, which answers nobody: the task answers.
    world = World(FakeTranscriber(default="this delivery's text"), store=RacedStore())
    task = world.task()
    world.service.process(task, receive_count=1)

    result = ChunkTranscript.model_validate_json(
        world.store.get_bytes(keys.chunk_result(JOB_ID, 2))
    )
    assert len(world.transcriber.calls) == 1  # this delivery did call the API...
    assert (result.text, result.api_calls) == ("won", 1)  # ...but the first writer's result stays
    assert task.task_token is not None and world.workflow.answers[task.task_token].succeeded
    assert world.chunk_state() is ChunkState.DONE


def test_a_token_the_state_machine_gave_up_on_is_dropped_without_work() -> None:
    world = World(FakeTranscriber(["never used"]))
    task = world.task()
    world.workflow.time_out(task.task_token)
    world.service.process(task, receive_count=1)
    assert world.transcriber.calls == []


# ---- with the cache (L1 only here; Redis and PostgreSQL in tests/integration) --------------


def l1_cache() -> TieredTranscriptCache:
    return TieredTranscriptCache(
        TieredCache(l1=MemoryCache(1 << 20, ttl_s=60)),
        namespace="unit",
        model="openai/whisper-large-v3",
        response_format="json",
    )


def stored(world: World, task: ChunkTask) -> ChunkTranscript:
    outcome = ChunkOutcome.model_validate_json(world.workflow.answers[task.task_token].output or "")
    return ChunkTranscript.model_validate_json(world.store.get_bytes(outcome.result_key or ""))


def test_the_same_audio_at_another_offset_is_answered_from_the_cache() -> None:
    cache = l1_cache()
    said = Transcription("hello", (RelativeSegment(1.0, 2.0, "hello"),), attempts=1)
    first = World(FakeTranscriber([said]), cache)
    first_task = first.task()
    first.service.process(first_task, receive_count=1)

    # Another job whose chunk has the same canonical PCM, cut at another place in its recording.
    second = World(FakeTranscriber(), cache)  # no response: any API call fails the test
    second.chunk = second.chunk.model_copy(update={"start_ms": 5_000, "end_ms": 35_000})
    second_task = second.task()
    second.service.process(second_task, receive_count=1)

    assert len(first.transcriber.calls) == 1 and second.transcriber.calls == []
    assert (stored(first, first_task).cache_level, stored(first, first_task).api_calls) == (None, 1)
    hit = stored(second, second_task)
    assert (hit.cache_level, hit.api_calls, hit.text) == ("L1", 0, "hello")
    assert [(s.start_ms, s.end_ms) for s in hit.segments] == [(6_000, 7_000)]
    assert second.chunk_state() is ChunkState.DONE


def test_another_language_or_tenant_is_another_computation() -> None:
    cache = l1_cache()
    calls = []
    for language, tenant in [
        ("en", "default"),
        ("de", "default"),
        ("en", "other"),
        ("en", "default"),
    ]:
        world = World(FakeTranscriber(default="text"), cache)
        world.chunk = world.chunk.model_copy(update={"tenant_id": tenant})
        world.service.process(world.task(language=language), receive_count=1)
        calls.append(len(world.transcriber.calls))
    assert calls == [1, 1, 1, 0]  # only the repeat of the first is a hit


def test_the_jobs_prompt_goes_to_the_api_and_into_the_cache_key() -> None:
    cache = l1_cache()
    calls = []
    for prompt in ["Kubernetes, Grafana", None, "Kubernetes, Grafana", "Anna Karenina"]:
        world = World(FakeTranscriber(default="text"), cache)
        world.service.process(world.task(prompt=prompt), receive_count=1)
        calls.append([c.prompt for c in world.transcriber.calls])
    assert calls == [["Kubernetes, Grafana"], [None], [], ["Anna Karenina"]]


def test_a_failed_call_is_not_cached_and_the_next_delivery_pays_again() -> None:
    cache = l1_cache()
    world = World(FakeTranscriber([TransientSpeechError("HTTP 503"), "later"]), cache)
    with pytest.raises(ChunkRetryLater):
        world.service.process(world.task(), receive_count=1)
    world.service.process(task := world.task(), receive_count=2)
    assert len(world.transcriber.calls) == 2
    assert stored(world, task).text == "later"


# ---- one language per job -------------------------------------------------------------------

ENGLISH = "The meeting starts at nine, and we will go through the budget for next year."


def test_a_detection_task_pins_the_language_it_hears_and_pays_for_its_chunk_once() -> None:
    world = World(FakeTranscriber([ENGLISH]), language_source=LanguageSource.DETECT)
    detect = world.task(language=None).model_copy(update={"detect_language": True})
    world.service.process(detect, receive_count=1)

    # Detected without a language (not the stack's default), then pinned on the job.
    assert world.transcriber.calls[0].language is None
    answer = world.workflow.answers[detect.task_token]
    assert answer.succeeded and LanguageDetected.model_validate_json(answer.output or "") == (
        LanguageDetected(language="en")
    )
    view = world.jobs.get(JOB_ID)
    assert view is not None
    assert (view.job.language, view.job.language_source) == ("en", LanguageSource.DETECTED)
    assert world.chunk_state() is ChunkState.PENDING  # the Map's own task settles the chunk

    # The Map then sends the chunk with the pinned language: its result is already stored.
    task = world.task(language="en")
    world.service.process(task, receive_count=1)
    assert len(world.transcriber.calls) == 1
    assert world.workflow.answers[task.task_token].succeeded
    assert world.chunk_state() is ChunkState.DONE


def test_a_detection_too_unsure_to_pin_leaves_every_chunk_to_detect_its_own() -> None:
    world = World(FakeTranscriber(["Okay."]), language_source=LanguageSource.DETECT)
    detect = world.task(language=None).model_copy(update={"detect_language": True})
    world.service.process(detect, receive_count=1)
    answer = world.workflow.answers[detect.task_token]
    assert LanguageDetected.model_validate_json(answer.output or "").language is None
    view = world.jobs.get(JOB_ID)
    assert view is not None and view.job.language is None


def ahead_of(task: ChunkTask) -> ChunkTask:
    """The same chunk as the splitter sends it ahead of the Map: no task token."""
    return task.model_copy(update={"task_token": None})


def test_a_chunk_sent_ahead_is_stored_and_its_task_answers_without_a_call() -> None:
    world = World(FakeTranscriber(["heard ahead"]))
    task = world.task()
    world.service.process(ahead_of(task), receive_count=1)
    assert len(world.transcriber.calls) == 1 and not world.workflow.answers
    assert world.chunk_state() is ChunkState.PENDING  # the job's progress follows the Map

    world.service.process(task, receive_count=1)
    assert len(world.transcriber.calls) == 1  # not one more
    assert task.task_token is not None and world.workflow.answers[task.task_token].succeeded
    result = ChunkTranscript.model_validate_json(
        world.store.get_bytes(keys.chunk_result(JOB_ID, 2))
    )
    assert result.text == "heard ahead" and world.chunk_state() is ChunkState.DONE


def test_a_chunk_sent_ahead_for_a_job_that_has_ended_is_dropped_uncalled() -> None:
    world = World(FakeTranscriber(["never used"]))
    world.jobs.finish(JOB_ID, JobStatus.FAILED, stats={}, reason="cancelled by its owner")
    world.service.process(ahead_of(world.task()), receive_count=1)
    assert not world.transcriber.calls
    assert world.store.size(keys.chunk_result(JOB_ID, 2)) is None


@pytest.mark.parametrize(
    "error", [TransientSpeechError("HTTP 503"), PermanentSpeechError("HTTP 400: bad audio")]
)
def test_a_chunk_sent_ahead_that_fails_is_left_to_its_task(error: Exception) -> None:
    world = World(FakeTranscriber([error], default="heard by the task"))
    task = world.task()
    world.service.process(ahead_of(task), receive_count=1)  # neither raised nor retried
    assert world.store.size(keys.chunk_result(JOB_ID, 2)) is None and not world.workflow.answers

    world.service.process(task, receive_count=1)
    assert task.task_token is not None and world.workflow.answers[task.task_token].succeeded
