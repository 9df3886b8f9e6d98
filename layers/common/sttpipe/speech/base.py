"""The speech API's port: the interface every speech backend implements, the errors it raises,
and the priority its callers hand down to the fleet limit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

# A backend answers with this domain value.
from sttpipe.domain.transcripts import Transcription


class Transcriber(Protocol):
    def transcribe(
        self,
        audio: bytes,
        filename: str,
        *,
        language: str | None,
        prompt: str | None = None,
        remaining_s: float | None = None,
    ) -> Transcription:
        """Transcribe one chunk. `remaining_s` bounds the whole call, retries included (e.g. the
        Lambda's remaining time less a margin); None means only the attempt limit applies."""
        ...


class SpeechError(Exception):
    """Base of every speech API failure. `retryable` tells whether trying later can help."""

    retryable = False

    def __init__(self, message: str = "", *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code  # the HTTP status, when there was a response
        self.attempts = 1  # HTTP calls made before giving up, retries included


class TransientSpeechError(SpeechError):
    """429, 5xx, timeouts, connection errors: worth trying again later."""

    retryable = True

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        # The API's Retry-After, so a caller can delay its own redelivery accordingly.
        self.retry_after_s = retry_after_s


class SpeechBackPressure(TransientSpeechError):
    """The API was not called at all (circuit open, no fleet slot free): come back after
    `retry_after_s` without counting this as a failed attempt of the chunk."""

    def __init__(self, message: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.attempts = 0  # no HTTP call was made


class PermanentSpeechError(SpeechError):
    """Any other 4xx: the request itself is wrong and trying again cannot help."""


class AuthenticationError(PermanentSpeechError):
    """401/403: the API key is missing or wrong."""


class PayloadTooLargeError(PermanentSpeechError):
    """413: the chunk is over the API's size limit."""


# The priority of the chunk being transcribed (0 high, 1 normal, 2 low) and its job's tenant:
# waiters for a fleet slot are served in priority order, then by their tenant's share of the
# slots. Context variables, because the Transcriber interface is about the audio, not the job;
# the worker handler sets them per message.
_priority: ContextVar[int] = ContextVar("speech_priority", default=1)
_tenant: ContextVar[str] = ContextVar("speech_tenant", default="")


@contextmanager
def priority_scope(rank: int, tenant: str = "") -> Iterator[None]:
    """Speech calls in the block wait for a fleet slot with this priority rank (0 first), on
    behalf of `tenant`."""
    tokens = _priority.set(rank), _tenant.set(tenant)
    try:
        yield
    finally:
        _priority.reset(tokens[0])
        _tenant.reset(tokens[1])


def current_priority() -> int:
    """The rank set by the innermost priority_scope (1, normal, outside any)."""
    return _priority.get()


def current_tenant() -> str:
    """The tenant set by the innermost priority_scope ("" outside any)."""
    return _tenant.get()
