"""Webhook: job-end notices (through SQS) in, signed deliveries to the jobs' receivers out.

A failed attempt is reported as the record's failure: SQS delivers it again after the queue's
visibility timeout, and after maxReceiveCount moves it to the webhook DLQ (alarmed).
"""

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

from sttpipe.bootstrap import prepare, webhook_service
from sttpipe.domain.models import JobEndNotice
from sttpipe.observability import TRACED_AWS_AND_HTTP

logger = Logger()
tracer = Tracer(patch_modules=TRACED_AWS_AND_HTTP)
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)
prepare(webhook_service)


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    notice = JobEndNotice.model_validate_json(record.body)
    logger.append_keys(job_id=notice.job_id)
    webhook_service().deliver(notice)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
