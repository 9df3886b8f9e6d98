"""The local speech server itself: HTTP surface, switches, counters, engines, CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from localcloud.speech_server import DEFAULT_MODEL, SpeechServer, decode_audio, load_engine
from localcloud.speech_server.engines import Engine, UndecodableAudioError
from localcloud.speech_server.tts import FliteMissingError, speak

pytestmark = pytest.mark.integration

FOX = "The quick brown fox jumps over the lazy dog."


def spoken(fmt: str, voice: str = "slt") -> bytes:
    try:
        return speak(FOX, voice=voice, fmt=fmt)
    except FliteMissingError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def pocketsphinx() -> Engine:
    """The second engine, so both get exercised; these tests are about the server, not words."""
    return load_engine("pocketsphinx", workers=2)


@pytest.fixture
def server(pocketsphinx: Engine) -> Iterator[SpeechServer]:
    with SpeechServer(engine=pocketsphinx) as running:
        yield running


@pytest.fixture
def http(server: SpeechServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def post(
    http: httpx.Client, key: str, *, model: str = DEFAULT_MODEL, **fields: str
) -> httpx.Response:
    files = {"file": ("a.wav", fields.pop("audio", "x"))}
    return http.post(
        "/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {key}"},
        data={"model": model, **fields},
        files=files,
    )


def test_transcribes_every_format_cloudru_takes(server: SpeechServer, http: httpx.Client) -> None:
    for fmt in ("wav", "flac", "ogg", "mp3"):
        response = post(http, server.api_key, audio=spoken(fmt), response_format="text")  # type: ignore[arg-type]
        assert response.status_code == 200, (fmt, response.text)
        assert "quick brown fox" in response.text, (fmt, response.text)
        assert response.headers["content-type"].startswith("text/plain")


def test_mp4_is_refused_like_cloudru_does(server: SpeechServer, http: httpx.Client) -> None:
    response = post(http, server.api_key, audio=spoken("mp4"))  # type: ignore[arg-type]
    assert response.status_code == 400
    assert response.json()["message"] == "Format not recognised"


def test_decode_audio_resamples_to_16k_mono() -> None:
    audio = speak(FOX, voice="kal16", fmt="flac", rate=44_100)
    pcm = decode_audio(audio)
    assert pcm.dtype.name == "int16"
    assert len(pcm) / 16_000 == pytest.approx(
        len(decode_audio(spoken("wav", "kal16"))) / 16_000, abs=0.05
    )
    with pytest.raises(UndecodableAudioError):
        decode_audio(b"")


def test_refusals_in_vllm_shape(server: SpeechServer, http: httpx.Client) -> None:
    assert post(http, "wrong").status_code == 401
    assert http.post("/v1/audio/transcriptions", files={"file": ("a", b"x")}).status_code == 401
    missing = http.post(
        "/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {server.api_key}"},
        data={"model": DEFAULT_MODEL},
    )
    assert missing.status_code == 400
    verbose = post(http, server.api_key, response_format="verbose_json")
    assert verbose.status_code == 400
    assert verbose.json() == {
        "object": "error",
        "message": "Currently only support response_format `text` or `json`",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    assert server.stats()["by_status"] == {"400": 2, "401": 2}


def test_control_over_http_merges_and_validates(server: SpeechServer, http: httpx.Client) -> None:
    changed = http.post("/control", json={"rate_429": 0.25, "seed": 3}).json()
    assert changed["rate_429"] == 0.25
    assert changed["hang_s"] == 30.0  # untouched fields keep their values

    refused = http.post("/control", json={"rate_5xx": 0.9})  # 0.25 + 0.9 > 1
    assert refused.status_code == 400
    assert http.post("/control", json={"no_such_switch": 1}).status_code == 400
    assert http.get("/control").json() == changed


def test_seeded_fault_draws_repeat_and_keep_their_rates(pocketsphinx: Engine) -> None:
    def statuses() -> list[int]:
        with SpeechServer(engine=pocketsphinx) as srv, httpx.Client(base_url=srv.url) as http:
            srv.control(rate_429=0.3, rate_5xx=0.2, status_5xx=502, seed=42)
            # A wrong model answers 404 quickly whenever no fault is drawn.
            return [post(http, srv.api_key, model="none").status_code for _ in range(200)]

    first, second = statuses(), statuses()
    assert first == second
    assert set(first) == {404, 429, 502}
    assert 0.2 <= first.count(429) / 200 <= 0.4
    assert 0.1 <= first.count(502) / 200 <= 0.3


def test_429_carries_retry_after(server: SpeechServer, http: httpx.Client) -> None:
    server.control(script=["429", "429"], retry_after_s=2.5)
    assert post(http, server.api_key).headers["Retry-After"] == "2.5"
    server.control(retry_after_s=None)
    limited = post(http, server.api_key)
    assert limited.status_code == 429
    assert "Retry-After" not in limited.headers


def test_a_file_named_in_fail_files_always_fails_and_others_do_not(
    server: SpeechServer, http: httpx.Client
) -> None:
    server.control(fail_files={"00001.flac": 500})
    audio = spoken("flac")

    def status(name: str) -> int:
        return http.post(
            "/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {server.api_key}"},
            data={"model": DEFAULT_MODEL},
            files={"file": (name, audio)},
        ).status_code

    assert [status("00001.flac") for _ in range(3)] == [500, 500, 500]
    assert status("00002.flac") == 200
    assert http.post("/control", json={"fail_files": {"x.flac": 200}}).status_code == 400


def test_stats_count_and_reset(server: SpeechServer, http: httpx.Client) -> None:
    post(http, server.api_key, audio=spoken("wav"))  # type: ignore[arg-type]
    post(http, "wrong")
    stats = http.get("/stats").json()
    assert stats["requests_total"] == 2
    assert stats["by_status"] == {"200": 1, "401": 1}
    assert stats["audio_seconds"] == pytest.approx(2.965, abs=0.01)
    assert stats["in_flight"] == 0
    assert stats["max_in_flight"] == 1

    reset = http.post("/stats/reset").json()
    assert reset["requests_total"] == 0
    assert reset["by_status"] == {}
    assert server.stats() == reset


def test_command_line_server(tmp_path: object) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    help_text = subprocess.run(
        [sys.executable, "-m", "localcloud.speech_server", "--help"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "--rate-429" in help_text
    assert "/control" in help_text

    env = os.environ | {"SPEECH_SERVER_ENGINE": "pocketsphinx", "SPEECH_SERVER_API_KEY": "cli"}
    process = subprocess.Popen(
        [sys.executable, "-m", "localcloud.speech_server", "--port", str(port), "--rate-5xx", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    health = http.get("/health")
                    break
                except httpx.TransportError:
                    assert process.poll() is None, process.stderr.read() if process.stderr else ""
                    assert time.monotonic() < deadline, "the CLI server did not come up"
                    time.sleep(0.1)
            assert health.json()["engine"] == "pocketsphinx"
            assert post(http, "cli").status_code == 503  # --rate-5xx 1
            http.post("/control", json={"rate_5xx": 0})
            answer = post(http, "cli", audio=spoken("flac"))  # type: ignore[arg-type]
            assert answer.status_code == 200
            assert "quick brown fox" in answer.json()["text"]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_none_engine_answers_after_the_latency_model_counted_from_arrival() -> None:
    """The benchmark engine: no recognition, so a call takes what the latency model says."""
    wav = spoken("wav")
    with (
        SpeechServer(engine=load_engine("none")) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        server.control(latency_s=0.3, latency_per_audio_s=0.1)
        answer = post(http, server.api_key, audio=wav, response_format="text")
        [(arrived, answered, audio_s)] = server.stats()["calls"]

    assert answer.status_code == 200
    assert answer.text == f"{audio_s:.1f} seconds of audio."
    assert 1.0 < audio_s < 5.0  # the fox sentence
    assert answered - arrived >= 0.3 + 0.1 * audio_s - 0.01  # stats are rounded to ms
