"""The local cloud on the real template.yaml, on moto and (marked integration) on LocalStack.

The functions' handlers are swapped for a small recording handler (written into a copy of the
project under tmp_path), so these tests prove the wiring: S3 -> SQS -> function host, partial
batch failures and redrive, the state machine's task tokens, queue priorities and the HTTP API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote_plus

import httpx
import pytest

from localcloud.cloud import DEFAULT_TEMPLATE, LocalCloud
from localcloud.emulators import Emulator, LocalStackEmulator, MotoEmulator
from localcloud.function_host import FunctionHost
from localcloud.provision import ExtraSecret, provision
from localcloud.template import FUNCTION_TYPE, load_template_document

T = TypeVar("T")

# Stands in for every function of the template: records what it got, fails the messages that
# ask for it, answers state machine task tokens, echoes HTTP API events.
RECORDING_HANDLER = """
import json, os, pathlib, time, uuid

import boto3

RECORDS = pathlib.Path(os.environ["TEST_RECORD_DIR"])
_stepfunctions = None


def _answer(message):
    if "chunk" in message:
        return {"index": message["chunk"]["index"], "text": "chunk %d" % message["chunk"]["index"]}
    return {"merged": message["job_id"]}


def handler(event, context):
    global _stepfunctions
    record = {
        "service": os.environ["POWERTOOLS_SERVICE_NAME"],
        "event": event,
        "context": {
            "function_name": context.function_name,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "invoked_function_arn": context.invoked_function_arn,
            "aws_request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
        },
    }
    (RECORDS / f"{time.time_ns()}-{uuid.uuid4().hex}.json").write_text(json.dumps(record))
    if "Records" not in event:
        return {"statusCode": 201, "headers": {"x-test": "yes"}, "cookies": ["a=1", "b=2"],
                "body": json.dumps(event)}
    failures = []
    for sqs_record in event["Records"]:
        message = json.loads(sqs_record["body"])
        time.sleep(message.get("hold_s", 0))  # the process stays busy: batches wait for it
        if message.get("fail"):
            failures.append({"itemIdentifier": sqs_record["messageId"]})
        elif "task_token" in message:
            _stepfunctions = _stepfunctions or boto3.client("stepfunctions")
            _stepfunctions.send_task_success(
                taskToken=message["task_token"], output=json.dumps(_answer(message)))
    return {"batchItemFailures": failures}
"""


def wait_for(probe: Callable[[], T | None], timeout_s: float = 60.0, what: str = "") -> T:
    """Poll until `probe` returns something truthy (the pipeline is asynchronous)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what or probe}")


@pytest.fixture(
    params=[
        pytest.param("moto", id="moto"),
        pytest.param("localstack", id="localstack", marks=pytest.mark.integration),
    ]
)
def emulator(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    if request.param == "localstack":
        yield request.getfixturevalue("localstack")
    else:
        with MotoEmulator() as moto:
            yield moto


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project whose functions are all the recording handler."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "template.yaml").write_text(DEFAULT_TEMPLATE.read_text())
    for shared in ("infra", "layers"):
        (root / shared).symlink_to(DEFAULT_TEMPLATE.parent / shared)
    resources = load_template_document(DEFAULT_TEMPLATE)["Resources"]
    for resource in resources.values():
        if resource["Type"] == FUNCTION_TYPE:
            code = root / resource["Properties"]["CodeUri"]
            code.mkdir(parents=True)
            (code / "app.py").write_text(RECORDING_HANDLER)
    return root


@pytest.fixture
def records(tmp_path: Path) -> Path:
    path = tmp_path / "records"
    path.mkdir()
    return path


def read_records(directory: Path, service: str | None = None) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    return [r for r in found if service is None or r["service"] == service]


def make_cloud(emulator: Emulator, project: Path, records: Path, **options: Any) -> LocalCloud:
    return LocalCloud(
        project / "template.yaml",
        # LocalStack is passed by URL, as a user names one already running; moto as an object.
        emulator=emulator.endpoint_url if isinstance(emulator, LocalStackEmulator) else emulator,
        stack_name=f"t{uuid.uuid4().hex[:8]}",  # LocalStack is shared by the whole session
        extra_secrets={
            "database": ExtraSecret(json.dumps({"host": "127.0.0.1"}), "DatabaseSecretArn")
        },
        secret_values={"SpeechApiKeySecret": "local-key"},
        function_env={"TEST_RECORD_DIR": str(records)},
        visibility_timeout_cap_s=1,
        # One process per function: a message whose handling (cold start included) outlasts the
        # 1 s visibility timeout is then not handed to a second process at the same time.
        concurrency=1,
        log_dir=records.parent / "logs",
        **options,
    )


def queue_depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def test_upload_notification_reaches_the_splitter(
    emulator: Emulator, project: Path, records: Path
) -> None:
    with make_cloud(emulator, project, records) as cloud:
        stack = cloud.stack
        s3, sqs = cloud.boto3_client("s3"), cloud.boto3_client("sqs")
        bucket = stack.outputs["BucketName"]
        s3.put_object(Bucket=bucket, Key="elsewhere/skip.wav", Body=b"not for the splitter")
        s3.put_object(Bucket=bucket, Key="uploads/a talk.wav", Body=b"RIFF")

        def upload_records() -> list[tuple[dict[str, Any], dict[str, Any]]]:
            found = []
            for record in read_records(records, "splitter"):
                sqs_record = record["event"]["Records"][0]
                for s3_record in json.loads(sqs_record["body"]).get("Records", []):
                    found.append((record, sqs_record | {"s3": s3_record["s3"]}))
            return found

        record, sqs_record = wait_for(upload_records, what="the upload's notification")[0]
        queue_url = stack.ref("UploadQueue")
        # An undeleted message stays counted (in flight, then visible) until it is redriven.
        wait_for(lambda: queue_depth(sqs, queue_url) == 0, what="the message's deletion")

        splitter = stack.functions["SplitterFunction"]
        assert unquote_plus(sqs_record["s3"]["object"]["key"]) == "uploads/a talk.wav"
        assert sqs_record["s3"]["bucket"]["name"] == bucket
        assert sqs_record["eventSource"] == "aws:sqs"
        assert sqs_record["eventSourceARN"] == stack.attribute("UploadQueue", "Arn")
        assert sqs_record["awsRegion"] == stack.pseudo.region
        assert sqs_record["md5OfBody"] == hashlib.md5(sqs_record["body"].encode()).hexdigest()
        assert sqs_record["attributes"]["ApproximateReceiveCount"] == "1"
        assert record["context"]["function_name"] == splitter.name
        assert record["context"]["memory_limit_in_mb"] == splitter.memory_mb
        assert record["context"]["invoked_function_arn"] == splitter.arn
        assert 0 < record["context"]["remaining_ms"] <= splitter.timeout_s * 1000
        assert len(upload_records()) == 1
        assert queue_depth(sqs, stack.ref("UploadDeadLetterQueue")) == 0
        assert all(
            "elsewhere/" not in r["event"]["Records"][0]["body"] for r in read_records(records)
        )


def test_failed_batch_item_comes_back_then_goes_to_the_dead_letter_queue(
    emulator: Emulator, project: Path, records: Path
) -> None:
    with make_cloud(emulator, project, records) as cloud:
        stack = cloud.stack
        sqs = cloud.boto3_client("sqs")
        queue_url = stack.ref("ChunkQueueLow")
        dlq_url = stack.ref("ChunkDeadLetterQueueLow")
        max_receives = json.loads(
            sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])[
                "Attributes"
            ]["RedrivePolicy"]
        )["maxReceiveCount"]
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"n": 1}))
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"n": 2, "fail": True}))

        dead = wait_for(
            lambda: sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1).get("Messages"),
            what="the failed message in the dead-letter queue",
        )
        seen: dict[int, list[str]] = {}
        for record in read_records(records, "worker"):
            for sqs_record in record["event"]["Records"]:
                n = json.loads(sqs_record["body"])["n"]
                seen.setdefault(n, []).append(sqs_record["attributes"]["ApproximateReceiveCount"])

        assert [json.loads(m["Body"])["n"] for m in dead] == [2]
        assert seen[1] == ["1"]
        assert seen[2] == [str(i) for i in range(1, max_receives + 1)]
        assert queue_depth(sqs, queue_url) == 0
    assert cloud.host.stats("WorkerFunction").deleted == 1  # final once the host has stopped


def test_state_machine_map_completes_when_the_functions_answer_the_tokens(
    emulator: Emulator, project: Path, records: Path
) -> None:
    with make_cloud(emulator, project, records) as cloud:
        stack = cloud.stack
        sfn = cloud.boto3_client("stepfunctions")
        chunk_list = json.dumps([{"index": i} for i in range(3)]).encode()
        s3 = cloud.boto3_client("s3")
        s3.put_object(
            Bucket=stack.outputs["BucketName"], Key="work/job-1/chunks.json", Body=chunk_list
        )
        execution = sfn.start_execution(
            stateMachineArn=stack.outputs["StateMachineArn"],
            input=json.dumps(
                {
                    "job_id": "job-1",
                    "language": "en",
                    "queue_url": stack.ref("ChunkQueueHigh"),
                    "chunks_key": "work/job-1/chunks.json",
                }
            ),
        )["executionArn"]

        def finished() -> dict[str, Any] | None:
            described: dict[str, Any] = sfn.describe_execution(executionArn=execution)
            return None if described["status"] == "RUNNING" else described

        result = wait_for(finished, what="the execution's end")

        assert result["status"] == "SUCCEEDED", result
        assert json.loads(result["output"]) == {"merged": "job-1"}
        chunk_messages = [
            json.loads(r["body"])
            for record in read_records(records, "worker")
            for r in record["event"]["Records"]
        ]
        assert sorted(m["chunk"]["index"] for m in chunk_messages) == [0, 1, 2]
        assert {m["job_id"] for m in chunk_messages} == {"job-1"}
        # The input had no prompt and no run, as an older splitter's has not: the chunks get
        # none, and run 1.
        assert [m["prompt"] for m in chunk_messages] == [None, None, None]
        assert [m["run"] for m in chunk_messages] == [1, 1, 1]


def test_higher_priority_queues_are_served_first_when_processes_are_scarce(
    emulator: Emulator, project: Path, records: Path, tmp_path: Path
) -> None:
    stack = provision(
        project / "template.yaml",
        emulator.endpoint,
        stack_name=f"t{uuid.uuid4().hex[:8]}",
        extra_secrets={"database": ExtraSecret("{}", "DatabaseSecretArn")},
    )
    sqs = emulator.endpoint.client("sqs")
    sources = stack.functions["WorkerFunction"].sqs_sources
    by_priority = sorted(sources, key=lambda s: s.event.maximum_concurrency or 0)
    for source in by_priority:  # lowest first, so arrival order is the opposite of priority
        for n in range(2):
            # Each held a second: while the first is handled, every source's poller has
            # received its batch, however slow a loaded machine makes the emulator.
            body = json.dumps({"n": n, "hold_s": 1.0})
            sqs.send_message(QueueUrl=source.queue_url, MessageBody=body)

    host = FunctionHost(
        stack,
        tmp_path / "logs",
        concurrency={"WorkerFunction": 1},
        extra_env={"TEST_RECORD_DIR": str(records)},
    )

    def all_handled() -> list[dict[str, Any]] | None:
        found = read_records(records, "worker")
        return found if len(found) == 2 * len(sources) else None

    with host:
        handled = wait_for(all_handled, what="every message handled")

    order = [r["event"]["Records"][0]["eventSourceARN"] for r in handled]
    # Each source polls on its own, as Lambda's event source mappings do: the first batch goes
    # to whichever received first while the process was free. From then on the process is the
    # bottleneck, and the batches waiting for it are served high before normal before low.
    rest = [s.queue_arn for s in reversed(by_priority) for _ in range(2)]
    rest.remove(order[0])
    assert order[1:] == rest


def test_api_gateway_routes_requests_with_v2_events(
    emulator: Emulator, project: Path, records: Path
) -> None:
    with (
        make_cloud(emulator, project, records) as cloud,
        httpx.Client(
            base_url=cloud.api_url, headers={"Authorization": f"Bearer {cloud.auth.mint('t1')}"}
        ) as http,
    ):
        response = http.get(
            "/jobs/job%201?x=1&x=2&empty=",
            headers={"X-Custom": "yes", "Cookie": "c1=v1; c2=v2", "Origin": "https://app.test"},
        )
        assert response.status_code == 201
        assert response.headers["x-test"] == "yes"
        assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
        assert response.headers["access-control-allow-origin"] == "*"
        event = response.json()
        assert event["version"] == "2.0"
        assert event["routeKey"] == "GET /jobs/{job_id}"
        assert event["rawPath"] == "/jobs/job%201"
        assert event["rawQueryString"] == "x=1&x=2&empty="
        assert event["queryStringParameters"] == {"x": "1,2", "empty": ""}
        assert event["pathParameters"] == {"job_id": "job 1"}
        assert event["headers"]["x-custom"] == "yes"
        assert "cookie" not in event["headers"]
        assert event["cookies"] == ["c1=v1", "c2=v2"]
        assert event["requestContext"]["http"]["method"] == "GET"
        assert event["requestContext"]["http"]["path"] == "/jobs/job%201"
        assert event["requestContext"]["http"]["sourceIp"] == "127.0.0.1"
        assert event["requestContext"]["accountId"] == cloud.stack.pseudo.account_id
        assert event["requestContext"]["authorizer"]["jwt"]["claims"]["tenant_id"] == "t1"
        assert "body" not in event and event["isBase64Encoded"] is False

        posted = http.post("/uploads", json={"filename": "a.wav"}).json()
        assert posted["routeKey"] == "POST /uploads"
        assert json.loads(posted["body"]) == {"filename": "a.wav"}
        assert posted["isBase64Encoded"] is False
        binary = http.post(
            "/uploads", content=b"\x00\xff", headers={"content-type": "application/octet-stream"}
        ).json()
        assert binary["isBase64Encoded"] is True
        assert base64.b64decode(binary["body"]) == b"\x00\xff"

        preflight = http.options(
            "/uploads",
            headers={"Origin": "https://app.test", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-methods"] == "GET,POST,DELETE,OPTIONS"
        assert preflight.headers["access-control-allow-headers"] == "content-type,authorization"
        assert preflight.headers["access-control-max-age"] == "600"

        assert http.get("/nowhere").status_code == 404
        assert http.delete("/jobs").status_code == 404
        api = read_records(records, "api")
        assert len(api) == 3 and all("Records" not in r["event"] for r in api)


def test_provisioning_again_reuses_the_stack(emulator: Emulator, project: Path) -> None:
    options: dict[str, Any] = {
        "stack_name": f"t{uuid.uuid4().hex[:8]}",
        "extra_secrets": {"database": ExtraSecret("{}", "DatabaseSecretArn")},
    }
    first = provision(project / "template.yaml", emulator.endpoint, **options)
    again = provision(
        project / "template.yaml",
        emulator.endpoint,
        parameter_overrides={"ChunkHeartbeatSeconds": "10"},
        **options,
    )

    assert again.resources == first.resources
    assert again.extra_secret_arns == first.extra_secret_arns
    sfn = emulator.endpoint.client("stepfunctions")
    definition = json.loads(
        sfn.describe_state_machine(stateMachineArn=again.outputs["StateMachineArn"])["definition"]
    )
    chunk_task = definition["States"]["TranscribeChunks"]["ItemProcessor"]["States"][
        "TranscribeChunk"
    ]
    assert chunk_task["HeartbeatSeconds"] == 10  # the new value, as a JSON number
