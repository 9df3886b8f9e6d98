"""The Cloud.ru speech client against the real local speech server (real Whisper tiny.en).

Speech is synthesised with flite, so the expected words are known.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import jiwer
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from localcloud.speech_server import SpeechServer, Switches, load_engine
from localcloud.speech_server.engines import Engine
from localcloud.speech_server.tts import FliteMissingError, speak
from sttpipe.config import Settings
from sttpipe.speech.base import (
    AuthenticationError,
    PayloadTooLargeError,
    PermanentSpeechError,
    TransientSpeechError,
)
from sttpipe.speech.cloudru import CloudRuTranscriber, build_transcriber, get_http_client

pytestmark = pytest.mark.integration

FOX = "The quick brown fox jumps over the lazy dog."
WEATHER = "The weather will be sunny tomorrow, with a light wind from the south."


def synthesise(text: str, voice: str = "slt") -> bytes:
    """Speech from flite as 16 kHz mono FLAC: what the splitter sends to the API."""
    try:
        return speak(text, voice=voice, fmt="flac")
    except FliteMissingError as exc:
        pytest.skip(str(exc))


def word_error_rate(expected: str, heard: str) -> float:
    normalise = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )
    return float(
        jiwer.wer(expected, heard, reference_transform=normalise, hypothesis_transform=normalise)
    )


@pytest.fixture(scope="session")
def whisper() -> Engine:
    """Whisper tiny.en, loaded once for the whole session."""
    return load_engine("faster-whisper", workers=2)


@pytest.fixture(scope="session")
def fox_flac() -> bytes:
    return synthesise(FOX)


@pytest.fixture
def server(whisper: Engine) -> Iterator[SpeechServer]:
    """A fresh server (clean switches and counters) on the shared model."""
    with SpeechServer(engine=whisper, switches=Switches(hang_s=1.0)) as running:
        yield running


def settings_for(server: SpeechServer, **changes: object) -> Settings:
    values: dict[str, object] = {
        "speech_base_url": server.base_url,
        "speech_api_key": SecretStr(server.api_key),
        "speech_api_key_secret_id": None,
        "speech_ca_bundle": None,
        "speech_connect_timeout_s": 2.0,
        "speech_read_timeout_s": 30.0,
    }
    return Settings.model_validate(values | changes)


class RecordingSleep:
    """Really sleeps, and remembers for how long, so the waits chosen can be checked."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        threading.Event().wait(seconds)


def transcriber(
    server: SpeechServer, *, sleep: RecordingSleep | None = None, **options: object
) -> CloudRuTranscriber:
    kwargs: dict[str, object] = {
        "model": "openai/whisper-large-v3",
        "api_key": lambda: server.api_key,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "read_timeout_s": 30.0,
    } | options
    if sleep is not None:
        kwargs["sleep"] = sleep
    return CloudRuTranscriber(get_http_client(settings_for(server)), **kwargs)  # type: ignore[arg-type]


# ---- real transcription --------------------------------------------------------------------


def test_transcribes_real_speech_as_json(server: SpeechServer, fox_flac: bytes) -> None:
    result = transcriber(server).transcribe(fox_flac, "chunk-0.flac", language="en")

    assert word_error_rate(FOX, result.text) <= 0.1, result.text
    assert result.attempts == 1
    stats = server.stats()
    assert stats["by_status"] == {"200": 1}
    assert stats["audio_seconds"] == pytest.approx(2.97, abs=0.05)


def test_transcribes_as_text_with_another_voice(server: SpeechServer) -> None:
    audio = synthesise(WEATHER, voice="rms")
    result = transcriber(server, response_format="text").transcribe(
        audio, "weather.flac", language=None, prompt="Weather forecast."
    )
    assert word_error_rate(WEATHER, result.text) <= 0.2, result.text
    assert result.segments == ()


def test_verbose_json_is_refused_by_default(server: SpeechServer, fox_flac: bytes) -> None:
    with pytest.raises(PermanentSpeechError, match="only support response_format") as caught:
        transcriber(server, response_format="verbose_json").transcribe(
            fox_flac, "fox.flac", language="en"
        )
    assert caught.value.status_code == 400
    assert caught.value.attempts == 1


def test_verbose_json_fills_segments_when_the_server_allows_it(
    server: SpeechServer, fox_flac: bytes
) -> None:
    server.control(verbose_json=True)
    result = transcriber(server, response_format="verbose_json").transcribe(
        fox_flac, "fox.flac", language="en"
    )
    assert result.language == "en"
    assert result.segments, "verbose_json must give segments"
    assert all(0 <= s.start_s <= s.end_s <= 3.0 for s in result.segments)
    assert word_error_rate(FOX, " ".join(s.text for s in result.segments)) <= 0.1


# ---- transient faults and retries ----------------------------------------------------------


def test_429_then_success(server: SpeechServer, fox_flac: bytes) -> None:
    server.control(script=["429"], retry_after_s=None)
    result = transcriber(server).transcribe(fox_flac, "fox.flac", language="en")

    assert result.attempts == 2
    assert word_error_rate(FOX, result.text) <= 0.1
    assert server.stats()["by_status"] == {"200": 1, "429": 1}


def test_retry_after_is_honoured(server: SpeechServer, fox_flac: bytes) -> None:
    server.control(script=["429", "429"], retry_after_s=0.4)
    sleep = RecordingSleep()
    result = transcriber(server, sleep=sleep).transcribe(fox_flac, "fox.flac", language="en")

    assert result.attempts == 3
    # The backoff alone is at most 0.05 s here: waits of 0.4 s come from the header.
    assert len(sleep.waits) == 2
    assert all(w >= 0.4 for w in sleep.waits), sleep.waits


def test_5xx_until_attempts_run_out(server: SpeechServer, fox_flac: bytes) -> None:
    server.control(script=["5xx"] * 3)
    sleep = RecordingSleep()
    with pytest.raises(TransientSpeechError, match="503") as caught:
        transcriber(server, max_attempts=3, sleep=sleep).transcribe(
            fox_flac, "fox.flac", language="en"
        )
    assert caught.value.attempts == 3
    assert caught.value.status_code == 503
    assert len(sleep.waits) == 2
    assert all(0 <= w <= 0.05 for w in sleep.waits)  # full jitter within the cap
    assert server.stats()["by_status"] == {"503": 3}


def test_hang_times_out_as_transient(server: SpeechServer, fox_flac: bytes) -> None:
    server.control(script=["hang"])
    with pytest.raises(TransientSpeechError, match="timed out") as caught:
        transcriber(server, read_timeout_s=0.3, max_attempts=1).transcribe(
            fox_flac, "fox.flac", language="en"
        )
    assert caught.value.attempts == 1
    assert caught.value.status_code is None


def test_hang_then_success_on_retry(server: SpeechServer, fox_flac: bytes) -> None:
    # Held longer than the read timeout, which in turn leaves room for a real transcription.
    server.control(script=["hang"], hang_s=5.0)
    result = transcriber(server, read_timeout_s=2.0).transcribe(fox_flac, "f.flac", language="en")
    assert result.attempts == 2  # one call timed out on the hung request, the retry succeeded
    assert server.stats()["by_status"] == {"200": 1}  # the hung one has not even answered yet
    assert word_error_rate(FOX, result.text) <= 0.1


def test_budget_cuts_the_attempt_timeout(server: SpeechServer, fox_flac: bytes) -> None:
    server.control(script=["hang"])
    sleep = RecordingSleep()
    with pytest.raises(TransientSpeechError) as caught:
        transcriber(server, read_timeout_s=30.0, max_attempts=3, sleep=sleep).transcribe(
            fox_flac, "fox.flac", language="en", remaining_s=0.4
        )
    # 30 s read timeout, but only 0.4 s of budget: one call that timed out (before the hung
    # request's 504 after 1 s), no retry after it.
    assert caught.value.attempts == 1
    assert caught.value.status_code is None
    assert "timed out" in str(caught.value)
    assert sleep.waits == []


def test_retry_after_beyond_the_budget_gives_up_at_once(
    server: SpeechServer, fox_flac: bytes
) -> None:
    server.control(script=["429"], retry_after_s=30)
    sleep = RecordingSleep()
    with pytest.raises(TransientSpeechError) as caught:
        transcriber(server, max_attempts=5, sleep=sleep).transcribe(
            fox_flac, "fox.flac", language="en", remaining_s=10
        )
    assert caught.value.attempts == 1
    assert caught.value.retry_after_s == 30  # for the caller to delay its own redelivery
    assert sleep.waits == []


def test_connection_refused_is_transient(fox_flac: bytes) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1")
    speech = CloudRuTranscriber(
        client, model="m", api_key=lambda: "k", max_attempts=2, backoff_base_s=0.01
    )
    with pytest.raises(TransientSpeechError, match="unreachable") as caught:
        speech.transcribe(fox_flac, "fox.flac", language="en")
    assert caught.value.attempts == 2


# ---- permanent errors: no retries ----------------------------------------------------------


def test_wrong_key_is_an_authentication_error(server: SpeechServer, fox_flac: bytes) -> None:
    speech = transcriber(server, api_key=lambda: "not-the-key")
    with pytest.raises(AuthenticationError, match="401") as caught:
        speech.transcribe(fox_flac, "fox.flac", language="en")
    assert caught.value.attempts == 1
    assert "not-the-key" not in str(caught.value)
    assert server.stats()["by_status"] == {"401": 1}


def test_over_25_mb_is_payload_too_large(server: SpeechServer) -> None:
    with pytest.raises(PayloadTooLargeError) as caught:
        transcriber(server).transcribe(b"\0" * (25 * 1024 * 1024 + 1), "big.wav", language="en")
    assert caught.value.status_code == 413
    assert caught.value.attempts == 1


def test_unknown_model_is_permanent(server: SpeechServer, fox_flac: bytes) -> None:
    with pytest.raises(PermanentSpeechError, match="whisper-large-v3` does not exist") as caught:
        transcriber(server, model="whisper-large-v3").transcribe(
            fox_flac, "fox.flac", language="en"
        )
    assert caught.value.status_code == 404
    assert caught.value.attempts == 1


def test_undecodable_audio_is_permanent(server: SpeechServer) -> None:
    with pytest.raises(PermanentSpeechError, match=r"400.*decode"):
        transcriber(server).transcribe(b"this is not audio" * 100, "x.flac", language="en")


# ---- the production wiring -----------------------------------------------------------------


def test_build_transcriber_reuses_one_http_client(server: SpeechServer, fox_flac: bytes) -> None:
    settings = settings_for(server)
    first, second = build_transcriber(settings), build_transcriber(settings)
    assert isinstance(first, CloudRuTranscriber)
    assert isinstance(second, CloudRuTranscriber)
    assert first.client is second.client

    first.transcribe(fox_flac, "a.flac", language="en")
    second.transcribe(fox_flac, "b.flac", language="en")

    stats = server.stats()
    assert stats["requests_total"] == 2
    assert stats["connections"] == 1  # the second call rode the first call's connection


def test_requests_are_accepted_beyond_the_decoding_slots(
    server: SpeechServer, fox_flac: bytes
) -> None:
    server.control(latency_s=1.5)  # each answer waits, so all four are in flight together
    speech = transcriber(server)
    threads = [
        threading.Thread(
            target=speech.transcribe, args=(fox_flac, f"{i}.flac"), kwargs={"language": "en"}
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = server.stats()
    assert stats["by_status"] == {"200": 4}
    assert stats["max_in_flight"] == 4  # two decode at a time, but all four were accepted
    assert stats["in_flight"] == 0


# ---- TLS with a private CA -----------------------------------------------------------------


def _write_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sttpipe test root")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


def test_private_ca_bundle_is_trusted_and_required(
    whisper: Engine, fox_flac: bytes, tmp_path: Path
) -> None:
    ca, cert, key = _write_ca_and_server_cert(tmp_path)
    with SpeechServer(engine=whisper, ssl_certfile=cert, ssl_keyfile=key) as tls:
        assert tls.base_url.startswith("https://")
        trusted = build_transcriber(settings_for(tls, speech_ca_bundle=str(ca)))
        assert (
            word_error_rate(FOX, trusted.transcribe(fox_flac, "f.flac", language="en").text) <= 0.1
        )

        untrusted = build_transcriber(settings_for(tls))
        with pytest.raises(PermanentSpeechError, match="STT_SPEECH_CA_BUNDLE") as caught:
            untrusted.transcribe(fox_flac, "f.flac", language="en")
        assert caught.value.attempts == 1
