"""Reconciler: jobs whose recorded status disagrees with their workflow are resumed or ended.

Every path of the pipeline is built to finish its job, but a process can still die between two
steps, an old version can leave a job half started, a merge message can end in its dead-letter
queue. Run on a schedule, this finds jobs that claim to be in progress while nothing works on
them, and either starts what was left unstarted (a stored split whose execution never started)
or ends them FAILED with the reason, so that they can be re-run, deleted or uploaded again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aws_lambda_powertools import Logger

from sttpipe.config import Settings
from sttpipe.domain.models import Job, JobStatus
from sttpipe.observability import Dimension, Metric
from sttpipe.ports import JobRepository, MetricRecorder, ObjectStore, Workflow
from sttpipe.services.manifests import find_manifest, start_split
from sttpipe.services.webhooks import JobEndAnnouncer

logger = Logger(child=True)

RUNNING = "RUNNING"


def stalled(job: Job, execution: str | None, now: datetime, split_after_s: float) -> bool:
    """Whether nothing works on `job` any more: its run's execution is not running, and, while
    it is SPLITTING with no execution, no delivery of its upload touched it for `split_after_s`
    (a splitter may still be cutting it, or its upload message be waiting for a retry)."""
    if execution == RUNNING:
        return False
    if job.status is JobStatus.SPLITTING and execution is None:
        return now - job.updated_at > timedelta(seconds=split_after_s)
    return True


@dataclass
class ReconcileReport:
    checked: int = 0
    resumed: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)


class ReconcilerService:
    def __init__(
        self,
        store: ObjectStore,
        jobs: JobRepository,
        workflow: Workflow,
        settings: Settings,
        *,
        record: MetricRecorder | None = None,
        announcer: JobEndAnnouncer | None = None,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._workflow = workflow
        self._settings = settings
        self._record = record
        self._announcer = announcer

    def reconcile(self, now: datetime | None = None) -> ReconcileReport:
        now = now or datetime.now(UTC)
        since = now - timedelta(seconds=self._settings.reconcile_after_s)
        report = ReconcileReport()
        for job in self._jobs.unsettled(
            unchanged_since=since, limit=self._settings.reconcile_batch
        ):
            report.checked += 1
            execution = self._workflow.execution_status(job.job_id, job.runs)
            if execution == RUNNING:
                continue
            if execution is None and self._resume(job):
                report.resumed.append(job.job_id)
            elif stalled(job, execution, now, self._settings.stalled_split_after_s) and self._end(
                job, _reason(job, execution)
            ):
                report.ended.append(job.job_id)
        for repair, found in (("resumed", report.resumed), ("ended", report.ended)):
            if found and self._record is not None:
                self._record(
                    Metric.JOBS_REPAIRED, len(found), dimensions={Dimension.REPAIR: repair}
                )
        return report

    def _resume(self, job: Job) -> bool:
        """Start the execution of the job's stored split, if it has one that never started."""
        manifest = find_manifest(self._store, job.job_id)
        if manifest is None or job.runs != manifest.execution.run:
            return False  # never split, or a re-run whose own start is gone
        start_split(self._store, self._jobs, self._workflow, manifest)
        logger.warning("stuck job resumed: its split's execution started", extra=_keys(job))
        return True

    def _end(self, job: Job, reason: str) -> bool:
        if not self._jobs.finish(
            job.job_id, JobStatus.FAILED, stats=job.stats, reason=reason, run=job.runs
        ):
            return False  # it moved on meanwhile
        logger.warning("stuck job ended", extra={**_keys(job), "reason": reason})
        if self._announcer is not None:
            view = self._jobs.get(job.job_id)
            if view is not None:
                self._announcer.job_ended(view.job)
        return True


def _reason(job: Job, execution: str | None) -> str:
    if execution is not None:
        return f"The job's execution ended ({execution}) without recording an outcome."
    if job.status is JobStatus.SPLITTING:
        return (
            "The upload could not be split (the splitter stopped without a result);"
            " upload it again."
        )
    return "The job's execution never started."


def _keys(job: Job) -> dict[str, object]:
    return {"job_id": job.job_id, "status": job.status, "run": job.runs}
