"""Cache warmer (scheduled): the most used L3 entries are copied into L2, expired ones purged."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from sttpipe.bootstrap import metric_recorder, transcript_cache
from sttpipe.config import get_settings
from sttpipe.observability import TRACED_AWS, Metric

logger = Logger()
tracer = Tracer(patch_modules=TRACED_AWS)
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    cache = transcript_cache()
    if cache is None:
        logger.info("cache disabled (STT_CACHE_ENABLED=false): nothing to warm")
        metric_recorder()(Metric.CACHE_ENTRIES_WARMED, 0)
        return {"candidates": 0, "warmed": 0, "purged": 0}
    settings = get_settings()
    report = cache.warm(settings.cache_warm_limit, settings.cache_warm_min_hits)
    metric_recorder()(Metric.CACHE_ENTRIES_WARMED, report.warmed)
    logger.info("cache warmed", extra=report.model_dump())
    return report.model_dump()
