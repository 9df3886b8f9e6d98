"""The API function's handler on API Gateway v2 events, with the job service on moto (in
process) for S3 and SQS and the in-memory job repository."""

from __future__ import annotations

import base64
import importlib.util
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws
from sttpipe_testing.fakes import (
    InMemoryJobRepository,
    InMemoryMessageQueues,
    InMemoryWebhookKeys,
    InMemoryWorkflow,
    started_run,
)

from sttpipe.adapters.s3 import S3ObjectStore
from sttpipe.adapters.sqs import SqsQueueStats
from sttpipe.adapters.stepfunctions import execution_name
from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import (
    ChunkProgress,
    ChunkRef,
    ChunkState,
    ExecutionInput,
    Job,
    JobStatus,
    JobView,
    Manifest,
)
from sttpipe.services.jobs import JobService, estimate_seconds_left
from sttpipe.services.manifests import start_split
from sttpipe.services.webhook_keys import TenantWebhookSecrets
from sttpipe.services.webhooks import JobEndAnnouncer

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "api-test-bucket"
CONTEXT = SimpleNamespace(
    function_name="ApiFunction",
    memory_limit_in_mb=256,
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:ApiFunction",
    aws_request_id="req-1",
)


def load_api() -> ModuleType:
    spec = importlib.util.spec_from_file_location("api_app", ROOT / "functions/api/app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    with mock_aws():
        s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs")
        urls = {p: sqs.create_queue(QueueName=f"q-{p}")["QueueUrl"] for p in ("high", "low")}
        settings = Settings(
            bucket=BUCKET,
            queue_url_high=urls["high"],
            queue_url_low=urls["low"],
            max_upload_bytes=10_000,
            upload_url_expiry_s=300,
        )
        store = S3ObjectStore(BUCKET, s3)
        jobs = InMemoryJobRepository()
        workflow = InMemoryWorkflow()
        service = JobService(
            store,
            jobs,
            settings,
            queues=SqsQueueStats(sqs),
            announcer=JobEndAnnouncer(InMemoryMessageQueues(), "https://sqs/webhooks"),
            webhook_secrets=TenantWebhookSecrets(InMemoryWebhookKeys(), lambda: "signing key"),
            workflow=workflow,
        )
        module = load_api()
        monkeypatch.setattr(module, "job_service", lambda: service)
        yield SimpleNamespace(
            module=module,
            jobs=jobs,
            store=store,
            s3=s3,
            sqs=sqs,
            urls=urls,
            service=service,
            workflow=workflow,
        )


def event(
    method: str,
    path: str,
    *,
    tenant: str | None = "acme",
    body: Any = None,
    query: str = "",
    groups: str | None = None,
) -> dict[str, Any]:
    template = json.loads((ROOT / "events/api-get-job.json").read_text())
    template.pop("pathParameters", None)
    template["routeKey"] = template["requestContext"]["routeKey"] = f"{method} {path}"
    template["rawPath"] = template["requestContext"]["http"]["path"] = path
    template["requestContext"]["http"]["method"] = method
    template["rawQueryString"] = query
    if query:
        template["queryStringParameters"] = dict(p.split("=", 1) for p in query.split("&"))
    if body is not None:
        template["body"] = json.dumps(body)
    if tenant is None:
        del template["requestContext"]["authorizer"]
    else:
        claims = template["requestContext"]["authorizer"]["jwt"]["claims"]
        claims["custom:tenant_id"] = tenant
        if groups is not None:
            claims["cognito:groups"] = groups  # API Gateway passes a list claim as "[a b]"
    return template


def call(api: SimpleNamespace, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    result = api.module.handler(event(*args, **kwargs), CONTEXT)
    return result["statusCode"], json.loads(result["body"]) if result.get("body") else None


UPLOAD = {"filename": "talk.flac", "content_type": "audio/flac", "size_bytes": 1234}


def test_upload_form_is_bound_to_the_jobs_key_type_size_and_a_short_expiry(
    api: SimpleNamespace,
) -> None:
    status, ticket = call(
        api, "POST", "/uploads", body={**UPLOAD, "priority": "high"}, groups="[priority]"
    )
    assert status == 201
    fields = ticket["upload"]["fields"]
    assert fields["key"] == f"uploads/{ticket['job_id']}/talk.flac"
    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions = policy["conditions"]
    assert {"key": fields["key"]} in conditions
    assert {"Content-Type": "audio/flac"} in conditions
    assert ["content-length-range", 1, 10_000] in conditions
    expiry = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(0) < expiry - datetime.now(UTC) <= timedelta(seconds=301)
    assert ticket["expires_in"] == 300
    view = api.jobs.get(ticket["job_id"])
    assert view.job.tenant_id == "acme" and view.job.priority == "high"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({**UPLOAD, "content_type": "text/html"}, 422, "unsupported content type 'text/html'"),
        ({**UPLOAD, "size_bytes": 10_001}, 400, "over the limit of 10000 bytes"),
        ({**UPLOAD, "size_bytes": 0}, 422, "greater than 0"),
        ({**UPLOAD, "language": "English"}, 422, "language"),
        ({**UPLOAD, "priority": "urgent"}, 422, "priority"),
        ({"content_type": "audio/flac", "size_bytes": 5}, 422, "filename"),
        ({**UPLOAD, "webhook_url": "http://example.com/h"}, 400, "must be an https:// URL"),
        ({**UPLOAD, "webhook_url": "https://169.254.169.254/x"}, 400, "public host"),
    ],
)
def test_malformed_uploads_get_a_precise_4xx(
    api: SimpleNamespace, body: dict[str, Any], status: int, needle: str
) -> None:
    got, answer = call(api, "POST", "/uploads", body=body)
    assert got == status
    assert needle in json.dumps(answer)


def test_tenants_never_see_or_touch_each_others_jobs(api: SimpleNamespace) -> None:
    _, ticket = call(api, "POST", "/uploads", body=UPLOAD, tenant="acme")
    job = f"/jobs/{ticket['job_id']}"
    assert call(api, "GET", job, tenant="acme")[0] == 200
    assert call(api, "GET", job, tenant="globex") == (
        404,
        {"statusCode": 404, "message": f"job {ticket['job_id']} not found"},
    )
    assert call(api, "DELETE", job, tenant="globex")[0] == 404
    assert call(api, "GET", "/jobs", tenant="globex")[1]["jobs"] == []
    assert [j["job_id"] for j in call(api, "GET", "/jobs", tenant="acme")[1]["jobs"]] == [
        ticket["job_id"]
    ]
    assert api.jobs.get(ticket["job_id"]) is not None


def test_no_tenant_in_the_claims_is_401(api: SimpleNamespace) -> None:
    assert call(api, "GET", "/jobs", tenant=None)[0] == 401


def test_bad_job_ids_and_paging_parameters_are_422(api: SimpleNamespace) -> None:
    assert call(api, "GET", "/jobs/not-a-job")[0] == 422
    assert call(api, "GET", "/jobs", query="limit=0")[0] == 422
    assert call(api, "GET", "/jobs", query="limit=101")[0] == 422


def test_job_list_pages_newest_first(api: SimpleNamespace) -> None:
    made = [call(api, "POST", "/uploads", body=UPLOAD)[1]["job_id"] for _ in range(3)]
    _, first = call(api, "GET", "/jobs", query="limit=2")
    _, second = call(api, "GET", "/jobs", query=f"limit=2&before={first['next']}")
    listed = [j["job_id"] for j in first["jobs"] + second["jobs"]]
    assert sorted(listed) == sorted(made) and len(set(listed)) == 3
    assert second["next"] is None


def test_delete_removes_objects_and_rows_but_not_a_running_job(api: SimpleNamespace) -> None:
    _, ticket = call(api, "POST", "/uploads", body=UPLOAD)
    job_id = ticket["job_id"]
    for key in (
        keys.upload(job_id, "talk.flac"),
        keys.chunk_audio(job_id, 0),
        keys.transcript(job_id, "txt"),
    ):
        api.store.put_bytes(key, b"x", "application/octet-stream")
    api.store.put_bytes(f"uploads/{job_id}x/other", b"y", "text/plain")  # another job's prefix

    api.jobs.set_status(job_id, JobStatus.TRANSCRIBING)
    api.workflow.start(job_id, "{}")
    status, answer = call(api, "DELETE", f"/jobs/{job_id}")
    assert status == 409 and "TRANSCRIBING" in answer["message"]

    api.jobs.finish(job_id, JobStatus.COMPLETED, stats={})
    assert call(api, "DELETE", f"/jobs/{job_id}") == (
        200,
        {"objects_deleted": 3, "cache_entries_deleted": 0},
    )
    assert call(api, "GET", f"/jobs/{job_id}")[0] == 404
    remaining = api.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    assert [o["Key"] for o in remaining] == [f"uploads/{job_id}x/other"]


def test_delete_works_on_a_job_that_claims_to_run_while_nothing_does(
    api: SimpleNamespace,
) -> None:
    _, ticket = call(api, "POST", "/uploads", body=UPLOAD)
    job_id = ticket["job_id"]
    api.jobs.set_status(job_id, JobStatus.TRANSCRIBING)
    api.workflow.start(job_id, "{}")
    api.workflow.end_execution(job_id, status="FAILED")  # and its failure notice was lost

    assert call(api, "DELETE", f"/jobs/{job_id}")[0] == 200
    assert call(api, "GET", f"/jobs/{job_id}")[0] == 404


def test_delete_forgets_the_jobs_cache_entries(api: SimpleNamespace) -> None:
    forgotten: list[tuple[str, list[str]]] = []

    class RecordingCache:  # the cache service is not built yet: a stand-in that records calls
        def forget(self, scope: str, hashes: list[str]) -> int:
            forgotten.append((scope, list(hashes)))
            return len(hashes)

    api.service._cache = RecordingCache()
    _, ticket = call(api, "POST", "/uploads", body=UPLOAD)
    job_id = ticket["job_id"]
    chunk = ChunkRef(index=0, key="k", start_ms=0, end_ms=1000, pcm_sha256="a" * 64)
    manifest = Manifest(
        execution=ExecutionInput(job_id=job_id, language=None, queue_url="q", chunks=[chunk]),
        duration_s=1.0,
        chunks_total=1,
        chunks_silent=0,
        split_seconds=0.1,
        upload_sha256="b" * 64,
    )
    api.store.put_bytes(keys.manifest(job_id), manifest.model_dump_json().encode(), "x/json")
    assert call(api, "DELETE", f"/jobs/{job_id}")[1]["cache_entries_deleted"] == 2
    assert forgotten == [("acme", ["a" * 64, "b" * 64])]


def test_delete_forgets_the_cache_entries_after_the_manifest_expired(api: SimpleNamespace) -> None:
    class FlakyCache:
        """A cache level that is down on the first delete."""

        def __init__(self) -> None:
            self.down = True
            self.forgotten: list[str] = []

        def forget(self, scope: str, hashes: list[str]) -> int:
            if self.down:
                self.down = False
                raise ConnectionError("Redis unreachable")
            self.forgotten += hashes
            return len(hashes)

    cache = FlakyCache()
    api.service._cache = cache
    _, ticket = call(api, "POST", "/uploads", body=UPLOAD)
    job_id = ticket["job_id"]
    # What the splitter kept with the job's rows; the manifest is gone (lifecycle: 7 days).
    api.jobs.remember_content(job_id, ["a" * 64, "b" * 64])
    api.jobs.finish(job_id, JobStatus.COMPLETED, stats={})
    api.store.put_bytes(keys.transcript(job_id, "txt"), b"x", "text/plain")

    with pytest.raises(ConnectionError):  # the API answers 500; nothing is gone yet
        api.service.delete(job_id, "acme")
    assert api.store.size(keys.transcript(job_id, "txt")) == 1

    assert call(api, "DELETE", f"/jobs/{job_id}") == (
        200,
        {"objects_deleted": 1, "cache_entries_deleted": 2},
    )
    assert cache.forgotten == ["a" * 64, "b" * 64]


def _split_done(api: SimpleNamespace, job_id: str) -> None:
    """What the splitter does when a split is stored: start_split."""
    refs = [ChunkRef(index=0, key="k", start_ms=0, end_ms=1, pcm_sha256="a" * 64)]
    manifest = Manifest(
        execution=ExecutionInput(job_id=job_id, language="en", queue_url="q", chunks=refs),
        duration_s=1.0,
        chunks_total=1,
        chunks_silent=0,
        split_seconds=0.1,
    )
    start_split(api.store, api.jobs, api.workflow, manifest)


def _split(api: SimpleNamespace, job_id: str, failed: list[int]) -> None:
    """The job was split into three chunks, and ended PARTIAL with `failed` failed."""
    refs = [
        ChunkRef(
            index=i, key=keys.chunk_audio(job_id, i), start_ms=i, end_ms=i + 1, pcm_sha256="a" * 64
        )
        for i in range(3)
    ]
    manifest = Manifest(
        execution=ExecutionInput(job_id=job_id, language=None, queue_url="q", chunks=refs),
        duration_s=3.0,
        chunks_total=3,
        chunks_silent=0,
        split_seconds=0.1,
    )
    api.store.put_bytes(keys.manifest(job_id), manifest.model_dump_json().encode(), "x/json")
    api.jobs.add_chunks(
        job_id,
        [
            ChunkProgress(
                index=i,
                start_ms=i,
                end_ms=i + 1,
                state=ChunkState.FAILED if i in failed else ChunkState.DONE,
                error="HTTP 500" if i in failed else None,
            )
            for i in range(3)
        ],
    )
    api.jobs.finish(job_id, JobStatus.PARTIAL, stats={}, reason="some chunk(s) failed")


def test_rerun_transcribes_the_failed_chunks_again_once(api: SimpleNamespace) -> None:
    _, ticket = call(
        api, "POST", "/uploads", body={**UPLOAD, "priority": "high"}, groups="[priority]"
    )
    job_id = ticket["job_id"]
    _split(api, job_id, failed=[1])

    status, view = call(api, "POST", f"/jobs/{job_id}/rerun")

    assert status == 202
    assert (view["status"], view["runs"], view["failure_reason"]) == ("TRANSCRIBING", 2, None)
    assert [c["state"] for c in view["chunks"]] == ["DONE", "PENDING", "DONE"]
    ((arn, body),) = api.workflow.executions.items()
    assert arn.endswith(":" + execution_name(job_id, 2))
    execution = started_run(api.store, body)
    assert [c.index for c in execution.chunks] == [1]
    assert execution.queue_url == api.urls["high"]

    status, answer = call(api, "POST", f"/jobs/{job_id}/rerun")  # it is running now
    assert status == 409 and "TRANSCRIBING" in answer["message"]
    assert len(api.workflow.executions) == 1


def test_rerun_of_another_tenants_job_is_404(api: SimpleNamespace) -> None:
    _, ticket = call(api, "POST", "/uploads", body=UPLOAD, tenant="acme")
    _split(api, ticket["job_id"], failed=[0])
    assert call(api, "POST", f"/jobs/{ticket['job_id']}/rerun", tenant="globex") == (
        404,
        {"statusCode": 404, "message": f"job {ticket['job_id']} not found"},
    )
    assert api.workflow.executions == {}


def test_rerun_of_a_completed_or_rejected_job_is_409_saying_why(api: SimpleNamespace) -> None:
    _, done = call(api, "POST", "/uploads", body=UPLOAD)
    _split(api, done["job_id"], failed=[])
    api.jobs.finish(done["job_id"], JobStatus.COMPLETED, stats={})
    status, answer = call(api, "POST", f"/jobs/{done['job_id']}/rerun")
    assert (status, answer["message"]) == (
        409,
        f"job {done['job_id']} is COMPLETED: nothing to re-run",
    )

    _, rejected = call(api, "POST", "/uploads", body=UPLOAD)
    api.jobs.finish(rejected["job_id"], JobStatus.FAILED, stats={}, reason="no audio stream")
    status, answer = call(api, "POST", f"/jobs/{rejected['job_id']}/rerun")
    assert (status, answer["message"]) == (
        409,
        "the upload was rejected: no audio stream; upload it again",
    )
    assert api.workflow.executions == {}


def test_cancel_stops_a_running_job_and_ends_it_failed_once(api: SimpleNamespace) -> None:
    _, running = call(api, "POST", "/uploads", body=UPLOAD)
    job_id = running["job_id"]
    api.jobs.set_status(job_id, JobStatus.TRANSCRIBING)
    api.workflow.start(job_id, "{}", run=1)

    assert call(api, "POST", f"/jobs/{job_id}/cancel", tenant="globex")[0] == 404
    status, answer = call(api, "POST", f"/jobs/{job_id}/cancel")
    assert (status, answer["status"]) == (200, "FAILED")
    assert answer["failure_reason"] == "cancelled by its owner"
    assert api.workflow.execution_status(job_id, 1) == "ABORTED"  # no more chunks are called
    status, answer = call(api, "POST", f"/jobs/{job_id}/cancel")
    assert (status, answer["message"]) == (409, f"job {job_id} is FAILED: nothing to cancel")


def test_a_job_cancelled_while_it_is_split_never_starts(api: SimpleNamespace) -> None:
    _, splitting = call(api, "POST", "/uploads", body=UPLOAD)
    job_id = splitting["job_id"]
    api.jobs.set_status(job_id, JobStatus.SPLITTING)
    assert call(api, "POST", f"/jobs/{job_id}/cancel")[0] == 200
    _split_done(api, job_id)  # the splitter ends its split after the cancel
    assert api.workflow.executions == {}
    view = api.jobs.get(job_id)
    assert view is not None and view.job.status is JobStatus.FAILED


def test_the_webhook_secret_is_the_tenants_own_and_shown_only_when_made(
    api: SimpleNamespace,
) -> None:
    hooked = {**UPLOAD, "webhook_url": "https://hooks.example.com/stt"}
    assert call(api, "GET", "/webhook-secret")[0] == 404
    assert call(api, "POST", "/uploads", body=UPLOAD)[1]["webhook_secret"] is None
    status, first = call(api, "POST", "/uploads", body=hooked)
    assert status == 201 and first["webhook_secret"].startswith("whsec_")
    assert call(api, "POST", "/uploads", body=hooked)[1]["webhook_secret"] is None
    status, described = call(api, "GET", "/webhook-secret")
    assert status == 200 and described["generation"] == 1
    assert first["webhook_secret"] not in json.dumps(described)

    status, rotated = call(api, "POST", "/webhook-secret")
    assert status == 201 and rotated["generation"] == 2
    assert rotated["secret"] not in (first["webhook_secret"], None)
    assert rotated["previous_valid_until"] is not None
    status, other = call(api, "POST", "/webhook-secret", tenant="globex")
    assert (status, other["generation"]) == (201, 1)
    assert other["secret"] not in (first["webhook_secret"], rotated["secret"])


def test_high_priority_is_a_right_the_token_grants(api: SimpleNamespace) -> None:
    high = {**UPLOAD, "priority": "high"}
    for groups in (None, "[readers]"):
        status, answer = call(api, "POST", "/uploads", body=high, groups=groups)
        assert status == 403 and "priority" in answer["message"]
    for groups in ("[readers priority]", "[operators]"):
        assert call(api, "POST", "/uploads", body=high, groups=groups)[0] == 201
    assert call(api, "POST", "/uploads", body={**UPLOAD, "priority": "low"})[0] == 201


def test_an_access_token_without_a_tenant_claim_gets_no_tenant_of_its_own(
    api: SimpleNamespace,
) -> None:
    # A Cognito access token carries `sub` but no custom attributes: the user is not a tenant.
    access = event("GET", "/jobs")
    claims = access["requestContext"]["authorizer"]["jwt"]["claims"]
    del claims["custom:tenant_id"]
    claims["token_use"] = "access"
    result = api.module.handler(access, CONTEXT)
    assert result["statusCode"] == 401
    assert "tenant" in json.loads(result["body"])["message"]


@pytest.mark.parametrize("route", ["/stats/queues", "/stats/cache"])
def test_only_operators_see_the_fleets_statistics(api: SimpleNamespace, route: str) -> None:
    for groups in (None, "[readers]"):
        status, answer = call(api, "GET", route, groups=groups)
        assert status == 403 and "operators" in answer["message"]


def test_queue_depths_by_priority_come_from_sqs(api: SimpleNamespace) -> None:
    for _ in range(2):
        api.sqs.send_message(QueueUrl=api.urls["high"], MessageBody="{}")
    status, depths = call(api, "GET", "/stats/queues", groups="[operators]")
    assert status == 200
    assert depths["high"]["visible"] == 2 and depths["low"]["visible"] == 0
    assert "normal" not in depths  # not configured here


def test_cache_endpoints_say_when_there_is_no_cache(api: SimpleNamespace) -> None:
    operator = "[readers operators]"
    status, answer = call(api, "GET", "/stats/cache", groups=operator)
    assert status == 501 and "cache is not configured" in answer["message"]
    assert call(api, "POST", "/cache/invalidations", body={}, groups=operator)[0] == 400
    status, answer = call(api, "POST", "/cache/invalidations", body={"model": "m"}, groups=operator)
    assert status == 501 and "cache is not configured" in answer["message"]


def test_only_operators_may_invalidate_the_fleets_cache(api: SimpleNamespace) -> None:
    for groups in (None, "[readers]", "[operatorsx]"):
        status, answer = call(
            api, "POST", "/cache/invalidations", body={"model": "m"}, groups=groups
        )
        assert status == 403 and "operators" in answer["message"]


def test_committed_openapi_document_is_up_to_date(api: SimpleNamespace) -> None:
    status, served = call(api, "GET", "/openapi.json", tenant=None)
    assert status == 200
    committed = (ROOT / "docs/openapi.json").read_text()
    assert committed == api.module.openapi_json(), (
        "docs/openapi.json is stale: python functions/api/app.py > docs/openapi.json"
    )
    assert served == json.loads(committed)
    assert {"/uploads", "/jobs", "/jobs/{job_id}", "/stats/queues"} <= set(served["paths"])
    assert "delete" in served["paths"]["/jobs/{job_id}"]
    assert "202" in served["paths"]["/jobs/{job_id}/rerun"]["post"]["responses"]


def _view(status: JobStatus, done: int, total: int, since_s: float, now: datetime) -> JobView:
    job = Job(
        job_id="j",
        filename="f",
        upload_key="k",
        status=status,
        created_at=now,
        updated_at=now - timedelta(seconds=since_s),
    )
    states = [ChunkState.DONE] * done + [ChunkState.PENDING] * (total - done)
    chunks = [ChunkProgress(index=i, start_ms=0, end_ms=1, state=s) for i, s in enumerate(states)]
    return JobView(job=job, chunks=chunks)


def test_time_left_follows_the_pace_of_the_chunks() -> None:
    now = datetime.now(UTC)
    assert estimate_seconds_left(_view(JobStatus.TRANSCRIBING, 2, 10, 20, now), now) == 80.0
    assert estimate_seconds_left(_view(JobStatus.TRANSCRIBING, 0, 10, 20, now), now) is None
    assert estimate_seconds_left(_view(JobStatus.SPLITTING, 0, 0, 5, now), now) is None
    assert estimate_seconds_left(_view(JobStatus.COMPLETED, 10, 10, 5, now), now) == 0.0
