"""Telemetry keeps no secrets: a job with a webhook runs on the local cloud (moto), and every
function's captured log is searched for what only its owner may hold: the upload form's
signature, the download links' signatures and the webhook URL's query.

Traces are not captured locally (X-Ray needs its daemon); what keeps responses out of them is
POWERTOOLS_TRACER_CAPTURE_RESPONSE=false, checked in tests/unit/test_template.py.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sttpipe_testing.receiver import WebhookReceiver

from localcloud.cli import SAMPLE
from localcloud.pipeline import LocalPipeline

pytestmark = pytest.mark.e2e

WEBHOOK_SECRET_QUERY = "token=whk-7f3a9c1e5b"


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    with LocalPipeline(emulator="moto", engine="none") as running:
        yield running


def test_no_signature_link_or_webhook_secret_reaches_the_logs(
    pipeline: LocalPipeline, tmp_path: Path
) -> None:
    receiver = WebhookReceiver()
    hook = f"{receiver.url}?{WEBHOOK_SECRET_QUERY}"
    api = httpx.Client(
        base_url=pipeline.api_url, headers={"Authorization": f"Bearer {pipeline.token()}"}
    )
    body = SAMPLE.read_bytes()
    created = api.post(
        "/uploads",
        json={
            "filename": "talk.flac",
            "content_type": "audio/flac",
            "size_bytes": len(body),
            "language": "en",
            "webhook_url": hook,
            "sha256": hashlib.sha256(body).hexdigest(),
        },
    )
    assert created.status_code == 201, created.text
    ticket = created.json()
    form = ticket["upload"]
    sent = httpx.post(
        form["url"], data=form["fields"], files={"file": ("talk.flac", body, "audio/flac")}
    )
    assert sent.status_code in (200, 204), sent.text
    deadline = time.monotonic() + 120
    while (job := api.get(f"/jobs/{ticket['job_id']}").json())["status"] not in (
        "COMPLETED",
        "PARTIAL",
        "FAILED",
    ):
        assert time.monotonic() < deadline, job["status"]
        time.sleep(0.5)
    assert job["status"] == "COMPLETED", job["failure_reason"]
    assert receiver.arrived.wait(60), "the webhook was never delivered"
    receiver.close()

    secrets = {"the form's signature": form["fields"]["x-amz-signature"]}
    for fmt, link in job["downloads"].items():
        signature = parse_qs(urlsplit(link).query)["X-Amz-Signature"][0]
        secrets[f"the {fmt} link's signature"] = signature
    secrets["the webhook's query"] = WEBHOOK_SECRET_QUERY
    # The tenant's first webhook: its signing secret is in this answer, and nowhere else.
    assert ticket["webhook_secret"].startswith("whsec_")
    secrets["the tenant's webhook secret"] = ticket["webhook_secret"].removeprefix("whsec_")
    logs = {p.name: p.read_text(errors="replace") for p in pipeline.cloud.log_dir.glob("*.log")}
    # What is searched is what the functions logged about this very job.
    for name in ("ApiFunction.log", "MergeFunction.log", "WebhookFunction.log"):
        assert ticket["job_id"] in logs[name], name
    leaks = [
        f"{what} in {name}"
        for what, secret in secrets.items()
        for name, text in logs.items()
        if secret in text
    ]
    assert leaks == []
