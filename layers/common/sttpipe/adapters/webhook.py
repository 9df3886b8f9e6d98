"""The per-job completion webhook: a signed JSON POST, retried with backoff, each attempt
within a total deadline.

The body is signed with HMAC-SHA256 over `<timestamp>.<body>` (the Stripe/Svix scheme), the
timestamp sent beside it, so a receiver can reject both forged and replayed deliveries:
`verify_signature(secret, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])`.
"""

from __future__ import annotations

import asyncio
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
from sttpipe.ports import WebhookNotDelivered

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


class _Refused(Exception):
    """The receiver answered 4xx (other than 408 and 429)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, WebhookNotDelivered | httpx.TransportError)


class WebhookNotifier:
    """`Notifier` over HTTPS. `secret` is called per delivery (a cached Secrets Manager read).

    Each attempt has a total deadline, `deadline_s`, besides httpx's per-operation timeouts: a
    receiver that answers one byte at a time cannot keep a delivery open past it."""

    def __init__(
        self,
        secret: Callable[[], str],
        *,
        max_attempts: int = 3,
        initial_backoff_s: float = 1.0,
        timeout_s: float = 5.0,
        deadline_s: float = 10.0,
    ) -> None:
        self._secret = secret
        self._max_attempts = max_attempts
        self._backoff = initial_backoff_s
        self._timeout_s = timeout_s
        self._deadline_s = deadline_s

    def job_finished(self, job: Job, delivery_id: str) -> None:
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
            retrying(self._deliver, job, job.webhook_url, body, delivery_id)
        except _Refused as exc:  # a 4xx: asking again would not help
            logger.warning(
                "webhook refused by its receiver",
                extra={"job_id": job.job_id, "status": exc.status},
            )
        except httpx.TransportError as exc:
            # The type only: messages of some transport errors spell out the URL, which often
            # carries the receiver's secret.
            raise WebhookNotDelivered(type(exc).__name__) from exc

    def _deliver(self, job: Job, url: str, body: bytes, delivery_id: str) -> None:
        timestamp = int(time.time())  # fresh per attempt, so retries pass a receiver's window
        headers = {
            "content-type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self._secret(), timestamp, body),
            DELIVERY_HEADER: delivery_id,
        }
        try:
            status = asyncio.run(self._post(url, body, headers))
        except TimeoutError as exc:
            raise WebhookNotDelivered(f"no answer within {self._deadline_s:g} s") from exc
        if status in (408, 429) or status >= 500:
            raise WebhookNotDelivered(f"HTTP {status}")
        if status >= 400:
            raise _Refused(status)
        logger.info("webhook delivered", extra={"job_id": job.job_id, "delivery": delivery_id})

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        # No redirects: a 3xx to an internal address must not be followed with our signature.
        async with httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False) as client:
            async with asyncio.timeout(self._deadline_s):
                response = await client.post(url, content=body, headers=headers)
                return response.status_code


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
