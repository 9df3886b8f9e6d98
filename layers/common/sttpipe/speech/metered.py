"""Measuring the speech API: a Transcriber decorator for latency, calls and retries per chunk,
and an httpx response hook that counts 429s (retried ones included)."""

from __future__ import annotations

import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit

from sttpipe.audio.pcm import flac_seconds
from sttpipe.domain.transcripts import Transcription
from sttpipe.observability import Metric
from sttpipe.ports import MetricRecorder
from sttpipe.speech.base import AuthenticationError, SpeechError, Transcriber
from sttpipe.speech.latency import LatencyLog

if TYPE_CHECKING:
    import httpx


def throttle_counter(record: MetricRecorder) -> Callable[[httpx.Response], None]:
    """An httpx response hook counting the speech API's 429s, retried ones included."""

    def hook(response: httpx.Response) -> None:
        if response.status_code == HTTPStatus.TOO_MANY_REQUESTS:
            record(Metric.SPEECH_API_THROTTLED, 1)

    return hook


class MeteredTranscriber:
    """Wraps the speech API client: latency per chunk (retries included), calls and retries.
    With a `latency_log`, each call that succeeded on its first attempt (a retried one says
    nothing about the API's speed) is also recorded there with its audio seconds, read from the
    FLAC it sent, for the fleet to size chunks by (sttpipe.speech.latency)."""

    def __init__(
        self, inner: Transcriber, record: MetricRecorder, latency_log: LatencyLog | None = None
    ) -> None:
        self._inner = inner
        self._record = record
        self._latency_log = latency_log

    def transcribe(
        self,
        audio: bytes,
        filename: str,
        *,
        language: str | None,
        prompt: str | None = None,
        remaining_s: float | None = None,
    ) -> Transcription:
        started = time.perf_counter()
        attempts = 1
        try:
            result = self._inner.transcribe(
                audio, filename, language=language, prompt=prompt, remaining_s=remaining_s
            )
            attempts = result.attempts
            seconds = flac_seconds(audio)
            if self._latency_log is not None and attempts == 1 and seconds is not None:
                self._latency_log.record(seconds, time.perf_counter() - started)
            return result
        except SpeechError as exc:
            attempts = exc.attempts
            if isinstance(exc, AuthenticationError):
                self._record(Metric.SPEECH_API_KEY_REFUSED, 1)
            raise
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self._record(Metric.SPEECH_API_LATENCY, elapsed_ms, MetricUnit.Milliseconds)
            self._record(Metric.SPEECH_API_CALLS, attempts)
            self._record(Metric.SPEECH_API_RETRIES, max(0, attempts - 1))
