"""Metrics counted from the lifecycle events: an outcome is known exactly where it is recorded
(sttpipe.services.lifecycle), not in the handler that started the work."""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from sttpipe.domain.events import (
    ChunkCompleted,
    ChunkFailed,
    DomainEvent,
    FileCompleted,
    FileFailed,
    FilePartial,
    JobQueued,
)
from sttpipe.domain.models import JobStatus
from sttpipe.observability import Dimension, Metric, size_class
from sttpipe.ports import MetricRecorder

_FINISHED = {
    FileCompleted: Metric.JOBS_COMPLETED,
    FilePartial: Metric.JOBS_PARTIAL,
    FileFailed: Metric.JOBS_FAILED,
}


class EventMetrics:
    """An EventPublisher that records the events which are also metrics."""

    def __init__(self, record: MetricRecorder) -> None:
        self._record = record

    def publish(self, *events: DomainEvent) -> None:
        for event in events:
            self._count(event)

    def _count(self, event: DomainEvent) -> None:
        record = self._record
        match event:
            case ChunkCompleted():
                record(Metric.CHUNKS_TRANSCRIBED, 1)
            case ChunkFailed():
                record(Metric.CHUNKS_FAILED, 1)
            case JobQueued(run=1):  # a re-run queues chunks of a job accepted before
                record(Metric.JOBS_ACCEPTED, 1)
                record(Metric.CHUNKS_QUEUED, event.chunks_to_transcribe)
            case FileFailed(ended_from=JobStatus.SPLITTING):
                record(Metric.JOBS_REJECTED, 1)  # the upload was not audio, or over a limit
            case FileCompleted(ended_from=JobStatus.SPLITTING):
                # A re-upload answered from the cache: accepted and done at once.
                record(Metric.JOBS_ACCEPTED, 1)
                record(Metric.JOBS_COMPLETED, 1)
            case FileCompleted() | FilePartial() | FileFailed():
                record(_FINISHED[type(event)], 1)
                if event.duration_s is not None and event.seconds_since_created is not None:
                    # Upload to transcript, by the recording's size class.
                    record(
                        Metric.JOB_DURATION,
                        event.seconds_since_created * 1000,
                        MetricUnit.Milliseconds,
                        {Dimension.SIZE_CLASS: size_class(event.duration_s)},
                    )
