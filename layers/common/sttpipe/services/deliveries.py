"""One SQS delivery of a chunk message: validate it, transcribe it at its queue's priority, and
decide what becomes of the message (done, dead-lettered, deferred, or retried after a backoff).

The worker handler turns a record into a ChunkDelivery and hands it here; WorkerService does the
chunk's work. Everything about messages as messages (size and schema, queue priorities,
deferral copies, visibility backoff, the DLQ) lives in this module.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from sttpipe.config import Settings
from sttpipe.domain.models import ChunkTask, Priority
from sttpipe.observability import Dimension, Metric
from sttpipe.ports import MessageQueues, MetricRecorder
from sttpipe.services.transcribing import (
    ChunkDeferred,
    ChunkGaveUp,
    ChunkRetryLater,
    WorkerService,
)
from sttpipe.speech.base import priority_scope

# Not a child logger: the keys appended here (job, chunk, priority) must reach every log line of
# the invocation, and a child cannot append before its parent exists (unit tests, other hosts).
# A Logger of the same service shares the handler's formatter, so on Lambda they are one.
logger = Logger()
tracer = Tracer()  # shares the handler's configuration and segments

# Counts how often a chunk message was put back because the API could not be called.
DEFERRALS_ATTRIBUTE = "stt-deferrals"
# Why a message was sent to its dead-letter queue (operators read it before a redrive).
REASON_ATTRIBUTE = "stt-reason"
_REASON_CHARS = 1000


class MalformedMessage(ValueError):
    """A body that is not a ChunkTask or is too large: retrying it can only fail again."""


@dataclass(frozen=True)
class ChunkDelivery:
    """What the worker needs of one received chunk message."""

    body: str
    queue_name: str  # the last part of the source queue's ARN (or URL)
    receipt_handle: str
    receive_count: int
    deferrals: int  # how often earlier copies of this message were deferred
    sent_at_ms: int  # when the message was first sent (epoch milliseconds)


class ChunkDeliveryService:
    def __init__(
        self,
        worker: WorkerService,
        queues: MessageQueues,
        settings: Settings,
        record_metric: MetricRecorder,
        *,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._worker = worker
        self._queues = queues
        self._settings = settings
        self._record_metric = record_metric
        self._clock = clock
        self._jitter = jitter

    def handle(self, delivery: ChunkDelivery, remaining_s: float | None) -> None:
        """Returns when the message is finished with (the handler lets SQS delete it); raises
        ChunkRetryLater when it is to come back, hidden for a backoff already."""
        priority = self.priority_of(delivery.queue_name)
        try:
            task = self._parse(delivery.body)
        except MalformedMessage as exc:
            self._dead_letter(delivery, priority, f"malformed chunk message: {exc}")
            return
        logger.append_keys(job_id=task.job_id, chunk=task.chunk.index, priority=priority)
        tracer.put_annotation("job_id", task.job_id)
        tracer.put_annotation("chunk", str(task.chunk.index))
        by_priority = {Dimension.PRIORITY: priority.value if priority else "unknown"}
        if delivery.receive_count == 1:
            # The first send: on later deliveries the wait would count earlier attempts.
            waited_ms = max(0.0, self._clock() * 1000 - delivery.sent_at_ms)
            self._record_metric(Metric.QUEUE_WAIT, waited_ms, MetricUnit.Milliseconds, by_priority)
        started = time.perf_counter()
        # Waiters for a fleet-wide speech API slot are served high before normal before low.
        rank = list(Priority).index(priority or Priority.NORMAL)
        try:
            with priority_scope(rank, task.chunk.tenant_id):
                self._worker.process(
                    task,
                    receive_count=delivery.receive_count,
                    remaining_s=remaining_s,
                    may_defer=delivery.deferrals < self._settings.max_deferrals,
                )
        except ChunkDeferred as deferred:
            self._defer(delivery, priority, deferred.delay_s, task.chunk.tenant_id)
        except ChunkGaveUp as gave_up:
            self._dead_letter(delivery, priority, str(gave_up))
        except ChunkRetryLater:
            self._back_off(delivery, priority)
            raise
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self._record_metric(
                Metric.CHUNK_DURATION, elapsed_ms, MetricUnit.Milliseconds, by_priority
            )

    def priority_of(self, queue_name: str) -> Priority | None:
        """The priority whose queue this is (a queue's name ends both its ARN and its URL)."""
        for priority in Priority:
            if self._settings.queue_url(priority).rsplit("/", 1)[-1] == queue_name:
                return priority
        return None

    def backoff_s(self, receive_count: int) -> int:
        """Exponential in the receives so far, jittered down to half (never an instant retry)."""
        s = self._settings
        ceiling = min(s.retry_backoff_max_s, s.retry_backoff_base_s * 2 ** (receive_count - 1))
        return math.ceil(ceiling * (0.5 + self._jitter() / 2))

    def _parse(self, body: str) -> ChunkTask:
        size = len(body.encode())
        limit = self._settings.max_message_bytes
        if size > limit:
            raise MalformedMessage(f"message of {size} bytes is over the limit of {limit}")
        try:
            return ChunkTask.model_validate_json(body)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise MalformedMessage(str(exc)) from exc

    def _dead_letter(self, delivery: ChunkDelivery, priority: Priority | None, reason: str) -> None:
        """Straight to the DLQ, reported as processed: a redelivery could only fail again."""
        url = self._settings.dead_letter_url(priority) if priority else ""
        logger.error(
            "chunk message sent to the dead-letter queue",
            extra={"reason": reason, "receive_count": delivery.receive_count, "dlq": url},
        )
        if not url:
            raise MalformedMessage(f"no dead-letter queue configured for this queue: {reason}")
        self._queues.send(url, delivery.body, attributes={REASON_ATTRIBUTE: reason[:_REASON_CHARS]})

    def _defer(
        self, delivery: ChunkDelivery, priority: Priority | None, delay_s: float, tenant: str
    ) -> None:
        # A fresh copy, delayed, rather than a visibility change: a changed visibility still
        # counts a receive on the next delivery, and enough of those would DLQ a healthy chunk.
        # In its tenant's message group, as the state machine sent it (SQS fair queues).
        if priority is None:
            raise ChunkRetryLater("deferred, but the message's queue is not a known one")
        self._queues.send(
            self._settings.queue_url(priority),
            delivery.body,
            delay_s=math.ceil(delay_s),
            attributes={DEFERRALS_ATTRIBUTE: str(delivery.deferrals + 1)},
            group_id=tenant,
        )

    def _back_off(self, delivery: ChunkDelivery, priority: Priority | None) -> None:
        """Hide the message for its backoff; if that fails it returns after the visibility
        timeout instead, which is later but loses nothing."""
        if priority is None:
            return
        seconds = self.backoff_s(delivery.receive_count)
        try:
            self._queues.hide(self._settings.queue_url(priority), delivery.receipt_handle, seconds)
        except Exception:
            logger.exception("could not set the retry backoff", extra={"backoff_s": seconds})
            return
        logger.info("chunk will be retried", extra={"backoff_s": seconds})
