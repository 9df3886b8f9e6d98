"""Cloud.ru foundation-models speech API (OpenAI-compatible `/audio/transcriptions`).

The HTTP client is built once per container and reused, so warm invocations skip the TCP and TLS
handshakes. Transient failures (429, 5xx, timeouts, broken connections) are retried here with
exponential backoff and full jitter, honouring Retry-After, within the caller's time budget.
"""

from __future__ import annotations

import dataclasses
import json
import math
import mimetypes
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

import certifi
import httpx
from aws_lambda_powertools import Logger
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from sttpipe.config import Settings
from sttpipe.domain.transcripts import RelativeSegment, Transcription
from sttpipe.speech.base import (
    AuthenticationError,
    PayloadTooLargeError,
    PermanentSpeechError,
    SpeechError,
    Transcriber,
    TransientSpeechError,
)

logger = Logger(child=True)

RESPONSE_FORMATS = ("json", "text", "verbose_json")
SECRET_MAX_AGE_S = 300  # a rotated key is picked up within five minutes
ERROR_TEXT_LIMIT = 300  # characters of the API's error text kept in exception messages

ApiKeySource = Callable[[], str]


class DeadlineExceededError(TransientSpeechError):
    """The caller's time budget ran out before an attempt could start."""


@lru_cache(maxsize=4)
def _cached_client(
    base_url: str, ca_bundle: str | None, connect_s: float, read_s: float
) -> httpx.Client:
    ssl_context = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle:
        # Added to the public roots, so the bundle may hold just the extra (e.g. Russian) root.
        ssl_context.load_verify_locations(cafile=ca_bundle)
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        http2=True,
        verify=ssl_context,
        timeout=httpx.Timeout(read_s, connect=connect_s),
        headers={"Accept": "application/json, text/plain"},
    )


def get_http_client(settings: Settings) -> httpx.Client:
    """The container-wide client for these settings (created on first use, then reused)."""
    return _cached_client(
        settings.speech_base_url,
        settings.speech_ca_bundle,
        settings.speech_connect_timeout_s,
        settings.speech_read_timeout_s,
    )


# What the stack's SpeechApiKeySecret holds when no key was given at deploy (template.yaml's
# SpeechApiKey parameter); a test holds the two together. Never sent: it would only be refused.
SPEECH_API_KEY_PLACEHOLDER = "placeholder: put the Cloud.ru API key here"


def api_key_source(settings: Settings) -> ApiKeySource:
    """Where the API key comes from: Secrets Manager (cached) if configured, else the setting."""
    secret_id = settings.speech_api_key_secret_id
    if secret_id:
        return lambda: _read_secret(secret_id)
    if settings.speech_api_key is not None and settings.speech_api_key.get_secret_value():
        plain = settings.speech_api_key
        return plain.get_secret_value
    raise AuthenticationError(
        "no speech API key configured: set STT_SPEECH_API_KEY_SECRET_ID "
        "(or STT_SPEECH_API_KEY for local development)"
    )


def _read_secret(secret_id: str) -> str:
    # Imported here so that importing this module does not pull in boto3.
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

    from sttpipe.adapters.secrets import read_secret

    try:
        value = read_secret(secret_id, max_age=SECRET_MAX_AGE_S)
    except GetParameterError as exc:
        raise TransientSpeechError(f"cannot read the speech API key secret {secret_id!r}") from exc
    text = value.decode() if isinstance(value, bytes) else str(value)
    if text == SPEECH_API_KEY_PLACEHOLDER:
        # As a refused key: the fleet pauses and the chunk goes back unspent, the
        # SpeechApiKeyRefused alarm fires, and the next read after the key is put in works.
        raise AuthenticationError(
            f"the speech API key secret {secret_id!r} still holds its placeholder; put the key "
            f"in: aws secretsmanager put-secret-value --secret-id {secret_id} --secret-string KEY"
        )
    # Secrets created as key/value pairs in the console arrive as JSON objects.
    if text.lstrip().startswith("{"):
        try:
            return str(json.loads(text)["api_key"])
        except (ValueError, KeyError) as exc:
            raise AuthenticationError(
                f"secret {secret_id!r} is JSON but has no 'api_key' field"
            ) from exc
    return text.strip()


class CloudRuTranscriber:
    """`Transcriber` over the Cloud.ru (or any OpenAI-compatible) transcription endpoint."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        model: str,
        api_key: ApiKeySource,
        response_format: str = "json",
        temperature: float = 0.0,
        max_attempts: int = 3,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 120.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if response_format not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be one of {RESPONSE_FORMATS}")
        self.client = client
        self._model = model
        self._api_key = api_key
        self._response_format = response_format
        self._temperature = temperature
        self._max_attempts = max(1, max_attempts)
        self._connect_s = connect_timeout_s
        self._read_s = read_timeout_s
        self._jitter = wait_random_exponential(multiplier=backoff_base_s, max=backoff_max_s)
        self._sleep = sleep

    def transcribe(
        self,
        audio: bytes,
        filename: str,
        *,
        language: str | None,
        prompt: str | None = None,
        remaining_s: float | None = None,
    ) -> Transcription:
        budget = math.inf if remaining_s is None else remaining_s
        started = time.monotonic()
        calls = 0

        def attempt() -> Transcription:
            nonlocal calls
            left = budget - (time.monotonic() - started)
            if left <= 0:
                raise DeadlineExceededError(f"no time left for a speech API call ({calls} made)")
            calls += 1
            return self._post(audio, filename, language, prompt, api_key, left)

        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts) | stop_before_delay(budget),
            wait=self._wait,
            retry=retry_if_exception_type(TransientSpeechError),
            before_sleep=_log_retry,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            api_key = self._api_key()
            result = retrying(attempt)
        except SpeechError as exc:
            exc.attempts = calls
            raise
        return dataclasses.replace(result, attempts=calls)

    def _wait(self, state: RetryCallState) -> float:
        jitter = float(self._jitter(state))
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after_s", None)
        return max(jitter, retry_after) if retry_after is not None else jitter

    def _post(
        self,
        audio: bytes,
        filename: str,
        language: str | None,
        prompt: str | None,
        api_key: str,
        left_s: float,
    ) -> Transcription:
        data: dict[str, str] = {
            "model": self._model,
            "response_format": self._response_format,
            "temperature": str(self._temperature),
        }
        if language:
            data["language"] = language
        if prompt:
            data["prompt"] = prompt
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        # Each attempt gets the configured timeouts, cut down to what is left of the budget.
        timeout = httpx.Timeout(min(self._read_s, left_s), connect=min(self._connect_s, left_s))
        try:
            response = self.client.post(
                "/audio/transcriptions",
                data=data,
                files={"file": (filename, audio, content_type)},
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=timeout,
            )
        except httpx.TimeoutException as exc:
            raise TransientSpeechError(f"speech API timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            if _caused_by(exc, ssl.SSLCertVerificationError):
                raise PermanentSpeechError(
                    "speech API certificate not trusted; set STT_SPEECH_CA_BUNDLE to a CA bundle"
                ) from exc
            raise TransientSpeechError(f"speech API unreachable: {exc!r}") from exc
        if response.status_code != httpx.codes.OK:
            raise error_for(response)
        return self._parse(response)

    def _parse(self, response: httpx.Response) -> Transcription:
        if self._response_format == "text":
            return Transcription(text=response.text.strip())
        try:
            body = response.json()
            text = str(body["text"]).strip()
            segments = tuple(
                RelativeSegment(float(s["start"]), float(s["end"]), str(s["text"]).strip())
                for s in body.get("segments") or ()
            )
        except (ValueError, KeyError, TypeError) as exc:
            # A 200 with a body we cannot read points at a proxy or a glitch, not at our request.
            raise TransientSpeechError(
                f"unreadable speech API response: {_truncate(response.text)}"
            ) from exc
        return Transcription(text=text, segments=segments, language=body.get("language"))


def error_for(response: httpx.Response) -> SpeechError:
    """The `SpeechError` a non-200 answer stands for."""
    status = response.status_code
    message = f"speech API answered {status}: {api_error_text(response)}"
    if status == 429 or status >= 500:
        return TransientSpeechError(
            message, status_code=status, retry_after_s=retry_after_s(response)
        )
    if status in (401, 403):
        return AuthenticationError(message, status_code=status)
    if status == 413:
        return PayloadTooLargeError(message, status_code=status)
    return PermanentSpeechError(message, status_code=status)


def api_error_text(response: httpx.Response) -> str:
    """The error message out of an OpenAI-style (`{"error": {...}}`) or vLLM-style body."""
    try:
        body: Any = response.json()
    except ValueError:
        return _truncate(response.text)
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and "message" in inner:
            return _truncate(str(inner["message"]))
        for key in ("message", "detail", "error"):
            if key in body:
                return _truncate(str(body[key]))
    return _truncate(response.text)


def retry_after_s(response: httpx.Response) -> float | None:
    """Retry-After in seconds (it may be a number of seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def build_transcriber(settings: Settings) -> Transcriber:
    """The production transcriber for these settings, on the container-wide HTTP client."""
    return CloudRuTranscriber(
        get_http_client(settings),
        model=settings.speech_model,
        api_key=api_key_source(settings),
        response_format=settings.speech_response_format,
        max_attempts=settings.speech_max_attempts,
        connect_timeout_s=settings.speech_connect_timeout_s,
        read_timeout_s=settings.speech_read_timeout_s,
    )


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    logger.warning(
        "speech API attempt %d failed (%s); retrying in %.2f s",
        state.attempt_number,
        exc,
        state.upcoming_sleep,
        extra={
            "attempt": state.attempt_number,
            "error": str(exc),
            "retry_in_s": round(state.upcoming_sleep, 3),
        },
    )


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 1] + "…"
