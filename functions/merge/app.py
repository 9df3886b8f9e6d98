"""Merge: the Map's results (via SQS and a task token) in, transcripts and the job outcome out."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import TypeAdapter

from sttpipe.bootstrap import job_repository, merge_service, metric_recorder
from sttpipe.domain.models import JobFailureNotice, JobStatus, MergeTask
from sttpipe.observability import Dimension, Metric, size_class

logger = Logger()
tracer = Tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)
_message = TypeAdapter(MergeTask | JobFailureNotice)
_OUTCOME_METRIC = {
    JobStatus.COMPLETED: Metric.JOBS_COMPLETED,
    JobStatus.PARTIAL: Metric.JOBS_PARTIAL,
    JobStatus.FAILED: Metric.JOBS_FAILED,
}


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    message = _message.validate_json(record.body)
    logger.append_keys(job_id=message.job_id)
    tracer.put_annotation("job_id", message.job_id)
    record_metric = metric_recorder()
    if isinstance(message, MergeTask):
        status = merge_service().merge(message)
        record_metric(_OUTCOME_METRIC[status], 1)
        _record_job_duration(message.job_id)
    else:
        merge_service().record_failure(message)
        record_metric(Metric.JOBS_FAILED, 1)


def _record_job_duration(job_id: str) -> None:
    """Upload to transcript, by the recording's size class (long recordings take longer)."""
    view = job_repository().get(job_id)
    duration_s = view.job.stats.get("duration_s") if view else None
    if view is None or duration_s is None:
        return
    elapsed_ms = (view.job.updated_at - view.job.created_at).total_seconds() * 1000
    metric_recorder()(
        Metric.JOB_DURATION,
        max(0.0, elapsed_ms),
        MetricUnit.Milliseconds,
        {Dimension.SIZE_CLASS: size_class(float(duration_s))},
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
