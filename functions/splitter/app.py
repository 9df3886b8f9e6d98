"""Splitter: S3 upload notifications (through SQS) in, chunks and a state machine execution out."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from sttpipe.bootstrap import prepare, splitter_service
from sttpipe.observability import TRACED_AWS

logger = Logger()
tracer = Tracer(patch_modules=TRACED_AWS)
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)
prepare(splitter_service)


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    body = record.json_body
    if body.get("Event") == "s3:TestEvent":
        # S3 sends one when the notification is configured; there is nothing to split.
        return
    # The lenient data class, not the strict parser model: emulators leave out fields that
    # real S3 sends (userIdentity, ownerIdentity), and only the object matters here.
    for s3_record in S3Event(body).records:
        obj = s3_record.s3.get_object
        outcome = splitter_service().handle_upload(
            obj.key,
            etag=obj.etag or "",
            receive_count=int(record.attributes.approximate_receive_count),
        )
        logger.append_keys(job_id=outcome.job_id)
        tracer.put_annotation("job_id", outcome.job_id)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
