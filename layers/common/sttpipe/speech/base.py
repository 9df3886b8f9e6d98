"""The interface every speech backend implements, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class RelativeSegment:
    """A segment with times relative to the start of the chunk, in seconds."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Transcription:
    text: str
    segments: tuple[RelativeSegment, ...] = field(default=())
    language: str | None = None
    attempts: int = 1  # HTTP calls it took, retries included


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
