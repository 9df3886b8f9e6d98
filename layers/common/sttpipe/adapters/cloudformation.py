"""Answers to CloudFormation custom resources: a JSON document PUT to the pre-signed S3 URL the
request carries. Written here rather than with AWS's `cfnresponse`, which prints that URL (a
signed link) to the logs and drops a failed answer with a print."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from aws_lambda_powertools import Logger
from tenacity import retry, stop_after_attempt, wait_exponential

logger = Logger(child=True)

# What a custom resource's work returns: the reason CloudFormation shows, and its Data.
Outcome = tuple[str, Mapping[str, str] | None]

# CloudFormation shows the reason in the stack's events; it rejects long ones.
_MAX_REASON_CHARS = 1000


@retry(stop=stop_after_attempt(4), wait=wait_exponential(multiplier=0.5, max=4), reraise=True)
def answer_custom_resource(
    request: Mapping[str, Any],
    *,
    succeeded: bool,
    physical_id: str,
    reason: str = "",
    data: Mapping[str, str] | None = None,
) -> None:
    """PUT the answer to `request` (the custom resource event); retried, then raised."""
    body = json.dumps(
        {
            "Status": "SUCCESS" if succeeded else "FAILED",
            "Reason": reason[:_MAX_REASON_CHARS] or ("done" if succeeded else "failed"),
            "PhysicalResourceId": physical_id,
            "StackId": request["StackId"],
            "RequestId": request["RequestId"],
            "LogicalResourceId": request["LogicalResourceId"],
            "Data": dict(data or {}),
        }
    ).encode()
    # The URL is signed for exactly this content type: none.
    response = httpx.put(
        request["ResponseURL"], content=body, headers={"content-type": ""}, timeout=10.0
    )
    response.raise_for_status()


def answer_after(
    request: Mapping[str, Any],
    work: Callable[[], Outcome],
    *,
    physical_id: str,
    failure: str,
) -> None:
    """Do a custom resource's `work` and answer CloudFormation: SUCCESS with the reason and data
    it returns, or FAILED with `failure` and the error (logged with its traceback)."""
    try:
        reason, data = work()
    except Exception as exc:
        logger.exception(failure)
        answer_custom_resource(
            request,
            succeeded=False,
            physical_id=physical_id,
            reason=f"{failure}: {type(exc).__name__}: {exc}",
        )
        return
    logger.info(reason, extra={"request": request.get("RequestType")})
    answer_custom_resource(
        request, succeeded=True, physical_id=physical_id, reason=reason, data=data
    )
