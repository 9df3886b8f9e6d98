"""The workflow on AWS Step Functions: one execution per job, callback tasks answered by token."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import ClientError

from sttpipe.ports import TaskNoLongerWaiting

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

# Step Functions' limits on SendTaskFailure (characters).
MAX_ERROR_CHARS = 256
MAX_CAUSE_CHARS = 32768
MAX_EXECUTION_NAME = 80

# Answers to a task that timed out, already finished or never existed: nobody waits any more.
_GONE_CODES = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


@functools.cache
def default_sfn_client() -> SFNClient:
    return boto3.client("stepfunctions")


def execution_name(job_id: str, run: int = 1) -> str:
    """The name of the job's execution for its `run` (1 the first, 2 its first re-run, ...), a
    pure function of both.

    Step Functions refuses a second execution of the same name, which is what makes a
    redelivered upload message, or a repeated request for the same re-run, harmless. Ids that
    are not already a safe name are cleaned and suffixed with a hash, so that distinct ids keep
    distinct names.
    """
    base = job_id if run == 1 else f"{job_id}-run{run}"
    if _SAFE_NAME.fullmatch(base):
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:16]
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", base)[: MAX_EXECUTION_NAME - len(digest) - 1]
    return f"{cleaned}-{digest}"


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def execution_arn(state_machine_arn: str, name: str) -> str:
    # arn:aws:states:R:A:stateMachine:SM -> arn:aws:states:R:A:execution:SM:NAME
    head, _, machine = state_machine_arn.rpartition(":stateMachine:")
    return f"{head}:execution:{machine}:{name}"


class StepFunctionsWorkflow:
    def __init__(self, state_machine_arn: str, client: SFNClient | None = None) -> None:
        self.state_machine_arn = state_machine_arn
        self._sfn = client or default_sfn_client()

    def start(self, job_id: str, execution_input: str, run: int = 1) -> str:
        """Start the execution of the job's `run` and return its ARN; if it already exists,
        return that one."""
        name = execution_name(job_id, run)
        try:
            response = self._sfn.start_execution(
                stateMachineArn=self.state_machine_arn, name=name, input=execution_input
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise
            return execution_arn(self.state_machine_arn, name)
        return response["executionArn"]

    def execution_status(self, job_id: str, run: int = 1) -> str | None:
        arn = execution_arn(self.state_machine_arn, execution_name(job_id, run))
        try:
            return self._sfn.describe_execution(executionArn=arn)["status"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
                return None
            raise

    def stop(self, job_id: str, run: int, cause: str) -> None:
        arn = execution_arn(self.state_machine_arn, execution_name(job_id, run))
        try:
            self._sfn.stop_execution(
                executionArn=arn, error="Cancelled", cause=truncate(cause, MAX_CAUSE_CHARS)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionDoesNotExist":
                raise

    def succeed(self, task_token: str, output: str) -> None:
        with _task_answer():
            self._sfn.send_task_success(taskToken=task_token, output=output)

    def fail(self, task_token: str, error: str, cause: str) -> None:
        with _task_answer():
            self._sfn.send_task_failure(
                taskToken=task_token,
                error=truncate(error, MAX_ERROR_CHARS),
                cause=truncate(cause, MAX_CAUSE_CHARS),
            )

    def heartbeat(self, task_token: str) -> None:
        with _task_answer():
            self._sfn.send_task_heartbeat(taskToken=task_token)


@contextmanager
def _task_answer() -> Iterator[None]:
    """Turn 'nobody waits for this token any more' into TaskNoLongerWaiting."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _GONE_CODES:
            raise TaskNoLongerWaiting(f"{code}: {exc}") from exc
        raise
