"""The per-job completion webhook: a signed JSON POST, retried with backoff.

The body is signed with HMAC-SHA256 over `<timestamp>.<body>` (the Stripe/Svix scheme), the
timestamp sent beside it, so a receiver can reject both forged and replayed deliveries:
`verify_signature(secret, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any, Final

import httpx
from aws_lambda_powertools import Logger
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from sttpipe.domain.models import Job

logger = Logger(child=True)

SIGNATURE_HEADER: Final = "X-Stt-Signature"
TIMESTAMP_HEADER: Final = "X-Stt-Timestamp"
DELIVERY_HEADER: Final = "X-Stt-Delivery"
EVENT_TYPE: Final = "job.finished"
SCHEMA_VERSION: Final = "1"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


def payload(job: Job) -> dict[str, Any]:
    return {
        "type": EVENT_TYPE,
        "version": SCHEMA_VERSION,
        "job_id": job.job_id,
        "status": job.status.value,
        "filename": job.filename,
        "failure_reason": job.failure_reason,
        "stats": job.stats,
        "finished_at": job.updated_at.isoformat(),
        "status_url": f"/jobs/{job.job_id}",
    }


class _Retryable(Exception):
    """A delivery that may pass later: network error, timeout, 408, 429 or 5xx."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _Retryable | httpx.TransportError)


class WebhookNotifier:
    """`Notifier` over HTTPS. `secret` is called per delivery (a cached Secrets Manager read)."""

    def __init__(
        self,
        secret: Callable[[], str],
        *,
        client: httpx.Client | None = None,
        max_attempts: int = 4,
        initial_backoff_s: float = 1.0,
        timeout_s: float = 5.0,
    ) -> None:
        self._secret = secret
        # No redirects: a 3xx to an internal address must not be followed with our signature.
        self._http = client or httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._max_attempts = max_attempts
        self._backoff = initial_backoff_s

    def job_finished(self, job: Job) -> None:
        if not job.webhook_url:
            return
        body = json.dumps(payload(job), sort_keys=True, separators=(",", ":")).encode()
        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_random_exponential(multiplier=self._backoff, max=30 * self._backoff),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            retrying(self._deliver, job, job.webhook_url, body)
        except Exception as exc:  # the job is done either way; the owner can still poll it
            logger.warning(
                "webhook not delivered",
                extra={"job_id": job.job_id, "error": str(exc)[:300]},
            )

    def _deliver(self, job: Job, url: str, body: bytes) -> None:
        timestamp = int(time.time())  # fresh per attempt, so retries pass a receiver's window
        response = self._http.post(
            url,
            content=body,
            headers={
                "content-type": "application/json",
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(self._secret(), timestamp, body),
                DELIVERY_HEADER: f"{job.job_id}:{job.status.value}",
            },
        )
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}")
        response.raise_for_status()
        logger.info("webhook delivered", extra={"job_id": job.job_id})


def webhook_secret_source(secret_id: str | None, plain: str | None) -> Callable[[], str]:
    """Secrets Manager (cached for five minutes) when configured, else a local setting."""
    if secret_id:

        def read() -> str:
            from aws_lambda_powertools.utilities import parameters

            value = parameters.get_secret(secret_id, max_age=300)
            return value.decode() if isinstance(value, bytes) else str(value)

        return read
    if plain:
        return lambda: plain
    raise ValueError("no webhook secret: set STT_WEBHOOK_SECRET_ID (or STT_WEBHOOK_SECRET locally)")
