"""Worker: chunk messages from the priority queues in, task-token answers to Step Functions out."""

from __future__ import annotations

import time
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

from sttpipe.bootstrap import metric_recorder, worker_service
from sttpipe.config import get_settings
from sttpipe.domain.models import ChunkTask, Priority
from sttpipe.observability import Dimension, Metric

logger = Logger()
tracer = Tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)


# Time kept back from the speech API's retries so that the answer to the state machine still fits.
ANSWER_MARGIN_S = 10.0


def queue_priority(event_source_arn: str) -> str:
    """The priority of the queue a record came from (its name ends both its ARN and its URL)."""
    settings = get_settings()
    name = event_source_arn.rsplit(":", 1)[-1]
    for priority in Priority:
        if settings.queue_url(priority).rsplit("/", 1)[-1] == name:
            return priority.value
    return "unknown"


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    task = ChunkTask.model_validate_json(record.body)
    receive_count = int(record.attributes.approximate_receive_count)
    priority = queue_priority(record.event_source_arn)
    logger.append_keys(job_id=task.job_id, chunk=task.chunk.index, priority=priority)
    tracer.put_annotation("job_id", task.job_id)
    tracer.put_annotation("chunk", str(task.chunk.index))
    by_priority = {Dimension.PRIORITY: priority}
    record_metric = metric_recorder()
    if receive_count == 1:
        # SentTimestamp is the first send: on later deliveries it would count earlier attempts.
        waited_ms = time.time() * 1000 - int(record.attributes.sent_timestamp)
        record_metric(Metric.QUEUE_WAIT, max(0.0, waited_ms), MetricUnit.Milliseconds, by_priority)
    started = time.perf_counter()
    try:
        worker_service().process(
            task,
            receive_count=receive_count,
            remaining_s=lambda_context.get_remaining_time_in_millis() / 1000 - ANSWER_MARGIN_S,
        )
    finally:
        elapsed_ms = (time.perf_counter() - started) * 1000
        record_metric(Metric.CHUNK_DURATION, elapsed_ms, MetricUnit.Milliseconds, by_priority)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
