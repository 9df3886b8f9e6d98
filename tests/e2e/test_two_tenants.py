"""Two tenants on the local cloud (moto): their own tokens through the local API gateway, the
real functions, PostgreSQL and Redis. Both transcribe the same recording; neither reads,
changes or signs for the other, and the page shows each tenant its own jobs only. The speech
server's engine recognises nothing: this module checks who sees what, not what is heard.

tests/unit/test_two_tenants.py takes every route through A's jobs in each state; here the
routes on a job run through the gateway with B's real token.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from sttpipe_testing.receiver import WebhookReceiver

from localcloud.cli import SAMPLE
from localcloud.pipeline import LocalPipeline
from tests.unit.test_two_tenants import api_routes

pytestmark = pytest.mark.e2e

RECORDING = SAMPLE.read_bytes()
UPLOAD = {
    "filename": "talk.flac",
    "content_type": "audio/flac",
    "size_bytes": len(RECORDING),
    "language": "en",
}
FINAL = ("COMPLETED", "PARTIAL", "FAILED")


@dataclass
class Tenant:
    name: str
    token: str
    api: httpx.Client
    receiver: WebhookReceiver

    def create(self, **fields: Any) -> dict[str, Any]:
        created = self.api.post("/uploads", json={**UPLOAD, **fields})
        assert created.status_code == 201, created.text
        ticket: dict[str, Any] = created.json()
        return ticket

    def transcribe(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The recording, as `stt` sends it (its hash first); the ticket and the ended job."""
        ticket = self.create(
            sha256=hashlib.sha256(RECORDING).hexdigest(), webhook_url=self.receiver.url
        )
        if form := ticket["upload"]:
            files = {"file": ("talk.flac", RECORDING, "audio/flac")}
            sent = httpx.post(form["url"], data=form["fields"], files=files)
            assert sent.status_code in (200, 204), sent.text
        deadline = time.monotonic() + 180
        while (job := self.job(ticket["job_id"]))["status"] not in FINAL:
            assert time.monotonic() < deadline, job["status"]
            time.sleep(0.5)
        return ticket, job

    def job(self, job_id: str) -> dict[str, Any]:
        answer = self.api.get(f"/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def listed(self) -> set[str]:
        return {j["job_id"] for j in self.api.get("/jobs", params={"limit": 100}).json()["jobs"]}


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    with LocalPipeline(emulator="moto", engine="none") as running:
        yield running


@pytest.fixture(scope="module")
def tenants(pipeline: LocalPipeline) -> Iterator[tuple[Tenant, Tenant]]:
    """A and B: neither may choose priority high (their tokens have no group)."""
    made = []
    for name in ("acme", "globex"):
        token = pipeline.token(name, priority=False)
        api = httpx.Client(
            base_url=pipeline.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        made.append(Tenant(name, token, api, WebhookReceiver()))
    yield made[0], made[1]
    for tenant in made:
        tenant.api.close()
        tenant.receiver.close()


def test_two_tenants_transcribe_one_recording_and_cross_nothing(
    pipeline: LocalPipeline, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    a_ticket, a_job = a.transcribe()
    assert a_job["status"] == "COMPLETED", a_job["failure_reason"]
    assert a_job["stats"]["speech_api_calls"] >= 1

    # B, with its own token, on A's job: every route on a job answers as for no job at all.
    job_id = a_ticket["job_id"]
    for route in sorted(r for r in api_routes() if "{job_id}" in r):
        method, path = route.split(" ", 1)
        for target in (job_id, "f" * 32):
            answer = b.api.request(method, path.format(job_id=target))
            assert answer.status_code == 404, (route, answer.text)
            assert answer.json() == {"statusCode": 404, "message": f"job {target} not found"}
    after = a.job(job_id)
    assert {**after, "downloads": set(after["downloads"])} == {
        **a_job,
        "downloads": set(a_job["downloads"]),
    }

    # B has the same recording: knowing its hash gets B a form, not A's transcript, and B's
    # upload is transcribed for B (each tenant's cache entries are its own).
    b_ticket, b_job = b.transcribe()
    assert b_ticket["upload"] is not None
    assert b_job["status"] == "COMPLETED", b_job["failure_reason"]
    assert "upload_cache_hit" not in b_job["stats"]
    assert not any(b_job["stats"]["cache_hits"].values())
    assert b_job["stats"]["speech_api_calls"] >= 1

    # Lists show the caller's jobs; links are the owner's, to its own job's transcripts.
    jobs = {a.name: a_job, b.name: b_job}
    assert (a.listed(), b.listed()) == ({job_id}, {b_job["job_id"]})
    for job in jobs.values():
        assert all(f"/transcripts/{job['job_id']}/" in url for url in job["downloads"].values())

    # Each delivery verifies with its own tenant's secret only.
    secrets = {a.name: a_ticket["webhook_secret"], b.name: b_ticket["webhook_secret"]}
    assert None not in secrets.values() and len(set(secrets.values())) == 2
    for tenant, other in ((a, b), (b, a)):
        assert tenant.receiver.arrived.wait(60), f"{tenant.name}'s webhook never came"
        ((headers, body),) = tenant.receiver.received
        delivered = Webhook(secrets[tenant.name]).verify(body, headers)
        assert delivered["job_id"] == jobs[tenant.name]["job_id"]
        with pytest.raises(WebhookVerificationError):
            Webhook(secrets[other.name]).verify(body, headers)

    # Neither token carries the right to priority high.
    refused = b.api.post("/uploads", json={**UPLOAD, "priority": "high"})
    assert refused.status_code == 403 and "priority" in refused.json()["message"]


def test_the_page_shows_each_tenant_its_own_jobs_only(
    pipeline: LocalPipeline, tenants: tuple[Tenant, Tenant], tmp_path: Path
) -> None:
    # Here, not at the top: without Chromium test_web skips its module, and would skip this one.
    from tests.e2e.test_web import chromium_page

    mine = {t.name: t.create()["job_id"] for t in tenants}
    for tenant, other in (tenants, tenants[::-1]):
        with chromium_page(tmp_path / tenant.name) as page:
            page.goto(f"{pipeline.api_url}/web/#token={tenant.token}")
            page.wait_for_selector(f"#jobs tr[data-job-id='{mine[tenant.name]}']")
            shown = set(
                page.eval_on_selector_all("#jobs tr.job", "rs => rs.map(r => r.dataset.jobId)")
            )
            assert shown == tenant.listed() and mine[tenant.name] in shown
            assert mine[other.name] not in shown and not shown & other.listed()
