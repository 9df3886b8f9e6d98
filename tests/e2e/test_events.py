"""Every file in events/ is fed to its function's real handler, as `sam local invoke -e` would.

The handlers run in the local function host's processes with the template's environment, on moto
with a real PostgreSQL database and the local speech server. Nothing polls the queues here, so
each step of the pipeline happens only when a test invokes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from standardwebhooks import Webhook
from sttpipe_testing.receiver import WebhookReceiver

from localcloud.pipeline import LocalPipeline
from sttpipe.adapters.database import create_pool
from sttpipe.adapters.postgres import PostgresJobRepository, PostgresWebhookKeys
from sttpipe.adapters.stepfunctions import execution_arn, execution_name
from sttpipe.domain import keys
from sttpipe.domain.models import (
    ChunkProgress,
    ChunkRef,
    ChunkState,
    ChunkTask,
    ChunkTranscript,
    ExecutionInput,
    Job,
    JobEndNotice,
    JobFailureNotice,
    JobStatus,
    Manifest,
    MergeTask,
)
from sttpipe.services.webhook_keys import TenantWebhookSecrets

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
SAMPLE = ROOT / "samples" / "sample.flac"
FUNCTION_OF_PREFIX = {
    "api": "ApiFunction",
    "splitter": "SplitterFunction",
    "worker": "WorkerFunction",
    "merge": "MergeFunction",
    "cache": "CacheWarmerFunction",
    "webhook": "WebhookFunction",
    "reconciler": "ReconcilerFunction",
}


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def body_of(event: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(event["Records"][0]["body"])
    return body


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    with LocalPipeline(emulator="moto", poll=False) as running:
        yield running


@pytest.fixture(scope="module")
def jobs(pipeline: LocalPipeline) -> Iterator[PostgresJobRepository]:
    repository = PostgresJobRepository(create_pool(pipeline.database_url))
    yield repository
    repository.close()


def invoke(pipeline: LocalPipeline, name: str, event: dict[str, Any] | None = None) -> Any:
    function = FUNCTION_OF_PREFIX[name.split("-", 1)[0]]
    invocation = pipeline.cloud.host.invoke(function, event if event is not None else load(name))
    assert invocation.outcome == "ok", invocation.error
    return invocation.result


def put(pipeline: LocalPipeline, key: str, body: bytes) -> None:
    bucket = pipeline.cloud.stack.ref("UploadBucket")
    pipeline.cloud.boto3_client("s3").put_object(Bucket=bucket, Key=key, Body=body)


def add_job(
    jobs: PostgresJobRepository, job_id: str, chunks: int, webhook_url: str | None = None
) -> None:
    now = datetime.now(UTC)
    jobs.add(
        Job(
            job_id=job_id,
            filename="sample.flac",
            upload_key=keys.upload(job_id, "sample.flac"),
            language="en",
            created_at=now,
            updated_at=now,
            webhook_url=webhook_url,
        )
    )
    if chunks:
        jobs.add_chunks(
            job_id,
            [
                ChunkProgress(
                    index=i, start_ms=i * 9000, end_ms=(i + 1) * 9000, state=ChunkState.PENDING
                )
                for i in range(chunks)
            ],
        )


def test_every_event_file_belongs_to_a_function() -> None:
    names = sorted(p.name for p in EVENTS.glob("*.json"))
    assert names, "events/ is empty"
    for name in names:
        assert name.split("-", 1)[0] in FUNCTION_OF_PREFIX, name


def test_api_events(pipeline: LocalPipeline) -> None:
    created = invoke(pipeline, "api-create-upload.json")
    assert created["statusCode"] == 201
    ticket = json.loads(created["body"])
    assert ticket["upload"]["fields"]["key"] == f"uploads/{ticket['job_id']}/meeting.flac"

    listed = invoke(pipeline, "api-list-jobs.json")
    assert listed["statusCode"] == 200
    assert ticket["job_id"] in [j["job_id"] for j in json.loads(listed["body"])["jobs"]]

    # The sample event names a job that does not exist here.
    assert invoke(pipeline, "api-get-job.json")["statusCode"] == 404
    event = load("api-get-job.json")
    event["pathParameters"]["job_id"] = ticket["job_id"]
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/jobs/{ticket['job_id']}"
    found = invoke(pipeline, "api-get-job.json", event)
    assert found["statusCode"] == 200
    assert json.loads(found["body"])["status"] == JobStatus.AWAITING_UPLOAD


def test_s3_test_event_is_acknowledged(pipeline: LocalPipeline) -> None:
    assert invoke(pipeline, "splitter-s3-test-event.json") == {"batchItemFailures": []}


def test_upload_then_chunk_events_drive_a_real_execution(
    pipeline: LocalPipeline, jobs: PostgresJobRepository
) -> None:
    upload = load("splitter-upload.json")
    key = json.loads(upload["Records"][0]["body"])["Records"][0]["s3"]["object"]["key"]
    job_id = key.split("/")[1]
    add_job(jobs, job_id, chunks=0)  # as POST /uploads would have
    put(pipeline, key, SAMPLE.read_bytes())
    assert invoke(pipeline, "splitter-upload.json") == {"batchItemFailures": []}

    # The splitter sent each chunk ahead (no task token) and started an execution whose Map put
    # the chunks on the normal queue too, each with its task token.
    sqs = pipeline.cloud.boto3_client("sqs")
    tasks: list[ChunkTask] = []
    deadline = time.monotonic() + 30
    while not any(t.task_token for t in tasks):
        assert time.monotonic() < deadline, "the Map sent no chunk"
        received = sqs.receive_message(
            QueueUrl=pipeline.cloud.stack.ref("ChunkQueueNormal"),
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
        ).get("Messages", [])
        tasks += [ChunkTask.model_validate_json(m["Body"]) for m in received]
    real = next(t for t in tasks if t.task_token)
    assert real.job_id == job_id and any(t.task_token is None for t in tasks)
    view = jobs.get(job_id)
    assert view is not None and view.job.status is JobStatus.TRANSCRIBING
    assert len(view.chunks) >= 2

    # The sample worker event is a valid chunk message; give it this execution's live token.
    event = load("worker-chunk.json")
    ChunkTask.model_validate(body_of(event))
    event["Records"][0]["body"] = real.model_dump_json()
    assert invoke(pipeline, "worker-chunk.json", event) == {"batchItemFailures": []}
    view = jobs.get(real.job_id)
    assert view is not None
    assert next(c for c in view.chunks if c.index == real.chunk.index).state is ChunkState.DONE
    assert pipeline.speech.stats()["by_status"].get("200") == 1


def test_merge_event_assembles_a_partial_transcript(
    pipeline: LocalPipeline, jobs: PostgresJobRepository
) -> None:
    event = load("merge-results.json")
    task = MergeTask.model_validate(body_of(event))
    add_job(jobs, task.job_id, chunks=2)
    refs = [
        ChunkRef(
            index=i,
            key=keys.chunk_audio(task.job_id, i),
            start_ms=i * 9000,
            end_ms=(i + 1) * 9000,
            pcm_sha256=f"{i:064x}",
        )
        for i in range(2)
    ]
    manifest = Manifest(
        execution=ExecutionInput(job_id=task.job_id, language="en", queue_url="q", chunks=refs),
        duration_s=18.0,
        chunks_total=2,
        chunks_silent=0,
        split_seconds=0.1,
    )
    put(pipeline, keys.manifest(task.job_id), manifest.model_dump_json().encode())
    done = ChunkTranscript(index=0, start_ms=0, end_ms=9000, text="The weather was calm.")
    put(pipeline, keys.chunk_result(task.job_id, 0), done.model_dump_json().encode())

    # The file's token is a placeholder: the handler records the job and drops the answer.
    assert invoke(pipeline, "merge-results.json") == {"batchItemFailures": []}
    view = jobs.get(task.job_id)
    assert view is not None and view.job.status is JobStatus.PARTIAL
    assert view.job.failure_reason == "1 chunk(s) failed: 1"
    assert "HTTP 400" in (view.chunks[1].error or "")


def test_scheduled_warmer_event_reports_what_it_warmed(pipeline: LocalPipeline) -> None:
    report = invoke(pipeline, "cache-warmer-schedule.json")
    assert set(report) == {"candidates", "warmed", "purged"}
    assert all(isinstance(n, int) and n >= 0 for n in report.values())


def test_job_failure_event_fails_the_job(
    pipeline: LocalPipeline, jobs: PostgresJobRepository
) -> None:
    notice = JobFailureNotice.model_validate(body_of(load("merge-job-failure.json")))
    add_job(jobs, notice.job_id, chunks=1)
    assert invoke(pipeline, "merge-job-failure.json") == {"batchItemFailures": []}
    view = jobs.get(notice.job_id)
    assert view is not None and view.job.status is JobStatus.FAILED
    assert "States.Timeout" in (view.job.failure_reason or "")


def test_a_job_end_is_queued_by_the_merge_and_delivered_by_the_webhook_function(
    pipeline: LocalPipeline, jobs: PostgresJobRepository
) -> None:
    receiver = WebhookReceiver()
    event = load("merge-job-failure.json")
    notice = JobFailureNotice.model_validate(body_of(event))
    job_id = notice.job_id.replace("0042", "0043")  # not the other failure test's job
    event["Records"][0]["body"] = notice.model_copy(update={"job_id": job_id}).model_dump_json()
    add_job(jobs, job_id, chunks=1, webhook_url=receiver.url)
    try:
        invoke(pipeline, "merge-job-failure.json", event)
        assert receiver.received == []  # the merge only queues it

        sqs = pipeline.cloud.boto3_client("sqs")
        queued = sqs.receive_message(
            QueueUrl=pipeline.cloud.stack.ref("WebhookQueue"), WaitTimeSeconds=1
        )["Messages"]
        assert [JobEndNotice.model_validate_json(m["Body"]) for m in queued] == [
            JobEndNotice(job_id=job_id, run=1, status=JobStatus.FAILED)
        ]
        delivery = load("webhook-job-ended.json")
        delivery["Records"][0]["body"] = queued[0]["Body"]
        assert invoke(pipeline, "webhook-job-ended.json", delivery) == {"batchItemFailures": []}
    finally:
        receiver.close()

    ((headers, body),) = receiver.received
    signing_key = pipeline.cloud.boto3_client("secretsmanager").get_secret_value(
        SecretId=pipeline.cloud.stack.ref("WebhookSigningSecret")
    )["SecretString"]
    # The job's tenant had no key: its first delivery made one, derived from the stack's key.
    tenants = TenantWebhookSecrets(PostgresWebhookKeys(jobs.pool), lambda: signing_key)
    assert tenants.describe("default") is not None
    delivered = Webhook(tenants.secret("default", 1)).verify(body, headers)
    assert headers["webhook-id"] == f"{job_id}:1:FAILED"
    assert delivered["status"] == "FAILED"


def test_scheduled_reconciler_resumes_a_stored_split_and_ends_a_lost_one(
    pipeline: LocalPipeline, jobs: PostgresJobRepository
) -> None:
    resumable, lost = "5ca1ab1e" * 4, "dead10cc" * 4
    add_job(jobs, resumable, chunks=0)
    add_job(jobs, lost, chunks=0)
    chunk = ChunkRef(
        index=0, key=keys.chunk_audio(resumable, 0), start_ms=0, end_ms=9000, pcm_sha256="c" * 64
    )
    manifest = Manifest(
        execution=ExecutionInput(
            job_id=resumable,
            language="en",
            queue_url=pipeline.cloud.stack.ref("ChunkQueueLow"),
            chunks=[chunk],
        ),
        duration_s=9.0,
        chunks_total=1,
        chunks_silent=0,
        split_seconds=0.1,
    )
    put(pipeline, keys.manifest(resumable), manifest.model_dump_json().encode())
    # As an older splitter left it: TRANSCRIBING claimed, its execution never started.
    jobs.set_status(resumable, JobStatus.TRANSCRIBING)
    jobs.set_status(lost, JobStatus.SPLITTING)  # and no delivery of its upload for hours
    with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE jobs SET updated_at = now() - interval '10 minutes' WHERE job_id = %s",
            (resumable,),
        )
        conn.execute(
            "UPDATE jobs SET updated_at = now() - interval '3 hours' WHERE job_id = %s", (lost,)
        )

    report = invoke(pipeline, "reconciler-schedule.json")

    assert resumable in report["resumed"] and lost in report["ended"]
    sfn = pipeline.cloud.boto3_client("stepfunctions")
    arn = stack_execution_arn(pipeline, resumable)
    assert sfn.describe_execution(executionArn=arn)["status"] in ("RUNNING", "SUCCEEDED", "FAILED")
    view = jobs.get(lost)
    assert view is not None and view.job.status is JobStatus.FAILED
    assert "could not be split" in (view.job.failure_reason or "")
    again = invoke(pipeline, "reconciler-schedule.json")  # nothing left to repair
    assert resumable not in again["resumed"] and lost not in again["ended"]


def stack_execution_arn(pipeline: LocalPipeline, job_id: str) -> str:
    machine = pipeline.cloud.stack.outputs["StateMachineArn"]
    return execution_arn(machine, execution_name(job_id))
