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
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import TypeAdapter

from sttpipe.bootstrap import merge_service
from sttpipe.domain.models import JobFailureNotice, JobStatus, MergeTask
from sttpipe.observability import Metric

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
    if isinstance(message, MergeTask):
        status = merge_service().merge(message)
        metrics.add_metric(name=_OUTCOME_METRIC[status], unit=MetricUnit.Count, value=1)
    else:
        merge_service().record_failure(message)
        metrics.add_metric(name=Metric.JOBS_FAILED, unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
