"""Merge: the Map's results (via SQS and a task token) in, transcripts and the job outcome out."""

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
from pydantic import TypeAdapter

from sttpipe.bootstrap import merge_service, prepare
from sttpipe.domain.models import JobFailureNotice, MergeTask
from sttpipe.observability import TRACED_AWS

logger = Logger()
tracer = Tracer(patch_modules=TRACED_AWS)
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)
_message: TypeAdapter[MergeTask | JobFailureNotice] = TypeAdapter(MergeTask | JobFailureNotice)
prepare(merge_service)


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    message = _message.validate_json(record.body)
    logger.append_keys(job_id=message.job_id)
    tracer.put_annotation("job_id", message.job_id)
    if isinstance(message, MergeTask):
        merge_service().merge(message)
    else:
        merge_service().record_failure(message)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
