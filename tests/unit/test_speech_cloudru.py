"""Pure parts of the Cloud.ru client: error mapping, Retry-After, the API key's source.

The client's behaviour against a live server is in tests/integration/test_speech_client.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws
from pydantic import SecretStr

from sttpipe.config import Settings
from sttpipe.speech.base import (
    AuthenticationError,
    PayloadTooLargeError,
    PermanentSpeechError,
    SpeechError,
    TransientSpeechError,
)
from sttpipe.speech.cloudru import (
    ERROR_TEXT_LIMIT,
    SPEECH_API_KEY_PLACEHOLDER,
    CloudRuTranscriber,
    DeadlineExceededError,
    api_error_text,
    api_key_source,
    error_for,
    get_http_client,
    retry_after_s,
)


def settings(**values: object) -> Settings:
    base: dict[str, object] = {"speech_api_key": None, "speech_api_key_secret_id": None}
    return Settings.model_validate(base | values)


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (429, TransientSpeechError, True),
        (500, TransientSpeechError, True),
        (502, TransientSpeechError, True),
        (503, TransientSpeechError, True),
        (401, AuthenticationError, False),
        (403, AuthenticationError, False),
        (413, PayloadTooLargeError, False),
        (400, PermanentSpeechError, False),
        (404, PermanentSpeechError, False),
        (422, PermanentSpeechError, False),
    ],
)
def test_status_codes_map_to_error_classes(
    status: int, kind: type[SpeechError], retryable: bool
) -> None:
    exc = error_for(httpx.Response(status, json={"message": "nope"}))
    assert type(exc) is kind
    assert exc.retryable is retryable
    assert exc.status_code == status
    assert str(exc) == f"speech API answered {status}: nope"


def test_error_text_from_each_body_shape_and_truncated() -> None:
    vllm = {"object": "error", "message": "Currently only support response_format `text`"}
    assert api_error_text(httpx.Response(400, json=vllm)) == vllm["message"]
    openai = {"error": {"message": "Invalid model", "type": "invalid_request_error"}}
    assert api_error_text(httpx.Response(400, json=openai)) == "Invalid model"
    assert api_error_text(httpx.Response(400, json={"detail": "bad"})) == "bad"
    assert api_error_text(httpx.Response(502, text="<html>\n Bad  Gateway</html>")) == (
        "<html> Bad Gateway</html>"
    )
    long = api_error_text(httpx.Response(400, text="x" * 5000))
    assert len(long) == ERROR_TEXT_LIMIT
    assert long.endswith("…")


def test_retry_after_in_seconds_or_as_a_date() -> None:
    def parse(value: str | None) -> float | None:
        headers = {"Retry-After": value} if value is not None else {}
        return retry_after_s(httpx.Response(429, headers=headers))

    assert parse("7") == 7.0
    assert parse("0.5") == 0.5
    assert parse("-3") == 0.0
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert parse(in_a_minute) == pytest.approx(60, abs=2)
    assert parse("soon") is None
    assert parse(None) is None
    limited = error_for(httpx.Response(429, headers={"Retry-After": "4"}))
    assert isinstance(limited, TransientSpeechError)
    assert limited.retry_after_s == 4


def test_a_missing_key_is_a_clear_error() -> None:
    with pytest.raises(AuthenticationError, match="STT_SPEECH_API_KEY_SECRET_ID"):
        api_key_source(settings())
    with pytest.raises(AuthenticationError):
        api_key_source(settings(speech_api_key=SecretStr("")))


def test_a_plain_key_is_used_when_no_secret_is_named() -> None:
    assert api_key_source(settings(speech_api_key=SecretStr("k-1")))() == "k-1"


@pytest.fixture
def secrets_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Secrets Manager emulated by moto (no AWS here)."""
    for name, value in {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("secretsmanager")


def test_key_from_secrets_manager_plain_or_json(secrets_manager: Any) -> None:
    secrets_manager.create_secret(Name="speech/plain", SecretString="sk-plain\n")
    secrets_manager.create_secret(
        Name="speech/json", SecretString=json.dumps({"api_key": "sk-json"})
    )

    # The secret wins over a plain key when both are set.
    plain = api_key_source(
        settings(speech_api_key_secret_id="speech/plain", speech_api_key=SecretStr("ignored"))
    )
    assert plain() == "sk-plain"
    assert api_key_source(settings(speech_api_key_secret_id="speech/json"))() == "sk-json"


def test_an_unreadable_secret_is_transient(secrets_manager: Any) -> None:
    with pytest.raises(TransientSpeechError, match="speech/absent"):
        api_key_source(settings(speech_api_key_secret_id="speech/absent"))()


def test_a_json_secret_without_the_key_is_an_authentication_error(secrets_manager: Any) -> None:
    secrets_manager.create_secret(Name="speech/other", SecretString='{"token": "x"}')
    with pytest.raises(AuthenticationError, match="api_key"):
        api_key_source(settings(speech_api_key_secret_id="speech/other"))()


def test_the_deploy_placeholder_is_never_sent_to_the_api(secrets_manager: Any) -> None:
    # What the stack puts in the secret when no key was given at deploy (template.yaml).
    secrets_manager.create_secret(Name="speech/new", SecretString=SPEECH_API_KEY_PLACEHOLDER)
    recorder = Recorder()  # any request would fail the test: it has no response to give
    transcriber = recorder.transcriber(
        api_key_source(settings(speech_api_key_secret_id="speech/new"))
    )
    with pytest.raises(AuthenticationError, match="put-secret-value") as refused:
        transcriber.transcribe(b"fLaC...", "chunk-0.flac", language="en")
    assert recorder.requests == [] and refused.value.attempts == 0


def test_one_http_client_per_configuration() -> None:
    one = settings(speech_base_url="https://speech.example/v1")
    assert get_http_client(one) is get_http_client(one.model_copy())
    assert get_http_client(one) is not get_http_client(settings(speech_base_url="https://x/v1"))
    assert get_http_client(one).base_url == httpx.URL("https://speech.example/v1/")


def test_unknown_response_format_is_refused() -> None:
    with pytest.raises(ValueError, match="response_format"):
        CloudRuTranscriber(httpx.Client(), model="m", api_key=lambda: "k", response_format="srt")


class Recorder:
    """A recording HTTP transport. Used where the real local server cannot help: it does not
    echo the multipart fields it received, and it never answers 200 with a broken body."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.responses.pop(0)

    def transcriber(
        self, api_key: Callable[[], str] = lambda: "sk-secret", **options: object
    ) -> CloudRuTranscriber:
        client = httpx.Client(base_url="https://api.test/v1", transport=httpx.MockTransport(self))
        return CloudRuTranscriber(
            client,
            model="openai/whisper-large-v3",
            api_key=api_key,
            **options,  # type: ignore[arg-type]
        )


def test_request_carries_the_openai_multipart_fields() -> None:
    recorder = Recorder(httpx.Response(200, json={"text": " hello "}))
    result = recorder.transcriber(temperature=0.2).transcribe(
        b"fLaC...", "chunk-7.flac", language="ru", prompt="Names: Ivan."
    )
    assert result.text == "hello"
    request = recorder.requests[0]
    assert request.url == "https://api.test/v1/audio/transcriptions"
    assert request.headers["Authorization"] == "Bearer sk-secret"
    body = request.content.decode("latin-1")
    for name, value in {
        "model": "openai/whisper-large-v3",
        "response_format": "json",
        "temperature": "0.2",
        "language": "ru",
        "prompt": "Names: Ivan.",
    }.items():
        assert f'name="{name}"\r\n\r\n{value}\r\n' in body
    assert 'name="file"; filename="chunk-7.flac"\r\nContent-Type: audio/flac' in body


def test_language_is_left_out_for_detection() -> None:
    recorder = Recorder(httpx.Response(200, text="hi"))
    recorder.transcriber(response_format="text").transcribe(b"x", "a.wav", language=None)
    body = recorder.requests[0].content.decode("latin-1")
    assert 'name="language"' not in body
    assert 'name="prompt"' not in body


def test_a_broken_200_is_retried_and_the_key_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder(
        httpx.Response(200, text="<html>proxy error</html>"),
        httpx.Response(
            200, json={"text": "fine", "segments": [{"start": 0, "end": 1.5, "text": " a"}]}
        ),
    )
    with caplog.at_level(logging.DEBUG):
        result = recorder.transcriber(backoff_base_s=0.001).transcribe(b"x", "a.wav", language="en")
    assert result.text == "fine"
    assert result.attempts == 2
    assert result.segments[0].end_s == 1.5
    assert "unreadable speech API response" in caplog.text
    assert "sk-secret" not in caplog.text


def test_a_failing_key_source_counts_no_calls() -> None:
    def no_key() -> str:
        raise TransientSpeechError("Secrets Manager unavailable")

    recorder = Recorder()
    speech = CloudRuTranscriber(
        httpx.Client(transport=httpx.MockTransport(recorder)), model="m", api_key=no_key
    )
    with pytest.raises(TransientSpeechError) as caught:
        speech.transcribe(b"x", "a.wav", language="en")
    assert caught.value.attempts == 0
    assert recorder.requests == []


def test_no_budget_left_means_no_call() -> None:
    recorder = Recorder()
    with pytest.raises(DeadlineExceededError) as caught:
        recorder.transcriber().transcribe(b"x", "a.wav", language="en", remaining_s=0)
    assert caught.value.attempts == 0
    assert recorder.requests == []
