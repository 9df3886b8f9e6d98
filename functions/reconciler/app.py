"""Reconciler (scheduled): jobs that claim to run while nothing works on them are resumed or
ended (see sttpipe.services.reconciling)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from sttpipe.bootstrap import prepare, reconciler_service
from sttpipe.observability import TRACED_AWS

logger = Logger()
tracer = Tracer(patch_modules=TRACED_AWS)
metrics = Metrics()
prepare(reconciler_service)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = asdict(reconciler_service().reconcile())
    logger.info("jobs reconciled", extra=report)
    return report
