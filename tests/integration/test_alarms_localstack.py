"""The template's alarms, dashboard and alarm topic on LocalStack, which evaluates alarms (moto
does not): an alarm goes to ALARM when its metric crosses the threshold, and says so on the topic.

LocalStack evaluates an alarm when it is put and then every Period x EvaluationPeriods seconds;
provisioning the stack again (an upsert, as a redeploy would be) makes it evaluate now rather
than minutes from now. It evaluates single-metric alarms only (metric-math alarms stay
INSUFFICIENT_DATA there), so the single-metric ones are driven here; the metric-math ones are
held to the code's metric names by tests/unit/test_observability_metrics.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from localcloud.emulators import LocalStackEmulator
from localcloud.provision import ExtraSecret, Stack, provision
from localcloud.template import load_template_document

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


@dataclass
class Deployed:
    localstack: LocalStackEmulator
    options: dict[str, Any]
    stack: Stack
    cloudwatch: Any
    notifications: str  # an SQS queue subscribed to the alarm topic

    def redeploy(self) -> None:
        self.stack = provision(TEMPLATE, self.localstack.endpoint, **self.options)

    def alarm(self, logical_id: str) -> dict[str, Any]:
        name = self.stack.ref(logical_id)
        alarms: list[dict[str, Any]] = self.cloudwatch.describe_alarms(AlarmNames=[name])[
            "MetricAlarms"
        ]
        assert len(alarms) == 1
        return alarms[0]

    def wait_for_state(self, logical_id: str, state: str, timeout_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            alarm = self.alarm(logical_id)
            if alarm["StateValue"] == state or time.monotonic() > deadline:
                return alarm
            time.sleep(0.5)


@pytest.fixture(scope="module")
def deployed(localstack: LocalStackEmulator) -> Iterator[Deployed]:
    options: dict[str, Any] = {
        "stack_name": f"t{uuid.uuid4().hex[:8]}",
        "extra_secrets": {"database": ExtraSecret("{}", "DatabaseSecretArn")},
    }
    stack = provision(TEMPLATE, localstack.endpoint, **options)
    sqs = localstack.endpoint.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"{options['stack_name']}-alarm-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    localstack.endpoint.client("sns").subscribe(
        TopicArn=stack.ref("AlarmTopic"), Protocol="sqs", Endpoint=queue_arn
    )
    deployed = Deployed(
        localstack, options, stack, localstack.endpoint.client("cloudwatch"), queue_url
    )
    yield deployed
    # Scheduled alarm evaluations slow LocalStack's shutdown down.
    names = [r.ref for r in deployed.stack.of_type("AWS::CloudWatch::Alarm").values()]
    deployed.cloudwatch.delete_alarms(AlarmNames=names)


def put(
    deployed: Deployed, namespace: str, name: str, dimensions: dict[str, str], **kw: Any
) -> None:
    """One datum per (minutes ago, value) pair."""
    deployed.cloudwatch.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                "Timestamp": datetime.now(UTC) - timedelta(minutes=minutes_ago),
                "Value": value,
            }
            for minutes_ago, value in kw["points"]
        ],
    )


def test_every_alarm_and_the_dashboard_exist_and_notify_the_encrypted_topic(
    deployed: Deployed,
) -> None:
    resources = load_template_document(TEMPLATE)["Resources"]
    alarms = [lid for lid, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert len(alarms) >= 10
    topic = deployed.stack.ref("AlarmTopic")
    for lid in alarms:
        alarm = deployed.alarm(lid)
        assert alarm["AlarmActions"] == [topic], lid
    attributes = deployed.localstack.endpoint.client("sns").get_topic_attributes(TopicArn=topic)
    assert attributes["Attributes"]["KmsMasterKeyId"] == deployed.stack.ref("AlarmTopicKey")
    body = deployed.cloudwatch.get_dashboard(
        DashboardName=deployed.stack.ref("OperationsDashboard")
    )["DashboardBody"]
    widgets = json.loads(body)["widgets"]
    assert any("Cache hit rate" in w["properties"]["title"] for w in widgets)
    # Resolved to this stack's queue names, not left as ${...}.
    assert "${" not in body and deployed.stack.attribute("ChunkQueueHigh", "QueueName") in body


def test_sustained_speech_api_throttling_goes_to_alarm_and_notifies(deployed: Deployed) -> None:
    dimensions = {"service": "worker"}
    threshold = float(deployed.stack.parameters["ThrottleAlarmPer5Min"])
    # Below the threshold in every 5-minute period: stays OK.
    put(deployed, "STT", "SpeechApiThrottled", dimensions, points=[(1, 2), (6, 2), (11, 2)])
    deployed.redeploy()
    assert deployed.wait_for_state("SpeechApiThrottlingAlarm", "OK")["StateValue"] == "OK"

    # Over it in all three periods of the last 15 minutes: sustained throttling.
    points = [(1, threshold + 5), (6, threshold + 5), (11, threshold + 5)]
    put(deployed, "STT", "SpeechApiThrottled", dimensions, points=points)
    deployed.redeploy()
    alarm = deployed.wait_for_state("SpeechApiThrottlingAlarm", "ALARM")
    assert alarm["StateValue"] == "ALARM", alarm.get("StateReason")

    # The notification CloudWatch publishes on the topic (OK ones arrive too, via OKActions).
    sqs = deployed.localstack.endpoint.client("sqs")
    seen: list[tuple[str, str]] = []
    wanted = (alarm["AlarmName"], "ALARM")
    deadline = time.monotonic() + 20
    while wanted not in seen and time.monotonic() < deadline:
        for message in sqs.receive_message(
            QueueUrl=deployed.notifications, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", []):
            notice = json.loads(json.loads(message["Body"])["Message"])
            seen.append((notice["AlarmName"], notice["NewStateValue"]))
    assert wanted in seen, seen


def test_a_message_in_a_dead_letter_queue_goes_to_alarm(deployed: Deployed) -> None:
    queue = deployed.stack.attribute("ChunkDeadLetterQueueNormal", "QueueName")
    assert deployed.alarm("ChunkDeadLetterNormalAlarm")["StateValue"] != "ALARM"
    # What SQS reports once a chunk message has been given up on.
    put(
        deployed,
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": queue},
        points=[(0, 1)],
    )
    deployed.redeploy()
    alarm = deployed.wait_for_state("ChunkDeadLetterNormalAlarm", "ALARM")
    assert alarm["StateValue"] == "ALARM", alarm.get("StateReason")
    # The other dead-letter queues are still empty.
    assert deployed.alarm("ChunkDeadLetterHighAlarm")["StateValue"] != "ALARM"
