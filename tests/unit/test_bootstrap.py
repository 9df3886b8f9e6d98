"""The composition root wires every service as production does: given in-memory adapters, a
recording goes through the splitter, worker and merge services that `Container` builds, and every
stage reaches the event bus and the metrics through the same publisher and recorder."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sttpipe_testing.fakes import (
    FakeTranscriber,
    InMemoryEventPublisher,
    InMemoryJobRepository,
    InMemoryMessageQueues,
    InMemoryMetrics,
    InMemoryObjectStore,
    InMemoryWorkflow,
    started_run,
)

from sttpipe import bootstrap
from sttpipe.bootstrap import Container
from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.events import (
    CacheInvalidated,
    ChunkCompleted,
    FileCompleted,
    JobQueued,
)
from sttpipe.domain.models import ChunkOutcome, ChunkTask, Job, JobStatus, MergeTask
from sttpipe.observability import Metric

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.flac"


class World:
    """A container on in-memory adapters; everything else is built by the container itself:
    the publishing repository, the cache (L1 only here), the speech API's decorators."""

    def __init__(self) -> None:
        self.store = InMemoryObjectStore()
        self.workflow = InMemoryWorkflow()
        self.bus = InMemoryEventPublisher()
        self.metrics = InMemoryMetrics()
        self.speech = FakeTranscriber(default="words of a chunk")
        settings = Settings(
            queue_url_normal="https://sqs/normal",
            default_language="en",
            cache_enabled=True,
            redis_url=None,
            redis_endpoint=None,
            database_url=None,
            database_secret_id=None,
            event_bus_name="",
            webhook_secret=None,
            webhook_secret_id=None,
        )
        self.container = Container(
            settings,
            store=self.store,
            job_store=InMemoryJobRepository(),
            workflow=self.workflow,
            queues=InMemoryMessageQueues(),
            bus=self.bus,
            metrics=self.metrics,
            speech_api=self.speech,
        )

    def run(self, body: bytes) -> str:
        """Upload `body` as a new job and drive it through the container's services."""
        jobs = self.container.jobs
        job_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        upload_key = keys.upload(job_id, "talk.flac")
        jobs.add(
            Job(
                job_id=job_id,
                filename="talk.flac",
                language="en",
                upload_key=upload_key,
                created_at=now,
                updated_at=now,
            )
        )
        self.store.put_bytes(upload_key, body, "audio/flac")
        outcome = self.container.splitter_service.handle_upload(upload_key)
        if outcome.status is JobStatus.COMPLETED:
            return job_id
        execution = started_run(
            self.store, next(v for k, v in self.workflow.executions.items() if k.endswith(job_id))
        )
        results = []
        for chunk in execution.chunks:
            token = self.workflow.open_task()
            task = ChunkTask(task_token=token, job_id=job_id, language="en", chunk=chunk)
            self.container.worker_service.process(task, receive_count=1)
            results.append(
                ChunkOutcome.model_validate_json(self.workflow.answers[token].output or "")
            )
        merge = MergeTask(task_token=self.workflow.open_task(), job_id=job_id, results=results)
        self.container.merge_service.merge(merge)
        return job_id


@pytest.fixture
def world(moto_env: None) -> World:
    """`moto_env`: the SQS statistics client the API's service gets is made, never called."""
    return World()


def test_every_stage_reaches_the_bus_and_the_metrics(world: World) -> None:
    first = world.run(SAMPLE.read_bytes())
    calls = len(world.speech.calls)

    published = [type(e) for e in world.bus.events]
    assert published.count(JobQueued) == 1
    assert published.count(ChunkCompleted) == calls >= 2
    assert published[-1] is FileCompleted
    metrics = world.metrics
    assert metrics.total(Metric.JOBS_ACCEPTED) == 1
    assert metrics.total(Metric.CHUNKS_QUEUED) == calls
    assert metrics.total(Metric.CHUNKS_TRANSCRIBED) == calls
    assert metrics.total(Metric.SPEECH_API_CALLS) == calls  # the speech API is metered
    # The cache reports to the same recorder: a miss for each chunk and one for the upload.
    assert metrics.total(Metric.CACHE_MISSES) == calls + 1
    assert metrics.total(Metric.JOBS_COMPLETED) == 1
    assert [r.metric for r in metrics.recorded].count(Metric.SPLIT_DURATION) == 1
    assert [r.metric for r in metrics.recorded].count(Metric.JOB_DURATION) == 1

    # The same recording again: the container's cache answers it at the splitter.
    second = world.run(SAMPLE.read_bytes())
    assert len(world.speech.calls) == calls
    assert world.container.jobs.get(second).job.stats["upload_cache_hit"] == "L1"  # type: ignore[union-attr]
    assert metrics.total(Metric.JOBS_ACCEPTED) == 2
    assert metrics.total(Metric.JOBS_COMPLETED) == 2
    assert first != second


def test_cache_invalidations_are_announced_on_the_bus(world: World) -> None:
    admin = world.container.job_service.cache_admin()

    admin.forget("default", ["ab" * 32])
    admin.invalidate(model="openai/whisper-large-v3")

    announced = [e for e in world.bus.events if isinstance(e, CacheInvalidated)]
    assert [e.tenant_id for e in announced] == ["default", "*"]
    assert "model openai/whisper-large-v3" in announced[1].reason


def test_the_handlers_entry_points_are_the_containers_services(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bootstrap, "container", lambda: world.container)

    assert bootstrap.splitter_service() is world.container.splitter_service
    assert bootstrap.chunk_delivery_service() is world.container.chunk_delivery_service
    assert bootstrap.merge_service() is world.container.merge_service
    assert bootstrap.job_service() is world.container.job_service
    assert bootstrap.metric_recorder() is world.metrics
    assert bootstrap.transcript_cache() is world.container.transcript_cache
