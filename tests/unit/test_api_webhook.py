"""The completion webhook against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sttpipe_testing.fakes import InMemoryJobRepository, InMemoryObjectStore, InMemoryWorkflow

from sttpipe.adapters.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookNotifier,
    sign,
    verify_signature,
)
from sttpipe.domain.models import Job, JobFailureNotice, JobStatus, TaskError
from sttpipe.services.merging import MergeService

SECRET = "whsec-test"


class Receiver:
    """Answers each POST with the next scripted status and keeps what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append((dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    found = Receiver(list(getattr(request, "param", [])))
    yield found
    found.server.shutdown()


def job(url: str | None, status: JobStatus = JobStatus.COMPLETED) -> Job:
    now = datetime.now(UTC)
    return Job(
        job_id="a" * 32,
        tenant_id="acme",
        filename="talk.flac",
        upload_key="uploads/x/talk.flac",
        status=status,
        created_at=now,
        updated_at=now,
        stats={"chunks": 3},
        webhook_url=url,
    )


def notifier(attempts: int = 4) -> WebhookNotifier:
    return WebhookNotifier(lambda: SECRET, max_attempts=attempts, initial_backoff_s=0.01)


def test_signature_verifies_only_the_same_body_secret_and_a_recent_time() -> None:
    body = b'{"a":1}'
    signature = sign(SECRET, 1_000_000, body)
    assert verify_signature(SECRET, "1000000", body, signature, now=1_000_010)
    assert not verify_signature(SECRET, "1000000", b'{"a":2}', signature, now=1_000_010)
    assert not verify_signature("other", "1000000", body, signature, now=1_000_010)
    assert not verify_signature(SECRET, "1000001", body, signature, now=1_000_010)
    assert not verify_signature(SECRET, "1000000", body, signature, now=1_000_000 + 301)
    assert not verify_signature(SECRET, "soon", body, signature)


@pytest.mark.parametrize("receiver", [[503, 429]], indirect=True)
def test_delivery_is_signed_and_retried_through_429_and_5xx(receiver: Receiver) -> None:
    notifier().job_finished(job(receiver.url))
    assert len(receiver.received) == 3
    headers, body = receiver.received[-1]
    assert verify_signature(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert headers[DELIVERY_HEADER] == f"{'a' * 32}:COMPLETED"
    sent = json.loads(body)
    assert sent["type"] == "job.finished" and sent["status"] == "COMPLETED"
    assert sent["stats"] == {"chunks": 3} and sent["status_url"] == f"/jobs/{'a' * 32}"


@pytest.mark.parametrize("receiver", [[400, 200]], indirect=True)
def test_a_4xx_is_not_retried_and_never_raises(receiver: Receiver) -> None:
    notifier().job_finished(job(receiver.url))
    assert len(receiver.received) == 1


@pytest.mark.parametrize("receiver", [[500] * 5], indirect=True)
def test_gives_up_after_the_last_attempt(receiver: Receiver) -> None:
    notifier(attempts=3).job_finished(job(receiver.url))
    assert len(receiver.received) == 3


def test_the_merge_calls_the_webhook_when_the_job_ends(receiver: Receiver) -> None:
    jobs = InMemoryJobRepository()
    jobs.add(job(receiver.url, JobStatus.TRANSCRIBING))
    service = MergeService(InMemoryObjectStore(), jobs, InMemoryWorkflow(), notifier=notifier())
    service.record_failure(
        JobFailureNotice(job_id="a" * 32, error=TaskError(Error="States.Timeout"))
    )
    (headers, body), *_ = receiver.received
    sent = json.loads(body)
    assert sent["status"] == "FAILED" and "States.Timeout" in sent["failure_reason"]
    assert verify_signature(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
