"""What the function host and the API gateway make of SQS messages, results and paths."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from localcloud.api_gateway import _compile, _response, _Route
from localcloud.function_host import Invocation, process_count, sqs_event, succeeded_messages
from localcloud.provision import BoundSqsSource, FunctionSpec
from localcloud.template import HttpApiRoute, SqsEventSource

ARN = "arn:aws:sqs:us-east-1:123456789012:demo-Jobs"


def source(report_failures: bool = True) -> BoundSqsSource:
    event = SqsEventSource("Work", {"Fn::GetAtt": ["Jobs", "Arn"]}, 10, report_failures, None, True)
    return BoundSqsSource(event, ARN, "http://127.0.0.1:1/123456789012/demo-Jobs")


def message(n: int, **extra: Any) -> dict[str, Any]:
    """A message as SQS ReceiveMessage returns it."""
    return {
        "MessageId": f"id-{n}",
        "ReceiptHandle": f"handle-{n}",
        "MD5OfBody": "md5",
        "Body": f"body {n}",
        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
        **extra,
    }


def test_sqs_event_has_the_lambda_record_shape() -> None:
    attributes = {
        "kind": {"StringValue": "chunk", "DataType": "String"},
        "blob": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
    }
    event = sqs_event(
        source(), [message(1, MessageAttributes=attributes, MD5OfMessageAttributes="m")], "eu-1"
    )
    (record,) = event["Records"]
    assert record == {
        "messageId": "id-1",
        "receiptHandle": "handle-1",
        "body": "body 1",
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
        "messageAttributes": {
            "kind": {
                "stringValue": "chunk",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            },
            "blob": {
                "binaryValue": base64.b64encode(b"\x00\x01").decode(),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Binary",
            },
        },
        "md5OfBody": "md5",
        "md5OfMessageAttributes": "m",
        "eventSource": "aws:sqs",
        "eventSourceARN": ARN,
        "awsRegion": "eu-1",
    }


BATCH = [message(1), message(2), message(3)]


@pytest.mark.parametrize(
    ("report_failures", "invocation", "deleted"),
    [
        (True, Invocation("r", "ok", {"batchItemFailures": [{"itemIdentifier": "id-2"}]}), [1, 3]),
        (True, Invocation("r", "ok", {"batchItemFailures": []}), [1, 2, 3]),
        (True, Invocation("r", "ok", None), [1, 2, 3]),
        (True, Invocation("r", "ok", {"statusCode": 200}), [1, 2, 3]),
        (True, Invocation("r", "ok", {"batchItemFailures": [{"itemIdentifier": "id-9"}]}), []),
        (True, Invocation("r", "ok", {"batchItemFailures": [{"itemIdentifier": None}]}), []),
        (True, Invocation("r", "ok", {"batchItemFailures": [{"id": "id-2"}]}), []),
        (True, Invocation("r", "ok", "done"), []),
        (
            False,
            Invocation("r", "ok", {"batchItemFailures": [{"itemIdentifier": "id-2"}]}),
            [1, 2, 3],
        ),
        (True, Invocation("r", "error", error={"errorType": "ValueError"}), []),
        (False, Invocation("r", "timeout"), []),
    ],
)
def test_which_messages_are_deleted(
    report_failures: bool, invocation: Invocation, deleted: list[int]
) -> None:
    kept = succeeded_messages(source(report_failures), BATCH, invocation)
    assert [m["MessageId"] for m in kept] == [f"id-{n}" for n in deleted]


def function(*concurrencies: int | None, http: bool = False) -> FunctionSpec:
    sources = tuple(
        BoundSqsSource(SqsEventSource(f"E{i}", ARN, 1, True, mc, True), ARN, "url")
        for i, mc in enumerate(concurrencies)
    )
    routes = (HttpApiRoute("Get", "GET", "/", None),) if http else ()
    return FunctionSpec(
        "Fn", "fn", "arn", Path("."), "app.handler", (), "python3.12", 3, 128, {}, sources, routes
    )


@pytest.mark.parametrize(
    ("spec", "cap", "expected"),
    [
        (function(20, 10, 3), 2, 2),
        (function(20, 10, 3), 100, 33),
        (function(None), 3, 3),
        (function(None, 2), 8, 8),
        (function(http=True), 4, 4),
    ],
)
def test_process_count_is_maximum_concurrency_capped(
    spec: FunctionSpec, cap: int, expected: int
) -> None:
    assert process_count(spec, cap) == expected


def route(method: str, path: str) -> _Route:
    return _Route("Fn", HttpApiRoute("E", method, path, None), _compile(path))


def test_routes_match_most_specific_first() -> None:
    routes = sorted(
        [
            route("ANY", "$default"),
            route("GET", "/{proxy+}"),
            route("ANY", "/jobs/{job_id}"),
            route("GET", "/jobs/{job_id}"),
            route("GET", "/jobs/latest"),
        ],
        key=lambda r: r.specificity,
    )

    def pick(method: str, path: str) -> tuple[str, dict[str, str] | None]:
        for r in routes:
            params = r.path_parameters(path)
            if r.accepts(method) and params is not None:
                return r.key, params
        raise AssertionError("no route")

    assert pick("GET", "/jobs/latest") == ("GET /jobs/latest", {})
    assert pick("GET", "/jobs/a%2Fb") == ("GET /jobs/{job_id}", {"job_id": "a/b"})
    assert pick("POST", "/jobs/7") == ("ANY /jobs/{job_id}", {"job_id": "7"})
    assert pick("GET", "/files/x/y.txt") == ("GET /{proxy+}", {"proxy": "files/x/y.txt"})
    assert pick("DELETE", "/other") == ("$default", {})


def test_responses_follow_payload_format_2() -> None:
    full = _response(
        Invocation(
            "r",
            "ok",
            {
                "statusCode": 202,
                "headers": {"content-type": "image/png"},
                "cookies": ["a=1", "b=2"],
                "body": base64.b64encode(b"\x89PNG").decode(),
                "isBase64Encoded": True,
            },
        )
    )
    assert (full.status_code, full.body) == (202, b"\x89PNG")
    assert full.headers.getlist("set-cookie") == ["a=1", "b=2"]
    inferred = _response(Invocation("r", "ok", {"id": 1}))
    assert (inferred.status_code, inferred.body) == (200, b'{"id": 1}')
    assert inferred.headers["content-type"] == "application/json"
    assert _response(Invocation("r", "error")).status_code == 500
    assert _response(Invocation("r", "timeout")).status_code == 503
