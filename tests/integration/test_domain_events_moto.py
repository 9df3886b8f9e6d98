"""Domain events reach a consumer through the template's event bus (provisioned on moto): a rule on
the bus sends them to an SQS queue, as an integration would, and they read back as sent."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sttpipe_testing.fakes import InMemoryJobRepository

from localcloud.emulators import MotoEmulator
from localcloud.provision import ExtraSecret, Stack, provision
from sttpipe.adapters.eventbridge import EventBridgePublisher
from sttpipe.domain.events import (
    EVENT_SOURCE,
    CacheInvalidated,
    DomainEvent,
    FilePartial,
    JobQueued,
    parse_event,
)
from sttpipe.domain.models import ChunkProgress, ChunkState, Job, JobStatus, Priority
from sttpipe.observability import Metric
from sttpipe.services.lifecycle import PublishingJobRepository

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Recorded:
    metric: Metric
    value: float


@dataclass
class Consumer:
    stack: Stack
    bus: str
    queue_url: str
    sqs: Any

    def received(self, count: int) -> list[DomainEvent]:
        events: list[DomainEvent] = []
        for _ in range(20):
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for message in response.get("Messages", []):
                envelope = json.loads(message["Body"])
                assert envelope["source"] == EVENT_SOURCE
                events.append(parse_event(envelope["detail-type"], envelope["detail"]))
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
            if len(events) >= count:
                break
        return events


@pytest.fixture(scope="module")
def consumer() -> Iterator[Consumer]:
    with MotoEmulator() as moto:
        stack = provision(
            ROOT / "template.yaml",
            moto.endpoint,
            stack_name=f"t{uuid.uuid4().hex[:8]}",
            extra_secrets={"database": ExtraSecret("{}", "DatabaseSecretArn")},
        )
        bus = stack.ref("EventBus")
        sqs = moto.endpoint.client("sqs")
        queue_url = sqs.create_queue(QueueName="job-events")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events = moto.endpoint.client("events")
        events.put_rule(
            Name="all-job-events",
            EventBusName=bus,
            EventPattern=json.dumps({"source": [EVENT_SOURCE]}),
        )
        events.put_targets(
            Rule="all-job-events", EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}]
        )
        yield Consumer(stack, bus, queue_url, sqs)


def test_the_bus_is_the_one_the_functions_are_told_about(consumer: Consumer) -> None:
    for name in ("SplitterFunction", "WorkerFunction", "MergeFunction"):
        environment = consumer.stack.functions[name].environment
        assert environment["STT_EVENT_BUS_NAME"] == consumer.bus


def test_a_job_lifecycle_arrives_in_order_through_a_rule(consumer: Consumer) -> None:
    recorded: list[Recorded] = []

    def record(metric: Metric, value: float, *_: Any, **__: Any) -> None:
        recorded.append(Recorded(metric, value))

    publisher = EventBridgePublisher(consumer.bus, record, consumer.stack.endpoint.client("events"))
    jobs = PublishingJobRepository(InMemoryJobRepository(), publisher)
    job_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    jobs.add(
        Job(
            job_id=job_id,
            tenant_id="acme",
            filename="a.flac",
            priority=Priority.HIGH,
            upload_key=f"uploads/{job_id}/a.flac",
            created_at=now,
            updated_at=now,
        )
    )
    jobs.add_chunks(
        job_id,
        [
            ChunkProgress(index=0, start_ms=0, end_ms=30_000, state=ChunkState.PENDING),
            ChunkProgress(index=1, start_ms=30_000, end_ms=60_000, state=ChunkState.PENDING),
            ChunkProgress(index=2, start_ms=60_000, end_ms=70_000, state=ChunkState.SILENT),
        ],
    )
    # What the splitter, two workers and the merge record, in this order.
    jobs.set_status(job_id, JobStatus.TRANSCRIBING)
    jobs.set_chunk_state(job_id, 0, ChunkState.DONE)
    jobs.set_chunk_state(job_id, 1, ChunkState.FAILED, error="HTTP 400")
    jobs.finish(
        job_id,
        JobStatus.PARTIAL,
        stats={"duration_s": 70.0, "chunks": 3, "chunks_failed": 1},
        reason="1 chunk(s) failed: 1",
    )

    events = consumer.received(4)
    assert [e.detail_type() for e in events] == [
        "JobQueued.v1",
        "ChunkCompleted.v1",
        "ChunkFailed.v1",
        "FilePartial.v1",
    ]
    queued, _, failed, finished = events
    assert queued == JobQueued(
        event_id=queued.event_id,
        occurred_at=queued.occurred_at,
        job_id=job_id,
        tenant_id="acme",
        priority=Priority.HIGH,
        chunks_total=3,
        chunks_to_transcribe=2,
    )
    assert failed.model_dump()["reason"] == "HTTP 400"
    assert isinstance(finished, FilePartial)
    assert (finished.tenant_id, finished.chunks_failed, finished.duration_s) == ("acme", 1, 70.0)
    assert recorded == []  # all published


def test_a_batch_over_the_put_events_limit_arrives_whole(consumer: Consumer) -> None:
    publisher = EventBridgePublisher(
        consumer.bus, lambda *a, **k: None, consumer.stack.endpoint.client("events")
    )
    sent = [
        CacheInvalidated(tenant_id="acme", entries=n, reason="test", job_id=None) for n in range(13)
    ]
    publisher.publish(*sent)

    received = consumer.received(13)
    assert sorted(received, key=lambda e: e.model_dump()["entries"]) == sent


def test_an_unknown_bus_is_counted_not_raised(consumer: Consumer) -> None:
    recorded: list[Recorded] = []
    publisher = EventBridgePublisher(
        "no-such-bus",
        lambda metric, value, *_, **__: recorded.append(Recorded(metric, value)),
        consumer.stack.endpoint.client("events"),
    )
    publisher.publish(CacheInvalidated(tenant_id="acme", entries=1, reason="test"))

    assert recorded == [Recorded(Metric.EVENTS_NOT_PUBLISHED, 1)]
