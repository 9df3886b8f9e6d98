"""Completion webhooks, apart from the merge: the job's end is recorded and its task answered
first, then a notice is queued, and the webhook function delivers it with retries (the queue's
redeliveries, then its dead-letter queue). A slow or failing receiver delays only its own
notice; it can never hold up a merge or change a job's outcome."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aws_lambda_powertools import Logger

from sttpipe.domain.models import Job, JobEndNotice
from sttpipe.ports import JobRepository, MessageQueues, Notifier

logger = Logger(child=True)


class JobEndAnnouncer:
    """Queues a notice for each job that ended with a webhook to call."""

    def __init__(self, queues: MessageQueues, queue_url: str) -> None:
        self._queues = queues
        self._queue_url = queue_url

    def job_ended(self, job: Job) -> None:
        if not job.webhook_url or not job.status.is_final:
            return
        notice = JobEndNotice(job_id=job.job_id, run=job.runs, status=job.status)
        self._queues.send(self._queue_url, notice.model_dump_json())


class WebhookService:
    """Delivers a queued notice with the job as it is recorded now, signed by its tenant's
    secret."""

    def __init__(
        self,
        jobs: JobRepository,
        notifier: Notifier,
        signing_secrets: Callable[[str], Sequence[str]],
    ) -> None:
        """`signing_secrets`: a tenant's secrets to sign with (TenantWebhookSecrets')."""
        self._jobs = jobs
        self._notifier = notifier
        self._signing_secrets = signing_secrets

    def deliver(self, notice: JobEndNotice) -> bool:
        """False when there is nothing to deliver any more: the job was deleted, or re-run
        since (the newer run's end brings its own notice). Raises WebhookNotDelivered for the
        queue to try again."""
        view = self._jobs.get(notice.job_id)
        job = view.job if view else None
        if job is None or not job.webhook_url:
            logger.info("webhook dropped: the job is gone", extra={"job_id": notice.job_id})
            return False
        if (job.runs, job.status) != (notice.run, notice.status):
            logger.info(
                "webhook dropped: the job moved on",
                extra={"job_id": job.job_id, "run": job.runs, "status": job.status},
            )
            return False
        secrets = self._signing_secrets(job.tenant_id)
        self._notifier.job_finished(job, notice.delivery_id, secrets)
        return True
