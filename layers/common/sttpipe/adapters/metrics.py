"""Metrics through Powertools (CloudWatch EMF): the MetricRecorder port's adapter, and its
adapter to the tiered cache's metric sink."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from sttpipe.observability import NAMESPACE, Dimension, Metric
from sttpipe.ports import MetricRecorder


class PowertoolsRecorder:
    """Emits EMF through Powertools. Metrics without dimensions of their own join the invocation's
    buffer (flushed by the handler's `@metrics.log_metrics`); a buffer has one dimension set, so
    metrics with extra dimensions go out at once as a record of their own. Either way Powertools
    adds the `service` dimension."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        # Powertools Metrics instances share one buffer, so this is the handler's buffer too.
        self._metrics = metrics or Metrics(namespace=NAMESPACE)

    def __call__(
        self,
        metric: Metric,
        value: float,
        unit: MetricUnit = MetricUnit.Count,
        dimensions: Mapping[Dimension, str] | None = None,
    ) -> None:
        if not dimensions:
            self._metrics.add_metric(name=metric, unit=unit, value=value)
            return
        with single_metric(
            name=metric,
            unit=unit,
            value=value,
            namespace=NAMESPACE,
            default_dimensions={str(k): v for k, v in dimensions.items()},
        ):
            pass


def cache_metric_sink(record: MetricRecorder) -> Callable[[Metric, str | None, int], None]:
    """Adapts a recorder to the tiered cache's MetricSink (metric, level or None, value)."""

    def sink(metric: Metric, level: str | None, value: int) -> None:
        record(metric, value, dimensions={Dimension.LEVEL: str(level)} if level else None)

    return sink
