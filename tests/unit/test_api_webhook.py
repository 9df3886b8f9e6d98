"""The completion webhook against real HTTP receivers on 127.0.0.1, and its path apart from
the merge (queued by the merge, delivered by the webhook function's service)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sttpipe_testing.fakes import (
    InMemoryJobRepository,
    InMemoryMessageQueues,
    InMemoryObjectStore,
    InMemoryWorkflow,
)
from sttpipe_testing.receiver import WebhookReceiver

from sttpipe.adapters.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    UnsafeWebhookTarget,
    WebhookNotifier,
    public_address,
    sign,
    verify_signature,
)
from sttpipe.domain.models import Job, JobEndNotice, JobFailureNotice, JobStatus, TaskError
from sttpipe.ports import WebhookNotDelivered
from sttpipe.services.merging import MergeService
from sttpipe.services.webhooks import JobEndAnnouncer, WebhookService

SECRET = "whsec-test"


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[WebhookReceiver]:
    with WebhookReceiver(getattr(request, "param", [])) as found:
        yield found


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


def notifier(attempts: int = 4, deadline_s: float = 10.0) -> WebhookNotifier:
    """A notifier as the local cloud has it: its receivers are on 127.0.0.1 (http)."""
    return WebhookNotifier(
        lambda: SECRET,
        max_attempts=attempts,
        initial_backoff_s=0.01,
        deadline_s=deadline_s,
        allow_private=True,
    )


DELIVERY = f"{'a' * 32}:1:COMPLETED"


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
def test_delivery_is_signed_and_retried_through_429_and_5xx(receiver: WebhookReceiver) -> None:
    notifier().job_finished(job(receiver.url), DELIVERY)
    assert len(receiver.received) == 3
    headers, body = receiver.received[-1]
    assert verify_signature(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert headers[DELIVERY_HEADER] == DELIVERY
    sent = json.loads(body)
    assert sent["type"] == "job.finished" and sent["status"] == "COMPLETED"
    assert sent["stats"] == {"chunks": 3} and sent["status_url"] == f"/jobs/{'a' * 32}"


@pytest.mark.parametrize("receiver", [[400, 200]], indirect=True)
def test_a_4xx_is_not_retried_and_never_raises(receiver: WebhookReceiver) -> None:
    notifier().job_finished(job(receiver.url), DELIVERY)
    assert len(receiver.received) == 1


@pytest.mark.parametrize("receiver", [[500] * 5], indirect=True)
def test_the_last_failed_attempt_raises_for_the_queue_to_try_again(
    receiver: WebhookReceiver,
) -> None:
    with pytest.raises(WebhookNotDelivered, match="HTTP 500"):
        notifier(attempts=3).job_finished(job(receiver.url), DELIVERY)
    assert len(receiver.received) == 3


class DripReceiver:
    """Answers one byte every 0.25 s: each read is well within any timeout, the whole is not."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-padding: " + b"." * 60
                try:
                    for byte in answer:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.25)
                except OSError:
                    pass  # the client gave up and closed the connection

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_an_attempt_ends_at_its_deadline_however_the_receiver_dribbles() -> None:
    drip = DripReceiver()
    started = time.monotonic()
    try:
        with pytest.raises(WebhookNotDelivered, match="no answer within 1 s"):
            notifier(attempts=1, deadline_s=1.0).job_finished(job(drip.url), DELIVERY)
    finally:
        drip.server.shutdown()
    # The answer would take 20 s; the bound is loose for a noisy machine, the point is it ends.
    assert time.monotonic() - started < 5


def test_the_merge_queues_the_webhook_after_answering_and_never_calls_it(
    receiver: WebhookReceiver,
) -> None:
    jobs = InMemoryJobRepository()
    jobs.add(job(receiver.url, JobStatus.TRANSCRIBING))
    queues = InMemoryMessageQueues()
    service = MergeService(
        InMemoryObjectStore(),
        jobs,
        InMemoryWorkflow(),
        announcer=JobEndAnnouncer(queues, "https://sqs/webhooks"),
    )
    service.record_failure(
        JobFailureNotice(job_id="a" * 32, error=TaskError(Error="States.Timeout"), run=1)
    )
    assert receiver.received == []
    (sent,) = queues.sent
    assert sent.queue_url == "https://sqs/webhooks"
    notice = JobEndNotice.model_validate_json(sent.body)
    assert (notice.run, notice.status, notice.delivery_id) == (
        1,
        JobStatus.FAILED,
        f"{'a' * 32}:1:FAILED",
    )


@pytest.mark.parametrize("receiver", [[503]], indirect=True)
def test_the_webhook_function_delivers_the_current_run_only(receiver: WebhookReceiver) -> None:
    jobs = InMemoryJobRepository()
    jobs.add(job(receiver.url, JobStatus.TRANSCRIBING))
    jobs.finish("a" * 32, JobStatus.PARTIAL, stats={"chunks": 3}, reason="1 chunk(s) failed: 2")
    service = WebhookService(jobs, notifier(attempts=1))
    notice = JobEndNotice(job_id="a" * 32, run=1, status=JobStatus.PARTIAL)

    with pytest.raises(WebhookNotDelivered):  # the 503: SQS delivers the notice again
        service.deliver(notice)
    assert service.deliver(notice)
    headers, body = receiver.received[-1]
    assert headers[DELIVERY_HEADER] == f"{'a' * 32}:1:PARTIAL"
    assert json.loads(body)["failure_reason"] == "1 chunk(s) failed: 2"

    assert jobs.reopen("a" * 32) == 2  # re-run since: run 1's notice is old news
    assert not service.deliver(notice)
    jobs.delete("a" * 32)
    assert not service.deliver(notice)
    assert len(receiver.received) == 2


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",  # the instance metadata service
        "100.64.0.1",
        "224.0.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "fc00::1",
    ],
)
def test_a_target_that_resolves_to_any_non_public_address_is_refused(address: str) -> None:
    with pytest.raises(UnsafeWebhookTarget):
        public_address(
            "hooks.example.com", 443, resolver=lambda host, port: ["93.184.215.14", address]
        )


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "localhost"])
def test_every_spelling_of_loopback_is_refused(host: str) -> None:
    with pytest.raises(UnsafeWebhookTarget):
        public_address(host, 443)  # the system's resolver reads these as 127.0.0.1


def test_a_public_target_is_pinned_to_the_address_that_was_checked() -> None:
    assert public_address("hooks.example.com", 443, resolver=lambda h, p: ["93.184.215.14"]) == (
        "93.184.215.14"
    )


class ConnectionCounter:
    """A TCP listener that counts connections and closes them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0

        def serve() -> None:
            while True:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                self.accepted += 1
                conn.close()

        threading.Thread(target=serve, daemon=True).start()


@pytest.mark.parametrize(
    ("scheme", "resolved"), [("https", "127.0.0.1"), ("http", "93.184.215.14")]
)
def test_an_inside_or_plain_http_target_is_never_connected_to(scheme: str, resolved: str) -> None:
    listener = ConnectionCounter()
    strict = WebhookNotifier(
        lambda: SECRET, initial_backoff_s=0.01, resolver=lambda host, port: [resolved]
    )
    try:
        # Refused and dropped, never retried: the URL and its DNS answers are its owner's.
        strict.job_finished(job(f"{scheme}://hooks.example.com:{listener.port}/x"), DELIVERY)
    finally:
        listener.sock.close()
    assert listener.accepted == 0


def test_delivery_connects_to_the_checked_address_with_the_names_host_header(
    receiver: WebhookReceiver,
) -> None:
    port = receiver.port
    pinned = WebhookNotifier(
        lambda: SECRET,
        resolver=lambda host, p: ["127.0.0.1"],
        allow_private=True,  # the local cloud's receiver is on 127.0.0.1
    )
    pinned.job_finished(job(f"http://hooks.example.com:{port}/hook?token=s3cret"), DELIVERY)
    ((headers, _),) = receiver.received
    assert {k.lower(): v for k, v in headers.items()}["host"] == f"hooks.example.com:{port}"
