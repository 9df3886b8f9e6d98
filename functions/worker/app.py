"""Worker: chunk messages from the priority queues in, task-token answers to Step Functions out."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from sttpipe.bootstrap import worker_service
from sttpipe.domain.models import ChunkTask

logger = Logger()
tracer = Tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)


# Time kept back from the speech API's retries so that the answer to the state machine still fits.
ANSWER_MARGIN_S = 10.0


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    task = ChunkTask.model_validate_json(record.body)
    logger.append_keys(job_id=task.job_id, chunk=task.chunk.index)
    worker_service().process(
        task,
        receive_count=int(record.attributes.approximate_receive_count),
        remaining_s=lambda_context.get_remaining_time_in_millis() / 1000 - ANSWER_MARGIN_S,
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
