"""The per-job completion webhook: a JSON POST in the Standard Webhooks format, retried with
backoff, each attempt within a total deadline.

Headers `webhook-id` (one per delivery, the same on each of its retries), `webhook-timestamp`
and `webhook-signature` (`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, one per
secret the tenant's receiver may hold, space-separated), so a receiver rejects forged and
replayed deliveries with any Standard Webhooks library:
`standardwebhooks.Webhook(secret).verify(body, headers)`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import httpx
from aws_lambda_powertools import Logger
from standardwebhooks import Webhook
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from sttpipe.domain.models import Job
from sttpipe.ports import WebhookNotDelivered

logger = Logger(child=True)

EVENT_TYPE: Final = "job.finished"
SCHEMA_VERSION: Final = "1"


def signed_headers(
    secrets: Sequence[str], delivery_id: str, body: bytes, sent: datetime
) -> dict[str, str]:
    """Standard Webhooks headers for `body`, signed by each of `secrets` (`whsec_...`)."""
    text = body.decode()
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(sent.timestamp())),
        "webhook-signature": " ".join(Webhook(s).sign(delivery_id, sent, text) for s in secrets),
    }


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


# host, port -> the addresses the name resolves to (socket.getaddrinfo's, by default).
Resolver = Callable[[str, int], list[str]]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeWebhookTarget(Exception):
    """The webhook's host is, or resolves to, an address that is not public."""


def _system_resolver(host: str, port: int) -> list[str]:
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in found})


def _public(address: str) -> bool:
    """Global unicast, in whatever form: IPv4 inside IPv6 (mapped, 6to4, NAT64, Teredo) is
    judged as the IPv4 address it carries."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    carried: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF))
        carried += [e for e in embedded if e is not None]
    return all(a.is_global and not a.is_multicast for a in carried)


def public_address(host: str, port: int, resolver: Resolver = _system_resolver) -> str:
    """The address to connect to for `host`: checked now, at delivery, so that a name that
    later resolves inside (or any spelling of an inside address) is refused, and the connection
    goes to the very address that was checked. Every address of the name must be public."""
    try:
        addresses = resolver(host, port)
    except OSError as exc:
        raise WebhookNotDelivered(
            f"cannot resolve the webhook's host ({type(exc).__name__})"
        ) from exc
    if not addresses or not all(_public(a) for a in addresses):
        raise UnsafeWebhookTarget("the webhook's host is not a public address")
    return addresses[0]


class _Refused(Exception):
    """The receiver answered 4xx (other than 408 and 429)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, WebhookNotDelivered | httpx.TransportError)


class WebhookNotifier:
    """`Notifier` over HTTPS.

    Each attempt has a total deadline, `deadline_s`, besides httpx's per-operation timeouts: a
    receiver that answers one byte at a time cannot keep a delivery open past it."""

    def __init__(
        self,
        *,
        max_attempts: int = 3,
        initial_backoff_s: float = 1.0,
        timeout_s: float = 5.0,
        deadline_s: float = 10.0,
        resolver: Resolver = _system_resolver,
        allow_private: bool = False,
    ) -> None:
        """`allow_private` lets a delivery go to any address (the local cloud's receivers are on
        127.0.0.1); the address is still resolved once and pinned."""
        self._max_attempts = max_attempts
        self._backoff = initial_backoff_s
        self._timeout_s = timeout_s
        self._deadline_s = deadline_s
        self._resolver = resolver
        self._allow_private = allow_private

    def job_finished(self, job: Job, delivery_id: str, secrets: Sequence[str]) -> None:
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
            retrying(self._deliver, job, job.webhook_url, body, delivery_id, secrets)
        except _Refused as exc:  # a 4xx: asking again would not help
            logger.warning(
                "webhook refused by its receiver",
                extra={"job_id": job.job_id, "status": exc.status},
            )
        except UnsafeWebhookTarget:  # the DNS answer is the URL owner's to choose: never retried
            logger.warning(
                "webhook target refused: not a public address", extra={"job_id": job.job_id}
            )
        except httpx.TransportError as exc:
            # The type only: messages of some transport errors spell out the URL, which often
            # carries the receiver's secret.
            raise WebhookNotDelivered(type(exc).__name__) from exc

    def _deliver(
        self, job: Job, url: str, body: bytes, delivery_id: str, secrets: Sequence[str]
    ) -> None:
        # Signed afresh per attempt, so that retries pass a receiver's timestamp window.
        headers = {
            "content-type": "application/json",
            **signed_headers(secrets, delivery_id, body, datetime.now(UTC)),
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
        target = httpx.URL(url)
        host, port = target.host, target.port or (443 if target.scheme == "https" else 80)
        if self._allow_private:
            address = self._resolver(host, port)[0]
        elif target.scheme != "https":
            raise UnsafeWebhookTarget("webhooks go over https only")
        else:
            address = public_address(host, port, self._resolver)
        # To the checked address; the name still goes in the Host header and the TLS SNI (and
        # is what the certificate is checked against).
        pinned = target.copy_with(host=address)
        request_headers = {**headers, "host": target.netloc.decode("ascii")}
        # No redirects: a 3xx to an internal address must not be followed with our signature.
        async with httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False) as client:
            async with asyncio.timeout(self._deadline_s):
                response = await client.post(
                    pinned,
                    content=body,
                    headers=request_headers,
                    extensions={"sni_hostname": host},
                )
                return response.status_code
