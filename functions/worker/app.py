"""Worker: chunk messages from the priority queues in, task-token answers to Step Functions out."""

from __future__ import annotations

import math
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

from sttpipe.bootstrap import message_sender, metric_recorder, worker_service
from sttpipe.config import get_settings
from sttpipe.domain.models import ChunkTask, Priority
from sttpipe.observability import Dimension, Metric
from sttpipe.services.transcribing import ChunkDeferred
from sttpipe.speech.limits import priority_scope

logger = Logger()
tracer = Tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)


# Time kept back from the speech API's retries so that the answer to the state machine still fits.
ANSWER_MARGIN_S = 10.0
# Counts how often a chunk message was put back because the API could not be called.
DEFERRALS_ATTRIBUTE = "stt-deferrals"
UNKNOWN = "unknown"  # the priority of a record from a queue the settings do not name


class MalformedMessage(ValueError):
    """A body that is not a ChunkTask or is too large: retrying it can only fail again."""


def parse_task(body: str) -> ChunkTask:
    size = len(body.encode())
    limit = get_settings().max_message_bytes
    if size > limit:
        raise MalformedMessage(f"message of {size} bytes is over the limit of {limit}")
    try:
        return ChunkTask.model_validate_json(body)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise MalformedMessage(str(exc)) from exc


def dead_letter(record: SQSRecord, priority: str, reason: str) -> None:
    """Straight to the queue's DLQ, reported as processed: a redelivery could only fail again."""
    settings = get_settings()
    url = settings.dead_letter_url(Priority(priority)) if priority != UNKNOWN else ""
    logger.error(
        "malformed chunk message sent to the dead-letter queue",
        extra={"reason": reason, "message_id": record.message_id, "dead_letter_url": url},
    )
    if not url:
        raise MalformedMessage(f"no dead-letter queue configured for {priority}: {reason}")
    message_sender().send(url, record.body)


def queue_priority(event_source_arn: str) -> str:
    """The priority of the queue a record came from (its name ends both its ARN and its URL)."""
    settings = get_settings()
    name = event_source_arn.rsplit(":", 1)[-1]
    for priority in Priority:
        if settings.queue_url(priority).rsplit("/", 1)[-1] == name:
            return priority.value
    return UNKNOWN


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    priority = queue_priority(record.event_source_arn)
    try:
        task = parse_task(record.body)
    except MalformedMessage as exc:
        dead_letter(record, priority, str(exc))
        return
    receive_count = int(record.attributes.approximate_receive_count)
    deferred_attr = record.message_attributes[DEFERRALS_ATTRIBUTE]
    deferrals = int(deferred_attr.string_value or 0) if deferred_attr else 0
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
    # Waiters for a fleet-wide speech API slot are served high before normal before low.
    rank = list(Priority).index(Priority(priority)) if priority != UNKNOWN else 1
    try:
        with priority_scope(rank):
            worker_service().process(
                task,
                receive_count=receive_count,
                remaining_s=lambda_context.get_remaining_time_in_millis() / 1000 - ANSWER_MARGIN_S,
                may_defer=deferrals < get_settings().max_deferrals,
            )
    except ChunkDeferred as deferred:
        # A fresh copy, delayed, rather than a visibility change: a changed visibility still
        # counts a receive on the next delivery, and enough of those would DLQ a healthy chunk.
        queue_url = get_settings().queue_url(Priority(priority))
        message_sender().send(
            queue_url,
            record.body,
            delay_s=math.ceil(deferred.delay_s),
            attributes={DEFERRALS_ATTRIBUTE: str(deferrals + 1)},
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
