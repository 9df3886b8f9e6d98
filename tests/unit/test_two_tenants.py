"""Two tenants on the HTTP API: tenant B calls every route of the API (the template's and the
OpenAPI document's: a new route fails here until it has a case below) on tenant A's jobs, secret
and cache entries. B's answers name nothing of A's (another tenant's job answers exactly as a
job that does not exist), and nothing of A's changes. The API handler on moto (in process) for
S3 and SQS, the in-memory job repository, workflow and webhook keys, and the real cache on its
in-memory level (tests/unit/test_api.py's fixture).

The rest of the boundary is covered where it is built, and not repeated here:
- webhooks: A's deliveries verify with A's secret only, never B's
  (tests/unit/test_api_webhook.py::test_each_tenants_deliveries_verify_with_its_own_secret_only);
- priorities: `high` only with the token's group (tests/unit/test_api.py::
  test_high_priority_is_a_right_the_token_grants), a flooding tenant holds no more than its share
  of the speech slots (tests/integration/test_speech_limits_redis.py) and its chunks go in its
  own SQS fair-queue group (tests/unit/test_adapters_sqs.py);
- the cache: B's upload or chunk of A's very audio is transcribed again unless the stack shares
  entries across tenants (tests/unit/test_upload_cache.py::
  test_another_language_or_tenant_transcribes_again, tests/unit/test_cache.py,
  tests/unit/test_worker_service.py::test_another_language_or_tenant_is_another_computation);
- A's upload form writes its one key only: S3 enforces it (LocalStack, tests/integration/
  test_upload_policy_localstack.py::test_s3_refuses_the_form_for_any_other_key); an object
  under a missing or deleted job's prefix is never adopted (tests/unit/test_splitter_service.py);
- both tenants' tokens through the local gateway, the same recording transcribed for each,
  their webhooks delivered and the page showing each its own jobs: tests/e2e/test_two_tenants.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from sttpipe_testing.fakes import InMemoryMessageQueues, InMemoryWebhookKeys

from localcloud.cloud import DEFAULT_TEMPLATE
from localcloud.template import load_template_document
from sttpipe.adapters.sqs import SqsQueueStats
from sttpipe.cache import TieredCache, TieredTranscriptCache
from sttpipe.cache.memory import MemoryCache
from sttpipe.cache.transcripts import CacheAdministration
from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import JobStatus, Segment
from sttpipe.domain.transcripts import CachedUpload, Transcript
from sttpipe.services.jobs import JobService
from sttpipe.services.webhook_keys import TenantWebhookSecrets
from sttpipe.services.webhooks import JobEndAnnouncer
from tests.unit.test_api import (
    BUCKET,
    ROOT,
    UPLOAD,
    _split,
    api,  # noqa: F401 (its fixture)
    call,
)

A, B = "acme", "globex"
A_RECORDING = b"A's recording"
A_TEXT = "the board meets on friday"
UNKNOWN_JOB = "f" * 32


def api_routes() -> set[str]:
    """Every route the API serves: API Gateway's (the template's events of the API function,
    the public ones included) and the OpenAPI document's (the app's own, kept equal to it by
    tests/unit/test_api.py)."""
    resources = load_template_document(DEFAULT_TEMPLATE)["Resources"]
    events = resources["ApiFunction"]["Properties"]["Events"].values()
    routes = {f"{e['Properties']['Method']} {e['Properties']['Path']}" for e in events}
    paths = json.loads((ROOT / "docs/openapi.json").read_text())["paths"]
    return routes | {f"{m.upper()} {p}" for p, methods in paths.items() for m in methods}


@pytest.fixture(params=[False, True], ids=["own-cache", "shared-cache"])
def world(
    request: pytest.FixtureRequest,
    api: SimpleNamespace,  # noqa: F811 (test_api.py's fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> SimpleNamespace:
    """A has a job in each state a job route acts on, a webhook secret and a transcribed
    recording in the cache; the stack keeps cache entries per tenant, or shares them."""
    settings = Settings(
        bucket=BUCKET,
        queue_url_high=api.urls["high"],
        queue_url_low=api.urls["low"],
        max_upload_bytes=10_000,
        upload_url_expiry_s=300,
        default_language="en",
        cache_share_across_tenants=request.param,
    )
    cache = TieredTranscriptCache(
        TieredCache(l1=MemoryCache(1 << 20, ttl_s=600)),
        namespace="unit",
        model=settings.speech_model,
        response_format=settings.speech_response_format,
        share_across_tenants=request.param,
    )
    webhook_keys = InMemoryWebhookKeys()
    service = JobService(
        api.store,
        api.jobs,
        settings,
        queues=SqsQueueStats(api.sqs),
        cache=CacheAdministration(cache),
        announcer=JobEndAnnouncer(InMemoryMessageQueues(), "https://sqs/webhooks"),
        webhook_secrets=TenantWebhookSecrets(webhook_keys, lambda: "signing key"),
        workflow=api.workflow,
        known=cache,
    )
    monkeypatch.setattr(api.module, "job_service", lambda: service)

    def upload(**fields: Any) -> dict[str, Any]:
        status, ticket = call(api, "POST", "/uploads", body={**UPLOAD, **fields}, tenant=A)
        assert status == 201
        return dict(ticket)

    hooked = upload(webhook_url="https://hooks.example.com/acme")  # makes A's secret
    jobs = {
        "waiting": hooked["job_id"],
        "running": upload()["job_id"],
        "partial": upload()["job_id"],
        "completed": upload()["job_id"],
    }
    api.jobs.set_status(jobs["running"], JobStatus.TRANSCRIBING)
    api.workflow.start(jobs["running"], "{}")
    _split(api, jobs["partial"], failed=[1])
    # A's recording, transcribed: in the cache (as the merge keeps it) and in the bucket.
    transcript = Transcript(segments=[Segment(start_ms=0, end_ms=900, text=A_TEXT, chunk_index=0)])
    cache.store_upload(
        hashlib.sha256(A_RECORDING).hexdigest(),
        CachedUpload(transcript=transcript, duration_s=0.9, chunks=1, chunks_silent=0),
        tenant=A,
        language="en",
    )
    done = jobs["completed"]
    api.store.put_bytes(keys.upload(done, "talk.flac"), A_RECORDING, "audio/flac")
    for fmt in keys.TRANSCRIPT_FORMATS:
        api.store.put_bytes(keys.transcript(done, fmt), A_TEXT.encode(), "text/plain")
    api.jobs.finish(done, JobStatus.COMPLETED, stats={})
    return SimpleNamespace(
        api=api,
        jobs=jobs,
        cache=cache,
        webhook_keys=webhook_keys,
        a_secret=hooked["webhook_secret"],
    )


def as_b(world: SimpleNamespace, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    return call(world.api, *args, tenant=B, **kwargs)


def state_of_a(world: SimpleNamespace) -> dict[str, Any]:
    """Everything of A's that B could read or change, as A and the stores see it."""
    listed = world.api.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    views = {}
    for job_id in world.jobs.values():
        status, view = call(world.api, "GET", f"/jobs/{job_id}", tenant=A)
        views[job_id] = (status, {**view, "downloads": sorted(view["downloads"])})
    return {
        "jobs": views,
        "list": call(world.api, "GET", "/jobs", tenant=A),
        "objects": sorted(
            (o["Key"], o["ETag"])
            for o in listed
            if any(job_id in o["Key"] for job_id in world.jobs.values())
        ),
        "executions": dict(world.api.workflow.statuses),
        "webhook_key": world.webhook_keys.current(A),
        "cached": world.cache.upload(
            hashlib.sha256(A_RECORDING).hexdigest(), tenant=A, language="en"
        ),
    }


def not_found_as_if_absent(world: SimpleNamespace, method: str, path: str) -> None:
    """B's call on each of A's jobs answers exactly what a job that does not exist answers."""
    absent = as_b(world, method, path.format(job_id=UNKNOWN_JOB))
    assert absent[0] == 404
    for job_id in world.jobs.values():
        status, answer = as_b(world, method, path.format(job_id=job_id))
        assert (status, json.loads(json.dumps(answer).replace(job_id, UNKNOWN_JOB))) == absent


def b_uploads(world: SimpleNamespace) -> None:
    """B's form is for its own job's prefix, whatever the file name says; A's recording,
    named by its hash alone, is not a known recording of B's: B gets a form, not A's
    transcript (with a shared cache, B's upload of the very bytes is answered by the
    splitter: B has the recording then)."""
    status, ticket = as_b(
        world, "POST", "/uploads", body={**UPLOAD, "filename": f"../{world.jobs['waiting']}/x"}
    )
    assert status == 201
    assert ticket["upload"]["fields"]["key"].startswith(f"uploads/{ticket['job_id']}/")

    known = {**UPLOAD, "sha256": hashlib.sha256(A_RECORDING).hexdigest()}
    status, ticket = as_b(world, "POST", "/uploads", body=known)
    assert (status, ticket["status"]) == (201, "AWAITING_UPLOAD")
    assert ticket["upload"]["fields"]["key"].startswith(f"uploads/{ticket['job_id']}/")
    status, view = as_b(world, "GET", f"/jobs/{ticket['job_id']}")
    assert (status, view["status"], view["downloads"]) == (200, "AWAITING_UPLOAD", {})


def b_lists(world: SimpleNamespace) -> None:
    status, page = as_b(world, "GET", "/jobs")
    assert (status, page) == (200, {"jobs": [], "next": None})
    for job_id in world.jobs.values():  # A's job as the cursor is no job of B's
        assert as_b(world, "GET", "/jobs", query=f"before={job_id}") == (200, page)


def b_rotates_its_secret(world: SimpleNamespace) -> None:
    """B's secret is B's: a first generation of its own, unlike A's."""
    status, issued = as_b(world, "POST", "/webhook-secret")
    assert (status, issued["generation"]) == (201, 1)
    assert issued["secret"].startswith("whsec_") and issued["secret"] != world.a_secret


def b_describes_its_secret(world: SimpleNamespace) -> None:
    """A has a secret; B has none yet (see also test_api.py::
    test_the_webhook_secret_is_the_tenants_own_and_shown_only_when_made)."""
    status, answer = as_b(world, "GET", "/webhook-secret")
    assert status == 404 and A not in json.dumps(answer)


def operators_only(method: str, path: str, body: Any = None) -> Callable[[SimpleNamespace], None]:
    """The fleet's statistics and the shared cache are the operators': B is refused (with or
    without other groups; test_api.py checks which groups pass)."""

    def case(world: SimpleNamespace) -> None:
        for groups in (None, "[priority]"):
            status, answer = as_b(world, method, path, body=body, groups=groups)
            assert status == 403 and "operators" in answer["message"]

    return case


def public_document(world: SimpleNamespace) -> None:
    """The API's description is public and the same for everyone: it holds no tenant's data."""
    status, document = as_b(world, "GET", "/openapi.json")
    assert status == 200 and document == call(world.api, "GET", "/openapi.json", tenant=None)[1]
    assert not any(job_id in json.dumps(document) for job_id in world.jobs.values())


def on_a_jobs(method: str, path: str) -> Callable[[SimpleNamespace], None]:
    return lambda world: not_found_as_if_absent(world, method, path)


# What B tries on each route; every route of the API must be here.
MODEL = Settings.model_fields["speech_model"].default
CASES: dict[str, Callable[[SimpleNamespace], None]] = {
    "POST /uploads": b_uploads,
    "GET /jobs": b_lists,
    "GET /jobs/{job_id}": on_a_jobs("GET", "/jobs/{job_id}"),
    "DELETE /jobs/{job_id}": on_a_jobs("DELETE", "/jobs/{job_id}"),
    "POST /jobs/{job_id}/rerun": on_a_jobs("POST", "/jobs/{job_id}/rerun"),
    "POST /jobs/{job_id}/cancel": on_a_jobs("POST", "/jobs/{job_id}/cancel"),
    "POST /webhook-secret": b_rotates_its_secret,
    "GET /webhook-secret": b_describes_its_secret,
    "GET /stats/queues": operators_only("GET", "/stats/queues"),
    "GET /stats/cache": operators_only("GET", "/stats/cache"),
    "POST /cache/invalidations": operators_only(
        "POST",
        "/cache/invalidations",
        body={"model": MODEL},
    ),
    "GET /openapi.json": public_document,
}


def test_every_route_has_a_cross_tenant_case() -> None:
    assert set(CASES) == api_routes()


@pytest.mark.parametrize("route", sorted(api_routes()))
def test_tenant_b_on_every_route_reads_and_changes_nothing_of_tenant_a(
    world: SimpleNamespace, route: str
) -> None:
    before = state_of_a(world)
    assert before["cached"] is not None and before["webhook_key"] is not None
    CASES[route](world)
    assert state_of_a(world) == before


def test_download_links_are_for_the_owner_and_its_job_only(world: SimpleNamespace) -> None:
    """A's links name A's transcripts; no answer to B carries a link."""
    done = world.jobs["completed"]
    status, view = call(world.api, "GET", f"/jobs/{done}", tenant=A)
    assert status == 200 and set(view["downloads"]) == set(keys.TRANSCRIPT_FORMATS)
    for fmt, url in view["downloads"].items():
        assert f"/{keys.transcript(done, fmt)}?" in url
    answers = [as_b(world, "GET", "/jobs"), as_b(world, "GET", f"/jobs/{done}")]
    assert "X-Amz-Signature" not in json.dumps(answers)
