"""SQS: queue depths (approximate, as SQS itself counts them), sending messages and holding
received ones back."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

import boto3

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import SendMessageRequestTypeDef

_ATTRIBUTES: dict[str, QueueAttributeNameType] = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


@functools.cache
def default_sqs_client() -> SQSClient:
    return boto3.client("sqs")


class SqsQueueStats:
    def __init__(self, client: SQSClient | None = None) -> None:
        self._sqs = client or default_sqs_client()

    def depths(self, queue_urls: Mapping[str, str]) -> dict[str, dict[str, int]]:
        depths = {}
        for name, url in queue_urls.items():
            found = self._sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=list(_ATTRIBUTES.values())
            )["Attributes"]
            depths[name] = {field: int(found.get(attr) or 0) for field, attr in _ATTRIBUTES.items()}
        return depths


class SqsMessageQueues:
    # SQS's longest per-message delay and longest visibility timeout.
    MAX_DELAY_S = 900
    MAX_VISIBILITY_S = 12 * 3600

    def __init__(self, client: SQSClient | None = None) -> None:
        self._sqs = client or default_sqs_client()

    def send(
        self,
        queue_url: str,
        body: str,
        *,
        delay_s: int = 0,
        attributes: Mapping[str, str] | None = None,
        group_id: str | None = None,
    ) -> None:
        message: SendMessageRequestTypeDef = {
            "QueueUrl": queue_url,
            "MessageBody": body,
            "DelaySeconds": max(0, min(self.MAX_DELAY_S, delay_s)),
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": value}
                for name, value in (attributes or {}).items()
            },
        }
        if group_id:
            message["MessageGroupId"] = group_id
        self._sqs.send_message(**message)

    def hide(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        self._sqs.change_message_visibility(
            QueueUrl=queue_url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(self.MAX_VISIBILITY_S, seconds)),
        )
