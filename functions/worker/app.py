"""Worker: chunk messages from the priority queues in, task-token answers to Step Functions out."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from sttpipe.bootstrap import chunk_delivery_service, prepare
from sttpipe.observability import TRACED_AWS_AND_HTTP
from sttpipe.services.deliveries import DEFERRALS_ATTRIBUTE, ChunkDelivery

logger = Logger()
tracer = Tracer(patch_modules=TRACED_AWS_AND_HTTP)
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)
prepare(chunk_delivery_service)

# Time kept back from the speech API's retries so that the answer to the state machine still fits.
ANSWER_MARGIN_S = 10.0


def delivery_of(record: SQSRecord) -> ChunkDelivery:
    deferrals = record.message_attributes[DEFERRALS_ATTRIBUTE]
    return ChunkDelivery(
        body=record.body,
        queue_name=record.event_source_arn.rsplit(":", 1)[-1],
        receipt_handle=record.receipt_handle,
        receive_count=int(record.attributes.approximate_receive_count),
        deferrals=int(deferrals.string_value or 0) if deferrals else 0,
        sent_at_ms=int(record.attributes.sent_timestamp),
    )


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    remaining_s = lambda_context.get_remaining_time_in_millis() / 1000 - ANSWER_MARGIN_S
    chunk_delivery_service().handle(delivery_of(record), remaining_s)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
