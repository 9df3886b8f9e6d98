"""The reconciler on in-memory adapters: stuck jobs are resumed or ended, running ones left be."""

from __future__ import annotations

from datetime import UTC, datetime

from sttpipe_testing.fakes import (
    InMemoryJobRepository,
    InMemoryMessageQueues,
    InMemoryMetrics,
    InMemoryObjectStore,
    InMemoryWorkflow,
    started_run,
)

from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import (
    ChunkRef,
    ChunkState,
    ExecutionInput,
    Job,
    JobEndNotice,
    JobStatus,
    Manifest,
)
from sttpipe.observability import Dimension, Metric
from sttpipe.services.manifests import store_manifest
from sttpipe.services.reconciling import ReconcilerService
from sttpipe.services.webhooks import JobEndAnnouncer

HOOK = "https://hooks.example.com/stt"


class World:
    def __init__(self) -> None:
        self.store = InMemoryObjectStore()
        self.jobs = InMemoryJobRepository()
        self.workflow = InMemoryWorkflow()
        self.queues = InMemoryMessageQueues()
        self.metrics = InMemoryMetrics()
        self.settings = Settings(reconcile_after_s=300, stalled_split_after_s=7200)
        self.service = ReconcilerService(
            self.store,
            self.jobs,
            self.workflow,
            self.settings,
            record=self.metrics,
            announcer=JobEndAnnouncer(self.queues, "https://sqs/webhooks"),
        )

    def job(self, n: int, status: JobStatus, *, idle_s: float, split: bool = False) -> str:
        job_id = f"{n:032x}"
        now = datetime.now(UTC)
        self.jobs.add(
            Job(
                job_id=job_id,
                filename="a.flac",
                upload_key=keys.upload(job_id, "a.flac"),
                status=status,
                created_at=now,
                updated_at=now,
                webhook_url=HOOK,
            )
        )
        if split:
            chunks = [
                ChunkRef(
                    index=i,
                    key=keys.chunk_audio(job_id, i),
                    start_ms=i * 1000,
                    end_ms=(i + 1) * 1000,
                    pcm_sha256=f"{n:032x}{i:032x}",
                )
                for i in range(2)
            ]
            store_manifest(
                self.store,
                Manifest(
                    execution=ExecutionInput(
                        job_id=job_id, language="en", queue_url="q", chunks=chunks
                    ),
                    duration_s=2.5,
                    chunks_total=3,
                    chunks_silent=1,
                    split_seconds=0.1,
                    silent={2: (2000, 2500)},
                ),
            )
        self.jobs.age(job_id, idle_s)
        return job_id

    def status(self, job_id: str) -> tuple[JobStatus, str | None]:
        view = self.jobs.get(job_id)
        assert view is not None
        return view.job.status, view.job.failure_reason


def repaired(world: World, repair: str) -> list[float]:
    return [
        r.value
        for r in world.metrics.recorded
        if r.metric is Metric.JOBS_REPAIRED and r.dimensions == {Dimension.REPAIR: repair}
    ]


def test_a_stored_split_whose_execution_never_started_is_started() -> None:
    world = World()
    # As a splitter of an older version left it when it died after claiming TRANSCRIBING.
    job_id = world.job(1, JobStatus.TRANSCRIBING, idle_s=600, split=True)

    report = world.service.reconcile()

    assert (report.checked, report.resumed, report.ended) == (1, [job_id], [])
    assert world.workflow.execution_status(job_id) == "RUNNING"
    (started,) = world.workflow.executions.values()
    assert len(started_run(world.store, started).chunks) == 2
    view = world.jobs.get(job_id)
    assert view is not None and view.job.status is JobStatus.TRANSCRIBING
    assert [c.state for c in view.chunks] == [ChunkState.PENDING] * 2 + [ChunkState.SILENT]
    assert repaired(world, "resumed") == [1]


def test_a_split_that_never_finished_ends_only_after_every_delivery_had_its_chance() -> None:
    world = World()
    recent = world.job(1, JobStatus.SPLITTING, idle_s=3600)  # its upload may be retried yet
    stuck = world.job(2, JobStatus.SPLITTING, idle_s=7300)

    report = world.service.reconcile()

    assert (report.checked, report.resumed, report.ended) == (2, [], [stuck])
    assert world.status(recent) == (JobStatus.SPLITTING, None)
    status, reason = world.status(stuck)
    assert status is JobStatus.FAILED and "could not be split" in (reason or "")
    (queued,) = world.queues.sent  # its owner hears of it like of any other end
    assert JobEndNotice.model_validate_json(queued.body).status is JobStatus.FAILED


def test_a_job_whose_execution_ended_without_an_outcome_is_ended() -> None:
    world = World()
    job_id = world.job(1, JobStatus.TRANSCRIBING, idle_s=900, split=True)
    world.workflow.start(job_id, "{}")
    world.workflow.end_execution(job_id, status="TIMED_OUT")  # its failure notice was lost

    report = world.service.reconcile()

    assert report.ended == [job_id]
    assert world.status(job_id) == (
        JobStatus.FAILED,
        "The job's execution ended (TIMED_OUT) without recording an outcome.",
    )
    assert repaired(world, "ended") == [1]


def test_running_and_recently_changed_jobs_are_left_alone() -> None:
    world = World()
    running = world.job(1, JobStatus.TRANSCRIBING, idle_s=86_400, split=True)
    world.workflow.start(running, "{}")  # a long recording: still running after a day
    fresh = world.job(2, JobStatus.TRANSCRIBING, idle_s=10, split=True)
    done = world.job(3, JobStatus.COMPLETED, idle_s=86_400)

    report = world.service.reconcile()

    assert (report.checked, report.resumed, report.ended) == (1, [], [])
    assert world.status(running)[0] is world.status(fresh)[0] is JobStatus.TRANSCRIBING
    assert world.status(done)[0] is JobStatus.COMPLETED
    assert world.workflow.execution_status(fresh) is None
    assert world.metrics.recorded == []
