"""StepFunctionsWorkflow against moto's Step Functions, which really runs the state machine
(an SQS `.waitForTaskToken` task, as the pipeline uses), in process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sttpipe.adapters.stepfunctions import (
    MAX_CAUSE_CHARS,
    MAX_ERROR_CHARS,
    StepFunctionsWorkflow,
    execution_arn,
    execution_name,
)
from sttpipe.ports import TaskNoLongerWaiting


@pytest.fixture
def aws(moto_env: None) -> Iterator[dict[str, Any]]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sqs = boto3.client("sqs")
        sfn = boto3.client("stepfunctions")
        queue_url = sqs.create_queue(QueueName="tasks")["QueueUrl"]
        definition = {
            "StartAt": "Wait",
            "States": {
                "Wait": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                    "Parameters": {
                        "QueueUrl": queue_url,
                        "MessageBody": {"token.$": "$$.Task.Token", "job_id.$": "$.job_id"},
                    },
                    "HeartbeatSeconds": 600,  # moto accepts heartbeats only with this set
                    "End": True,
                }
            },
        }
        arn = sfn.create_state_machine(
            name="sttpipe-test",
            definition=json.dumps(definition),
            roleArn="arn:aws:iam::123456789012:role/sfn",
        )["stateMachineArn"]
        yield {"sqs": sqs, "sfn": sfn, "queue_url": queue_url, "arn": arn}


def next_token(aws: dict[str, Any]) -> str:
    """The token of the task the execution is waiting in (moto runs it on a thread)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        messages = aws["sqs"].receive_message(QueueUrl=aws["queue_url"]).get("Messages", [])
        if messages:
            return str(json.loads(messages[0]["Body"])["token"])
        time.sleep(0.05)
    raise AssertionError("the execution never reached its callback task")


def final_state(aws: dict[str, Any], arn: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        described = aws["sfn"].describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return dict(described)
        time.sleep(0.05)
    raise AssertionError("the execution never finished")


def test_start_then_succeed_returns_the_output(aws: dict[str, Any]) -> None:
    workflow = StepFunctionsWorkflow(aws["arn"], aws["sfn"])
    arn = workflow.start("job-1", json.dumps({"job_id": "job-1"}))
    assert arn == execution_arn(aws["arn"], "job-1")
    token = next_token(aws)
    workflow.heartbeat(token)
    workflow.succeed(token, json.dumps({"result_key": "r/0.json"}))
    described = final_state(aws, arn)
    assert described["status"] == "SUCCEEDED"
    assert json.loads(described["output"]) == {"result_key": "r/0.json"}
    with pytest.raises(TaskNoLongerWaiting):
        workflow.succeed(token, "{}")  # a redelivered message answering again


def test_a_redelivered_start_does_not_start_a_second_execution(aws: dict[str, Any]) -> None:
    workflow = StepFunctionsWorkflow(aws["arn"], aws["sfn"])
    first = workflow.start("job-2", json.dumps({"job_id": "job-2"}))
    again = workflow.start("job-2", json.dumps({"job_id": "job-2"}))  # same input, running
    changed = workflow.start("job-2", json.dumps({"job_id": "job-2", "x": 1}))  # already exists
    assert first == again == changed
    executions = aws["sfn"].list_executions(stateMachineArn=aws["arn"])["executions"]
    assert [e["executionArn"] for e in executions] == [first]


def test_each_run_of_a_job_is_its_own_execution_and_a_repeated_start_of_one_is_harmless(
    aws: dict[str, Any],
) -> None:
    workflow = StepFunctionsWorkflow(aws["arn"], aws["sfn"])
    first = workflow.start("job-5", json.dumps({"job_id": "job-5"}))
    rerun = workflow.start("job-5", json.dumps({"job_id": "job-5", "chunks": [1]}), run=2)
    again = workflow.start("job-5", json.dumps({"job_id": "job-5", "chunks": [1]}), run=2)
    assert first == execution_arn(aws["arn"], "job-5")
    assert rerun == again == execution_arn(aws["arn"], "job-5-run2")
    executions = aws["sfn"].list_executions(stateMachineArn=aws["arn"])["executions"]
    assert sorted(e["executionArn"] for e in executions) == sorted([first, rerun])
    described = aws["sfn"].describe_execution(executionArn=rerun)
    assert json.loads(described["input"]) == {"job_id": "job-5", "chunks": [1]}


def test_fail_truncates_error_to_the_service_limit(aws: dict[str, Any]) -> None:
    workflow = StepFunctionsWorkflow(aws["arn"], aws["sfn"])
    arn = workflow.start("job-3", json.dumps({"job_id": "job-3"}))
    workflow.fail(next_token(aws), "E" * 1000, "c" * (MAX_CAUSE_CHARS + 10))
    described = final_state(aws, arn)
    assert described["status"] == "FAILED"
    assert described["error"] == "E" * (MAX_ERROR_CHARS - 1) + "…"
    # moto drops the cause of SendTaskFailure, so its truncation is checked on the fake.


@pytest.mark.parametrize("answer", ["succeed", "fail", "heartbeat"])
def test_answers_to_unknown_tokens_raise_task_no_longer_waiting(
    aws: dict[str, Any], answer: str
) -> None:
    workflow = StepFunctionsWorkflow(aws["arn"], aws["sfn"])
    call = {
        "succeed": lambda: workflow.succeed("not-a-token", "{}"),
        "fail": lambda: workflow.fail("not-a-token", "E", "c"),
        "heartbeat": lambda: workflow.heartbeat("not-a-token"),
    }[answer]
    with pytest.raises(TaskNoLongerWaiting):
        call()


def test_other_errors_are_not_swallowed(aws: dict[str, Any]) -> None:
    workflow = StepFunctionsWorkflow(aws["arn"].replace("sttpipe-test", "missing"), aws["sfn"])
    with pytest.raises(aws["sfn"].exceptions.StateMachineDoesNotExist):
        workflow.start("job-4", "{}")


@pytest.mark.parametrize(
    "job_id",
    ["0f8e7a3c-1b2d-4e5f-9a8b-7c6d5e4f3a2b", "tenant:42/job#7", "x" * 200, "работа 1", "y" * 78],
)
def test_execution_names_are_valid_stable_and_distinct(job_id: str) -> None:
    names = [execution_name(job_id, run) for run in (1, 2, 3, 12)]
    assert names[0] == execution_name(job_id)
    assert names == [execution_name(job_id, run) for run in (1, 2, 3, 12)]
    for name in names:
        assert 1 <= len(name) <= 80
        assert all(c.isascii() and (c.isalnum() or c in "-_") for c in name)
    assert len(set(names)) == len(names)  # every run of a job its own
    assert execution_name(job_id + "!") != names[0]
    assert execution_name(job_id + "!", 2) != names[1]
