"""Answers to CloudFormation custom resources: a JSON document PUT to the pre-signed S3 URL the
request carries. Written here rather than with AWS's `cfnresponse`, which prints that URL (a
signed link) to the logs and drops a failed answer with a print."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
from tenacity import retry, stop_after_attempt, wait_exponential

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
