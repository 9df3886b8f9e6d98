"""ChunkDeliveryService on in-memory adapters: what becomes of each chunk message (done,
dead-lettered with its reason, deferred as a fresh copy, or hidden for a backoff and retried)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from aws_lambda_powertools.metrics import MetricUnit
from sttpipe_testing.fakes import FakeTranscriber, InMemoryMessageQueues

from sttpipe.observability import Dimension, Metric
from sttpipe.services.deliveries import (
    DEFERRALS_ATTRIBUTE,
    REASON_ATTRIBUTE,
    ChunkDelivery,
    ChunkDeliveryService,
    MalformedMessage,
)
from sttpipe.services.transcribing import ChunkRetryLater, WorkerService
from sttpipe.speech.base import SpeechBackPressure, TransientSpeechError
from tests.unit.test_worker_service import World

QUEUES = "https://sqs.us-east-1.amazonaws.com/000000000000/"
NOW_S = 1_700_000_000.0


@dataclass
class Recorded:
    metrics: list[tuple[Metric, float, dict[Dimension, str]]] = field(default_factory=list)

    def __call__(
        self,
        metric: Metric,
        value: float,
        unit: MetricUnit = MetricUnit.Count,
        dimensions: Mapping[Dimension, str] | None = None,
    ) -> None:
        self.metrics.append((metric, value, dict(dimensions or {})))


class Deliveries:
    def __init__(
        self,
        transcriber: FakeTranscriber,
        *,
        jitter: float = 1.0,
        queues: InMemoryMessageQueues | None = None,
    ) -> None:
        self.world = World(transcriber)
        self.world.settings = self.world.settings.model_copy(
            update={
                f"{kind}_{p}": f"{QUEUES}chunks-{kind[:3]}-{p}"
                for kind in ("queue_url", "dead_letter_url")
                for p in ("high", "normal", "low")
            }
            | {"retry_backoff_base_s": 10.0, "retry_backoff_max_s": 60.0, "max_deferrals": 2}
        )
        worker = WorkerService(
            self.world.store,
            self.world.jobs,
            self.world.workflow,
            transcriber,
            self.world.settings,
        )
        self.queues = queues or InMemoryMessageQueues()
        self.metrics = Recorded()
        self.service = ChunkDeliveryService(
            worker,
            self.queues,
            self.world.settings,
            self.metrics,
            clock=lambda: NOW_S,
            jitter=lambda: jitter,
        )

    def delivery(
        self, body: str | None = None, *, receive: int = 1, deferrals: int = 0, queue: str = "low"
    ) -> ChunkDelivery:
        return ChunkDelivery(
            body=body if body is not None else self.world.task().model_dump_json(),
            queue_name=f"chunks-que-{queue}",
            receipt_handle=f"receipt-{receive}",
            receive_count=receive,
            deferrals=deferrals,
            sent_at_ms=int(NOW_S * 1000) - 1500,
        )


def test_a_chunk_done_records_its_queue_wait_and_duration_by_priority() -> None:
    deliveries = Deliveries(FakeTranscriber(default="hello"))
    deliveries.service.handle(deliveries.delivery(queue="high"), remaining_s=100)

    assert deliveries.queues.sent == [] and deliveries.queues.hidden == {}
    recorded = {metric: (value, dims) for metric, value, dims in deliveries.metrics.metrics}
    assert recorded[Metric.QUEUE_WAIT] == (1500.0, {Dimension.PRIORITY: "high"})
    assert recorded[Metric.CHUNK_DURATION][1] == {Dimension.PRIORITY: "high"}


def test_a_redelivery_does_not_count_its_earlier_attempts_as_queue_wait() -> None:
    deliveries = Deliveries(FakeTranscriber(default="hello"))
    deliveries.service.handle(deliveries.delivery(receive=2), remaining_s=100)
    assert [m for m, _, _ in deliveries.metrics.metrics] == [Metric.CHUNK_DURATION]


@pytest.mark.parametrize(
    "body",
    ["not json", '{"task_token": "t", "job_id": "j", "chunk": {"index": -1}}', "x" * 20_000],
    ids=["not-json", "schema", "oversized"],
)
def test_a_malformed_message_goes_to_its_dead_letter_queue_with_the_reason(body: str) -> None:
    deliveries = Deliveries(FakeTranscriber())
    deliveries.service.handle(deliveries.delivery(body, queue="normal"), remaining_s=100)

    (sent,) = deliveries.queues.sent
    assert (sent.queue_url, sent.body) == (f"{QUEUES}chunks-dea-normal", body)
    assert sent.attributes[REASON_ATTRIBUTE].startswith("malformed chunk message")
    assert deliveries.world.transcriber.calls == []


def test_a_malformed_message_from_an_unknown_queue_fails_so_the_redrive_takes_it() -> None:
    deliveries = Deliveries(FakeTranscriber())
    delivery = deliveries.delivery("not json")
    with pytest.raises(MalformedMessage):
        deliveries.service.handle(
            ChunkDelivery(**{**delivery.__dict__, "queue_name": "elsewhere"}), remaining_s=100
        )
    assert deliveries.queues.sent == []


@pytest.mark.parametrize(("receive", "hidden_s"), [(1, 10), (2, 20)])  # max_receives is 3
def test_a_transient_failure_is_hidden_for_an_exponential_backoff(
    receive: int, hidden_s: int
) -> None:
    deliveries = Deliveries(FakeTranscriber([TransientSpeechError("HTTP 503")]))
    delivery = deliveries.delivery(receive=receive)
    with pytest.raises(ChunkRetryLater):
        deliveries.service.handle(delivery, remaining_s=100)
    assert deliveries.queues.hidden == {delivery.receipt_handle: hidden_s}


def test_backoff_is_jittered_down_to_half_and_capped() -> None:
    full = Deliveries(FakeTranscriber(), jitter=1.0).service
    half = Deliveries(FakeTranscriber(), jitter=0.0).service
    assert [full.backoff_s(n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]
    assert [half.backoff_s(n) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 30, 30]


def test_the_last_failed_delivery_answers_the_task_and_dead_letters_the_message() -> None:
    deliveries = Deliveries(FakeTranscriber([TransientSpeechError("HTTP 503")]))
    delivery = deliveries.delivery(receive=3, queue="high")
    deliveries.service.handle(delivery, remaining_s=100)  # processed: SQS deletes it

    (sent,) = deliveries.queues.sent
    assert (sent.queue_url, sent.body) == (f"{QUEUES}chunks-dea-high", delivery.body)
    assert "Chunk 2 could not be transcribed: HTTP 503" in sent.attributes[REASON_ATTRIBUTE]
    (answer,) = deliveries.world.workflow.answers.values()
    assert not answer.succeeded


def test_a_chunk_the_api_was_not_called_for_goes_back_as_a_delayed_copy() -> None:
    busy = SpeechBackPressure("circuit open", retry_after_s=7.2)
    deliveries = Deliveries(FakeTranscriber([busy]))
    deliveries.world.chunk = deliveries.world.chunk.model_copy(update={"tenant_id": "acme"})
    delivery = deliveries.delivery(receive=3, deferrals=1)  # even on the last receive
    deliveries.service.handle(delivery, remaining_s=100)

    (sent,) = deliveries.queues.sent
    assert (sent.queue_url, sent.body, sent.delay_s) == (
        f"{QUEUES}chunks-que-low",
        delivery.body,
        8,
    )
    assert sent.attributes == {DEFERRALS_ATTRIBUTE: "2"}
    assert sent.group_id == "acme"  # in its tenant's message group, as the state machine sent it
    assert deliveries.world.workflow.answers == {}


def test_once_deferrals_are_used_up_the_chunk_is_retried_like_any_failure() -> None:
    busy = SpeechBackPressure("circuit open", retry_after_s=7.2)
    deliveries = Deliveries(FakeTranscriber([busy]))
    delivery = deliveries.delivery(receive=1, deferrals=2)
    with pytest.raises(ChunkRetryLater):
        deliveries.service.handle(delivery, remaining_s=100)
    assert deliveries.queues.sent == []
    assert deliveries.queues.hidden == {delivery.receipt_handle: 10}


class BrokenQueues(InMemoryMessageQueues):
    def hide(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        raise ConnectionError("SQS unreachable")


def test_a_backoff_that_cannot_be_set_still_leaves_the_message_to_come_back() -> None:
    deliveries = Deliveries(
        FakeTranscriber([TransientSpeechError("HTTP 503")]), queues=BrokenQueues()
    )
    with pytest.raises(ChunkRetryLater):  # back after the visibility timeout instead
        deliveries.service.handle(deliveries.delivery(), remaining_s=100)
