"""SplitterService on in-memory adapters with the real audio code and the bundled sample."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sttpipe_testing.audio import silence, write_wav
from sttpipe_testing.fakes import (
    InMemoryJobRepository,
    InMemoryMessageQueues,
    InMemoryObjectStore,
    InMemoryWorkflow,
    TricklingObjectStore,
    started_run,
)

from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import (
    ChunkState,
    ChunkTask,
    Job,
    JobStatus,
    LanguageSource,
    Manifest,
    Priority,
    SpeechCapacity,
    WorkflowInput,
)
from sttpipe.services.splitting import SplitterService

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.flac"
JOB_ID = "00112233445566778899aabbccddeeff"


class SendsBeforeStart(InMemoryMessageQueues):
    """Records, with each message, whether the job's execution had started by then."""

    def __init__(self, workflow: InMemoryWorkflow) -> None:
        super().__init__()
        self._workflow = workflow
        self.sent_before_start: list[bool] = []

    def send(self, queue_url: str, body: str, **kwargs: Any) -> None:
        self.sent_before_start.append(not self._workflow.executions)
        super().send(queue_url, body, **kwargs)


class World:
    def __init__(self, store: InMemoryObjectStore | None = None, **settings: object) -> None:
        self.store = store or InMemoryObjectStore()
        self.jobs = InMemoryJobRepository()
        self.workflow = InMemoryWorkflow()
        self.settings = Settings(
            queue_url_high="https://sqs/high",
            queue_url_normal="https://sqs/normal",
            queue_url_low="https://sqs/low",
            **settings,  # type: ignore[arg-type]
        )
        self.queues = SendsBeforeStart(self.workflow)
        self.service = SplitterService(
            self.store, self.jobs, self.workflow, self.settings, ahead=self.queues
        )

    def upload(
        self,
        body: bytes,
        filename: str = "talk.flac",
        priority: Priority = Priority.HIGH,
        *,
        language: str | None = "en",
        language_source: LanguageSource = LanguageSource.REQUESTED,
    ) -> str:
        now = datetime.now(UTC)
        key = keys.upload(JOB_ID, filename)
        self.jobs.add(
            Job(
                job_id=JOB_ID,
                filename=filename,
                language=language,
                language_source=language_source,
                priority=priority,
                upload_key=key,
                created_at=now,
                updated_at=now,
            )
        )
        self.store.put_bytes(key, body, "application/octet-stream")
        return key


def test_sample_is_cut_into_chunks_and_handed_to_the_priority_queue() -> None:
    world = World()
    key = world.upload(SAMPLE.read_bytes())
    outcome = world.service.handle_upload(key)

    assert outcome.status is JobStatus.TRANSCRIBING and outcome.chunks >= 2
    (execution_json,) = world.workflow.executions.values()
    execution = started_run(world.store, execution_json)
    assert execution.queue_url == "https://sqs/high"
    assert execution.language == "en"
    # Chunks tile the recording in order, each stored as FLAC under the job's prefix.
    assert execution.chunks[0].start_ms == 0
    for before, after in zip(execution.chunks, execution.chunks[1:], strict=False):
        assert before.end_ms <= after.start_ms + 1000  # overlap only at hard cuts, <= 1 s
    for chunk in execution.chunks:
        assert world.store.get_bytes(chunk.key).startswith(b"fLaC")
    manifest = Manifest.model_validate_json(world.store.get_bytes(keys.manifest(JOB_ID)))
    assert manifest.execution == execution and 60 < manifest.duration_s < 70
    view = world.jobs.get(JOB_ID)
    assert view is not None and view.job.status is JobStatus.TRANSCRIBING
    assert [c.index for c in view.chunks] == list(range(manifest.chunks_total))


def test_the_recording_is_split_while_it_still_downloads() -> None:
    # Its first chunk is stored before the last bytes of the upload are in (the store holds
    # them back until then, or 10 s): the split does not wait for the whole download. (A
    # chunk is cut once the window holds max_chunk_s: 20 s here, a third of the sample.)
    world = World(TricklingObjectStore(), max_chunk_s=20)
    key = world.upload(SAMPLE.read_bytes())
    outcome = world.service.handle_upload(key)
    assert outcome.status is JobStatus.TRANSCRIBING and outcome.chunks >= 2
    assert world.store.chunk_stored_before_complete is True
    manifest = Manifest.model_validate_json(world.store.get_bytes(keys.manifest(JOB_ID)))
    assert manifest.upload_sha256 == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()


def test_each_chunk_is_sent_ahead_to_the_workers_as_soon_as_it_is_cut() -> None:
    world = World()
    key = world.upload(SAMPLE.read_bytes())
    world.service.handle_upload(key)
    (execution_json,) = world.workflow.executions.values()
    execution = started_run(world.store, execution_json)
    ahead = [ChunkTask.model_validate_json(m.body) for m in world.queues.sent]
    assert [t.chunk for t in ahead] == execution.chunks  # every chunk with speech, in order
    assert all(t.task_token is None and t.language == "en" for t in ahead)
    assert {(m.queue_url, m.group_id) for m in world.queues.sent} == {
        ("https://sqs/high", "default")
    }
    assert all(world.queues.sent_before_start)  # before the state machine was started


def test_nothing_is_sent_ahead_for_a_job_whose_language_is_to_be_detected() -> None:
    world = World()
    key = world.upload(SAMPLE.read_bytes(), language=None, language_source=LanguageSource.DETECT)
    assert world.service.handle_upload(key).status is JobStatus.TRANSCRIBING
    assert world.queues.sent == []


def test_a_repeated_notification_does_not_split_twice() -> None:
    world = World()
    key = world.upload(SAMPLE.read_bytes())
    first = world.service.handle_upload(key)
    manifest = world.store.get_bytes(keys.manifest(JOB_ID))
    again = world.service.handle_upload(key)
    assert again == first  # the stored split, resumed: its execution exists already
    assert world.store.get_bytes(keys.manifest(JOB_ID)) == manifest
    assert len(world.workflow.executions) == 1


def test_the_upload_form_is_single_use_a_second_upload_is_deleted_not_split() -> None:
    world = World()
    key = world.upload(SAMPLE.read_bytes())
    first = world.service.handle_upload(key, etag='"first"')
    assert world.service.handle_upload(key, etag='"first"') == first  # a repeated notification
    world.store.put_bytes(key, SAMPLE.read_bytes()[:50_000], "audio/flac")  # the form again

    again = world.service.handle_upload(key, etag='"second"')

    assert (again.status, again.reason) == (first.status, "upload form already used")
    assert world.store.size(key) is None  # what the second use wrote is gone
    assert len(world.workflow.executions) == 1
    view = world.jobs.get(JOB_ID)
    assert view is not None and view.job.upload_etag == '"first"'


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"ID3" + bytes(range(256)) * 40, "not"),
    ],
)
def test_bad_audio_fails_the_job_at_once_with_a_reason(body: bytes, reason: str) -> None:
    world = World()
    key = world.upload(body, filename="broken.mp3")
    outcome = world.service.handle_upload(key)
    assert outcome.status is JobStatus.FAILED
    view = world.jobs.get(JOB_ID)
    assert view is not None and reason in (view.job.failure_reason or "").lower()
    assert world.workflow.executions == {}
    assert world.store.size(key) == len(body)  # the upload is kept


def test_silence_only_fails_with_no_speech_and_nothing_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "quiet.wav"
    write_wav(path, silence(12))
    world = World()
    key = world.upload(path.read_bytes(), filename="quiet.wav")
    outcome = world.service.handle_upload(key)
    assert outcome.status is JobStatus.FAILED
    assert "speech" in (outcome.reason or "").lower()
    assert world.workflow.executions == {}


def test_limits_are_checked_before_splitting() -> None:
    world = World(max_duration_s=30)
    key = world.upload(SAMPLE.read_bytes())
    outcome = world.service.handle_upload(key)
    assert outcome.status is JobStatus.FAILED and "limit" in (outcome.reason or "")
    assert world.store.size(keys.chunk_audio(JOB_ID, 0)) is None


def test_an_object_put_straight_into_uploads_becomes_one_job() -> None:
    world = World(default_language="ru")
    world.store.put_bytes("uploads/direct.flac", SAMPLE.read_bytes(), "audio/flac")
    first = world.service.handle_upload("uploads/direct.flac", etag="abc")
    second = world.service.handle_upload("uploads/direct.flac", etag="abc")
    assert first.job_id == second.job_id
    view = world.jobs.get(first.job_id)
    assert view is not None and view.job.language == "ru"
    assert view.job.filename == "direct.flac"
    assert all(c.state in (ChunkState.PENDING, ChunkState.SILENT) for c in view.chunks)


def test_an_upload_for_a_job_that_is_gone_is_dropped_not_adopted() -> None:
    world = World()
    # A form issued for a job deleted since (or never made): the key names the job.
    key = keys.upload(JOB_ID, "talk.flac")
    world.store.put_bytes(key, SAMPLE.read_bytes(), "audio/flac")

    outcome = world.service.handle_upload(key)

    assert (outcome.job_id, outcome.status) == (JOB_ID, JobStatus.FAILED)
    assert outcome.reason == "no such job"
    assert world.store.size(key) is None  # the object is deleted
    assert world.jobs.get(JOB_ID) is None
    assert world.jobs.list_jobs("default", limit=10) == []  # no tenant adopted it
    assert world.workflow.executions == {}


class FixedCapacity:
    """A SpeechCapacityGauge that reports what it was given (the fleet's is tested on Redis)."""

    def __init__(self, limit: float) -> None:
        self.capacity = SpeechCapacity(fixed_s=0.5, per_audio_s=0.01, tail=1.0, limit=limit)

    def estimate(self) -> SpeechCapacity:
        return self.capacity


@pytest.mark.parametrize(("limit", "chunks"), [(1, 1), (2, 2), (4, 4)])
def test_chunks_are_sized_for_the_speech_apis_capacity(
    limit: float, chunks: int, caplog: pytest.LogCaptureFixture
) -> None:
    world = World()
    service = SplitterService(
        world.store, world.jobs, world.workflow, world.settings, capacity=FixedCapacity(limit)
    )
    caplog.set_level("INFO")

    outcome = service.handle_upload(world.upload(SAMPLE.read_bytes()))

    # One minute of speech: a wave of `limit` calls, each chunk cut at a pause near its target.
    assert outcome.chunks == chunks
    assert any(f"{chunks} chunk(s) of about" in r.getMessage() for r in caplog.records)


def test_a_pinned_chunk_length_wins_over_the_sizing() -> None:
    world = World(chunk_target_s=32)
    service = SplitterService(
        world.store, world.jobs, world.workflow, world.settings, capacity=FixedCapacity(8)
    )

    assert service.handle_upload(world.upload(SAMPLE.read_bytes())).chunks == 2


class FlakyWorkflow(InMemoryWorkflow):
    """Step Functions refusing the first StartExecution (throttled, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals = 1

    def start(self, job_id: str, execution_input: str, run: int = 1) -> str:
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("ThrottlingException: Rate exceeded")
        return super().start(job_id, execution_input, run)


def test_a_start_that_failed_is_made_by_the_redelivered_upload() -> None:
    world = World()
    world.workflow = FlakyWorkflow()
    world.service = SplitterService(world.store, world.jobs, world.workflow, world.settings)
    key = world.upload(SAMPLE.read_bytes())

    with pytest.raises(RuntimeError, match="Throttling"):
        world.service.handle_upload(key)
    view = world.jobs.get(JOB_ID)
    assert view is not None and view.job.status is JobStatus.SPLITTING  # not claimed yet
    manifest = world.store.get_bytes(keys.manifest(JOB_ID))

    outcome = world.service.handle_upload(key)  # SQS delivers the notification again

    assert outcome.status is JobStatus.TRANSCRIBING
    (execution_json,) = world.workflow.executions.values()
    # The split stored before is resumed, not redone: its chunks are the ones started.
    assert world.store.get_bytes(keys.manifest(JOB_ID)) == manifest
    assert started_run(world.store, execution_json) == (
        Manifest.model_validate_json(manifest).execution
    )
    view = world.jobs.get(JOB_ID)
    assert view is not None and view.job.status is JobStatus.TRANSCRIBING


def test_a_job_transcribing_without_its_execution_is_started_by_the_redelivery() -> None:
    world = World()
    key = world.upload(SAMPLE.read_bytes())
    world.service.handle_upload(key)
    # As an earlier version left it: TRANSCRIBING claimed, then the start never happened.
    world.workflow.executions.clear()
    world.workflow.statuses.clear()

    outcome = world.service.handle_upload(key)

    assert outcome.status is JobStatus.TRANSCRIBING
    assert len(world.workflow.executions) == 1


class BrokenStore(InMemoryObjectStore):
    def download(self, key: str):  # type: ignore[no-untyped-def]
        raise OSError("connection reset by peer")


def test_an_upload_that_fails_on_its_last_delivery_fails_its_job() -> None:
    world = World(max_receives=3)
    store = BrokenStore()
    world.store = store
    world.service = SplitterService(store, world.jobs, world.workflow, world.settings)
    key = world.upload(b"RIFF")

    with pytest.raises(OSError):
        world.service.handle_upload(key, receive_count=2)
    view = world.jobs.get(JOB_ID)
    assert view is not None and view.job.status is JobStatus.SPLITTING  # SQS tries again

    with pytest.raises(OSError):  # still raised: the message belongs in the DLQ
        world.service.handle_upload(key, receive_count=3)
    view = world.jobs.get(JOB_ID)
    assert view is not None and view.job.status is JobStatus.FAILED
    assert view.job.failure_reason == (
        "The upload could not be split in 3 attempts (last: OSError); upload it again."
    )


@pytest.mark.parametrize(
    ("language", "source", "detects"),
    [
        (None, LanguageSource.DETECT, True),
        (None, LanguageSource.PER_CHUNK, False),
        ("en", LanguageSource.REQUESTED, False),
    ],
)
def test_a_job_without_language_has_its_first_speech_chunk_detect_it(
    language: str | None, source: LanguageSource, detects: bool
) -> None:
    world = World()
    key = world.upload(SAMPLE.read_bytes(), language=language, language_source=source)
    world.service.handle_upload(key)

    (execution_json,) = world.workflow.executions.values()
    workflow_input = WorkflowInput.model_validate_json(execution_json)
    execution = started_run(world.store, execution_json)
    assert execution.detect_language is detects
    assert workflow_input.detect_from == (execution.chunks[0] if detects else None)
