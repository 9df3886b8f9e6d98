"""SqsMessageQueues against moto (in process): sending with delay and attributes, and hiding a
received message for a backoff."""

from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from mypy_boto3_sqs import SQSClient

from sttpipe.adapters.sqs import SqsMessageQueues


@pytest.fixture
def sqs(moto_env: None) -> Iterator[SQSClient]:
    with mock_aws():
        yield boto3.client("sqs")


def test_send_carries_the_delay_and_string_attributes(sqs: SQSClient) -> None:
    url = sqs.create_queue(QueueName="chunks")["QueueUrl"]
    SqsMessageQueues(sqs).send(url, "body", delay_s=1, attributes={"stt-deferrals": "2"})
    assert sqs.receive_message(QueueUrl=url).get("Messages", []) == []  # still delayed
    time.sleep(1.1)
    (message,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"]
    assert message["Body"] == "body"
    assert message["MessageAttributes"]["stt-deferrals"]["StringValue"] == "2"


def test_a_message_on_a_standard_queue_goes_in_its_tenants_group(sqs: SQSClient) -> None:
    """SQS fair queues: the group of a standard queue's message names its tenant."""
    url = sqs.create_queue(QueueName="chunks")["QueueUrl"]
    queues = SqsMessageQueues(sqs)
    queues.send(url, "acme's", group_id="acme")
    queues.send(url, "no tenant")
    received = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["MessageGroupId"]
    )["Messages"]
    groups = {m["Body"]: m.get("Attributes", {}).get("MessageGroupId") for m in received}
    assert groups == {"acme's": "acme", "no tenant": None}


def test_hide_replaces_the_visibility_timeout_for_this_delivery(sqs: SQSClient) -> None:
    url = sqs.create_queue(QueueName="chunks", Attributes={"VisibilityTimeout": "1800"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="retry me")
    (received,) = sqs.receive_message(QueueUrl=url)["Messages"]
    SqsMessageQueues(sqs).hide(url, received["ReceiptHandle"], 1)
    assert sqs.receive_message(QueueUrl=url).get("Messages", []) == []
    time.sleep(1.1)
    (again,) = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["All"])["Messages"]
    assert again["Body"] == "retry me"  # after the backoff, not the queue's 30 minutes
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"
