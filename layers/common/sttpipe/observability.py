"""The names of every CloudWatch metric the pipeline emits (namespace `STT`, EMF via Powertools).

Code emits metrics only through these names, and template.yaml's dashboard and alarms use the
same ones; a test holds the two together. Every metric also carries Powertools' `service`
dimension (the function's POWERTOOLS_SERVICE_NAME).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Protocol

import httpx
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from sttpipe.domain.events import ChunkCompleted, ChunkFailed, DomainEvent
from sttpipe.speech.base import SpeechError, Transcriber, Transcription

NAMESPACE = "STT"


class Metric(StrEnum):
    # splitter
    JOBS_ACCEPTED = "JobsAccepted"
    JOBS_REJECTED = "JobsRejected"
    CHUNKS_QUEUED = "ChunksQueued"
    SILENT_CHUNKS_SKIPPED = "SilentChunksSkipped"
    SPLIT_DURATION = "SplitDuration"  # milliseconds
    # worker
    CHUNKS_TRANSCRIBED = "ChunksTranscribed"
    CHUNKS_FAILED = "ChunksFailed"
    CHUNK_DURATION = "ChunkDuration"  # milliseconds, whole chunk incl. cache and retries
    QUEUE_WAIT = "QueueWait"  # milliseconds a chunk message waited in its queue
    SPEECH_API_CALLS = "SpeechApiCalls"
    SPEECH_API_LATENCY = "SpeechApiLatency"  # milliseconds per chunk, retries included
    SPEECH_API_RETRIES = "SpeechApiRetries"
    SPEECH_API_THROTTLED = "SpeechApiThrottled"  # 429 answers
    CACHE_HITS = "CacheHits"  # dimension Level = L1 | L2 | L3
    CACHE_MISSES = "CacheMisses"
    CACHE_LEVEL_UNAVAILABLE = "CacheLevelUnavailable"  # dimension Level
    CACHE_CORRUPT_ENTRIES = "CacheCorruptEntries"  # dimension Level; ignored, deleted, rewritten
    # cache warmer
    CACHE_ENTRIES_WARMED = "CacheEntriesWarmed"  # L3 entries promoted into L2
    # merge
    JOBS_COMPLETED = "JobsCompleted"
    JOBS_PARTIAL = "JobsPartial"
    JOBS_FAILED = "JobsFailed"
    JOB_DURATION = "JobDuration"  # milliseconds from upload to transcript; dimension SizeClass
    # domain events (any function)
    EVENTS_NOT_PUBLISHED = "EventsNotPublished"  # EventBridge refused or could not be reached


class Dimension(StrEnum):
    LEVEL = "Level"  # cache level
    PRIORITY = "Priority"  # high | normal | low
    SIZE_CLASS = "SizeClass"  # the recording's length: see size_class()
    SERVICE = "service"  # added by Powertools to every metric: POWERTOOLS_SERVICE_NAME


# ---- emitting ----------------------------------------------------------------------------------


class MetricRecorder(Protocol):
    """Where code that is not a handler reports a metric; keeps it free of Powertools."""

    def __call__(
        self,
        metric: Metric,
        value: float,
        unit: MetricUnit = MetricUnit.Count,
        dimensions: Mapping[Dimension, str] | None = None,
    ) -> None: ...


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


def throttle_counter(record: MetricRecorder) -> Callable[[httpx.Response], None]:
    """An httpx response hook counting the speech API's 429s, retried ones included."""

    def hook(response: httpx.Response) -> None:
        if response.status_code == httpx.codes.TOO_MANY_REQUESTS:
            record(Metric.SPEECH_API_THROTTLED, 1)

    return hook


class MeteredTranscriber:
    """Wraps the speech API client: latency per chunk (retries included), calls and retries."""

    def __init__(self, inner: Transcriber, record: MetricRecorder) -> None:
        self._inner = inner
        self._record = record

    def transcribe(
        self,
        audio: bytes,
        filename: str,
        *,
        language: str | None,
        prompt: str | None = None,
        remaining_s: float | None = None,
    ) -> Transcription:
        started = time.perf_counter()
        attempts = 1
        try:
            result = self._inner.transcribe(
                audio, filename, language=language, prompt=prompt, remaining_s=remaining_s
            )
            attempts = result.attempts
            return result
        except SpeechError as exc:
            attempts = exc.attempts
            raise
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self._record(Metric.SPEECH_API_LATENCY, elapsed_ms, MetricUnit.Milliseconds)
            self._record(Metric.SPEECH_API_CALLS, attempts)
            self._record(Metric.SPEECH_API_RETRIES, max(0, attempts - 1))


# ---- dimension values --------------------------------------------------------------------------

# Upper bounds (seconds of audio) of the job duration's size classes; the dashboard names them.
SIZE_CLASSES: tuple[tuple[float, str], ...] = (
    (5 * 60, "under5min"),
    (30 * 60, "5to30min"),
    (120 * 60, "30to120min"),
    (float("inf"), "over120min"),
)


def size_class(duration_s: float) -> str:
    return next(name for bound, name in SIZE_CLASSES if duration_s < bound)


class EventMetrics:
    """An EventPublisher that counts the lifecycle events which are also metrics: a chunk's
    outcome is known exactly where it is recorded, not in the handler that started the work."""

    _COUNTED: Mapping[type[DomainEvent], Metric] = {
        ChunkCompleted: Metric.CHUNKS_TRANSCRIBED,
        ChunkFailed: Metric.CHUNKS_FAILED,
    }

    def __init__(self, record: MetricRecorder) -> None:
        self._record = record

    def publish(self, *events: DomainEvent) -> None:
        for event in events:
            metric = self._COUNTED.get(type(event))
            if metric is not None:
                self._record(metric, 1)
