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
        self, audio: bytes, filename: str, *, language: str | None, prompt: str | None = None
    ) -> Transcription: ...


class SpeechError(Exception):
    """Base of every speech API failure. `retryable` tells whether trying later can help."""

    retryable = False


class TransientSpeechError(SpeechError):
    """429, 5xx, timeouts, connection errors: worth trying again later."""

    retryable = True


class PermanentSpeechError(SpeechError):
    """Any other 4xx: the request itself is wrong and trying again cannot help."""


class AuthenticationError(PermanentSpeechError):
    """401/403: the API key is missing or wrong."""


class PayloadTooLargeError(PermanentSpeechError):
    """413: the chunk is over the API's size limit."""
