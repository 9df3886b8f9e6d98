"""EventPublisher on Amazon EventBridge."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from sttpipe.domain.events import EVENT_SOURCE, DomainEvent
from sttpipe.observability import Metric
from sttpipe.ports import MetricRecorder

if TYPE_CHECKING:
    from mypy_boto3_events.client import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

logger = Logger(child=True)

_BATCH = 10  # PutEvents takes at most ten entries


class EventBridgePublisher:
    """Puts events on one bus.

    Events tell the world what the job database already holds, so a failure to publish is
    logged and counted (metric EventsNotPublished, alarmed on) but does not fail the work that
    caused it: retrying a transcribed chunk to re-announce it would cost more than it is worth.
    """

    def __init__(
        self, bus_name: str, record: MetricRecorder, client: EventBridgeClient | None = None
    ) -> None:
        self._bus_name = bus_name
        self._record = record
        self._client = client or boto3.client("events")

    def publish(self, *events: DomainEvent) -> None:
        for start in range(0, len(events), _BATCH):
            self._put(events[start : start + _BATCH])

    def _put(self, events: tuple[DomainEvent, ...]) -> None:
        entries: list[PutEventsRequestEntryTypeDef] = [
            {
                "EventBusName": self._bus_name,
                "Source": EVENT_SOURCE,
                "DetailType": event.detail_type(),
                "Detail": json.dumps(event.detail()),
                "Time": event.occurred_at,
            }
            for event in events
        ]
        try:
            response = self._client.put_events(Entries=entries)
        except (BotoCoreError, ClientError) as exc:
            self._not_published(events, str(exc))
            return
        failed = [
            (event, entry.get("ErrorCode", ""))
            for event, entry in zip(events, response.get("Entries", []), strict=False)
            if entry.get("ErrorCode")
        ]
        for event, code in failed:
            self._not_published((event,), code)

    def _not_published(self, events: tuple[DomainEvent, ...], error: str) -> None:
        logger.error(
            "domain events not published",
            extra={
                "events": [f"{e.detail_type()}:{e.event_id}" for e in events],
                "error": error,
            },
        )
        self._record(Metric.EVENTS_NOT_PUBLISHED, len(events))
