"""The completion webhook against real HTTP receivers on 127.0.0.1, and its path apart from
the merge (queued by the merge, delivered by the webhook function's service)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from sttpipe_testing.fakes import (
    InMemoryJobRepository,
    InMemoryMessageQueues,
    InMemoryObjectStore,
    InMemoryWebhookKeys,
    InMemoryWorkflow,
)
from sttpipe_testing.receiver import WebhookReceiver

from sttpipe.adapters.webhook import UnsafeWebhookTarget, WebhookNotifier, public_address
from sttpipe.domain.models import Job, JobEndNotice, JobFailureNotice, JobStatus, TaskError
from sttpipe.ports import WebhookNotDelivered
from sttpipe.services.merging import MergeService
from sttpipe.services.webhook_keys import TenantWebhookSecrets
from sttpipe.services.webhooks import JobEndAnnouncer, WebhookService

SECRET = "whsec_" + base64.b64encode(b"a test key of 32 bytes, no more.").decode()


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[WebhookReceiver]:
    with WebhookReceiver(getattr(request, "param", [])) as found:
        yield found


def job(
    url: str | None,
    status: JobStatus = JobStatus.COMPLETED,
    *,
    job_id: str = "a" * 32,
    tenant_id: str = "acme",
) -> Job:
    now = datetime.now(UTC)
    return Job(
        job_id=job_id,
        tenant_id=tenant_id,
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
        max_attempts=attempts,
        initial_backoff_s=0.01,
        deadline_s=deadline_s,
        allow_private=True,
    )


DELIVERY = f"{'a' * 32}:1:COMPLETED"


@pytest.mark.parametrize("receiver", [[503, 429]], indirect=True)
def test_delivery_is_signed_as_standard_webhooks_and_retried_through_429_and_5xx(
    receiver: WebhookReceiver,
) -> None:
    notifier().job_finished(job(receiver.url), DELIVERY, [SECRET])
    assert len(receiver.received) == 3
    headers, body = receiver.received[-1]
    assert Webhook(SECRET).verify(body, headers)["job_id"] == "a" * 32
    assert headers["webhook-id"] == DELIVERY
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"COMPLETED", b"FAILED"), headers)
    sent = json.loads(body)
    assert sent["type"] == "job.finished" and sent["status"] == "COMPLETED"
    assert sent["stats"] == {"chunks": 3} and sent["status_url"] == f"/jobs/{'a' * 32}"


@pytest.mark.parametrize("receiver", [[400, 200]], indirect=True)
def test_a_4xx_is_not_retried_and_never_raises(receiver: WebhookReceiver) -> None:
    notifier().job_finished(job(receiver.url), DELIVERY, [SECRET])
    assert len(receiver.received) == 1


@pytest.mark.parametrize("receiver", [[500] * 5], indirect=True)
def test_the_last_failed_attempt_raises_for_the_queue_to_try_again(
    receiver: WebhookReceiver,
) -> None:
    with pytest.raises(WebhookNotDelivered, match="HTTP 500"):
        notifier(attempts=3).job_finished(job(receiver.url), DELIVERY, [SECRET])
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
            notifier(attempts=1, deadline_s=1.0).job_finished(job(drip.url), DELIVERY, [SECRET])
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
    service = WebhookService(
        jobs, notifier(attempts=1), secrets(InMemoryWebhookKeys()).signing_secrets
    )
    notice = JobEndNotice(job_id="a" * 32, run=1, status=JobStatus.PARTIAL)

    with pytest.raises(WebhookNotDelivered):  # the 503: SQS delivers the notice again
        service.deliver(notice)
    assert service.deliver(notice)
    headers, body = receiver.received[-1]
    assert headers["webhook-id"] == f"{'a' * 32}:1:PARTIAL"
    assert json.loads(body)["failure_reason"] == "1 chunk(s) failed: 2"

    assert jobs.reopen("a" * 32) == 2  # re-run since: run 1's notice is old news
    assert not service.deliver(notice)
    jobs.delete("a" * 32)
    assert not service.deliver(notice)
    assert len(receiver.received) == 2


def secrets(keys: InMemoryWebhookKeys, **kwargs: Any) -> TenantWebhookSecrets:
    return TenantWebhookSecrets(keys, lambda: "the deployment's signing key", **kwargs)


def test_each_tenants_deliveries_verify_with_its_own_secret_only(
    receiver: WebhookReceiver,
) -> None:
    """A tenant's receiver knows its own secret: with it, it can forge nothing for another."""
    jobs, keys = InMemoryJobRepository(), InMemoryWebhookKeys()
    tenants = TenantWebhookSecrets(keys, lambda: "the deployment's signing key")
    shown = {t: tenants.first_use(t) for t in ("acme", "globex")}
    for n, tenant in enumerate(shown):
        jobs.add(job(receiver.url, job_id=f"{n}" * 32, tenant_id=tenant))
    service = WebhookService(jobs, notifier(), tenants.signing_secrets)
    for n in range(2):
        assert service.deliver(JobEndNotice(job_id=f"{n}" * 32, run=1, status=JobStatus.COMPLETED))

    (acme_headers, acme_body), (globex_headers, globex_body) = receiver.received
    acme, globex = (Webhook(issued.secret) for issued in shown.values() if issued)
    assert acme.verify(acme_body, acme_headers)["job_id"] == "0" * 32
    assert globex.verify(globex_body, globex_headers)["job_id"] == "1" * 32
    with pytest.raises(WebhookVerificationError):
        acme.verify(globex_body, globex_headers)
    with pytest.raises(WebhookVerificationError):
        globex.verify(acme_body, acme_headers)
    assert tenants.first_use("acme") is None  # shown once, when it was made


def test_after_a_rotation_both_secrets_verify_for_the_grace_period_then_only_the_new(
    receiver: WebhookReceiver,
) -> None:
    now = [datetime.now(UTC)]
    keys = InMemoryWebhookKeys()
    tenants = secrets(keys, grace=timedelta(hours=1), clock=lambda: now[0])
    old = tenants.first_use("acme")
    new = tenants.rotate("acme")
    assert old is not None and new.generation == 2 and new.secret != old.secret
    assert new.previous_valid_until == new.rotated_at + timedelta(hours=1)
    jobs = InMemoryJobRepository()
    jobs.add(job(receiver.url))
    service = WebhookService(jobs, notifier(), tenants.signing_secrets)
    notice = JobEndNotice(job_id="a" * 32, run=1, status=JobStatus.COMPLETED)

    service.deliver(notice)
    now[0] += timedelta(hours=2)
    service.deliver(notice)
    (within, within_body), (after, after_body) = receiver.received
    for secret in (old.secret, new.secret):
        Webhook(secret).verify(within_body, within)
    Webhook(new.secret).verify(after_body, after)
    with pytest.raises(WebhookVerificationError):
        Webhook(old.secret).verify(after_body, after)


def test_a_tenant_without_a_key_gets_one_at_its_first_delivery(
    receiver: WebhookReceiver,
) -> None:
    """Jobs made before keys existed: delivered signed; the tenant rotates to learn the secret."""
    keys, jobs = InMemoryWebhookKeys(), InMemoryJobRepository()
    jobs.add(job(receiver.url))
    tenants = secrets(keys)
    WebhookService(jobs, notifier(), tenants.signing_secrets).deliver(
        JobEndNotice(job_id="a" * 32, run=1, status=JobStatus.COMPLETED)
    )
    ((headers, body),) = receiver.received
    Webhook(tenants.secret("acme", 1)).verify(body, headers)
    assert keys.current("acme") is not None


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
    strict = WebhookNotifier(initial_backoff_s=0.01, resolver=lambda host, port: [resolved])
    try:
        # Refused and dropped, never retried: the URL and its DNS answers are its owner's.
        strict.job_finished(
            job(f"{scheme}://hooks.example.com:{listener.port}/x"), DELIVERY, [SECRET]
        )
    finally:
        listener.sock.close()
    assert listener.accepted == 0


def test_delivery_connects_to_the_checked_address_with_the_names_host_header(
    receiver: WebhookReceiver,
) -> None:
    port = receiver.port
    pinned = WebhookNotifier(
        resolver=lambda host, p: ["127.0.0.1"],
        allow_private=True,  # the local cloud's receiver is on 127.0.0.1
    )
    pinned.job_finished(
        job(f"http://hooks.example.com:{port}/hook?token=s3cret"), DELIVERY, [SECRET]
    )
    ((headers, _),) = receiver.received
    assert {k.lower(): v for k, v in headers.items()}["host"] == f"hooks.example.com:{port}"
