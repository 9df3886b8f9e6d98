"""A real 413 from the local speech server (real Whisper tiny.en, a small upload limit), answered
by ResplittingTranscriber around the production client, as bootstrap wires them.

Four flite sentences with pauses between them make one chunk of about 16 s (~230 kB of FLAC);
the server's limit is set below that, so the chunk must be cut to get its text at all.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sttpipe_testing.audio import flite_available, silence, speak

from localcloud.cli import word_error_rate
from localcloud.speech_server import SpeechServer, Switches, load_engine
from localcloud.speech_server.engines import Engine
from sttpipe.audio import SAMPLE_RATE, encode_flac
from sttpipe.audio.pcm import SAMPLE_WIDTH
from sttpipe.config import Settings
from sttpipe.speech.base import PayloadTooLargeError
from sttpipe.speech.cloudru import build_transcriber
from sttpipe.speech.resplit import ResplittingTranscriber

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not flite_available(), reason="flite is not installed"),
]

SENTENCES = (
    ("slt", "The weather was calm and clear on the morning of our trip."),
    ("rms", "We packed our bags and walked down the hill to the station."),
    ("awb", "The train left on time and most of the seats were empty."),
    ("kal16", "Outside the window we could see green fields and small farms."),
)
PAUSE_S = 0.7


@pytest.fixture(scope="module")
def whisper() -> Engine:
    return load_engine("faster-whisper", workers=2)


@pytest.fixture(scope="module")
def spoken() -> list[bytes]:
    """Each sentence as canonical PCM, followed by its pause."""
    return [speak(text, voice) + silence(PAUSE_S) for voice, text in SENTENCES]


@pytest.fixture(scope="module")
def chunk(spoken: list[bytes]) -> bytes:
    return encode_flac(b"".join(spoken))


@pytest.fixture
def server(whisper: Engine, chunk: bytes, request: pytest.FixtureRequest) -> Iterator[SpeechServer]:
    """A server whose limit is the given fraction of the chunk's size."""
    limit = int(len(chunk) * request.param)
    with SpeechServer(engine=whisper, max_bytes=limit, switches=Switches()) as running:
        yield running


def transcriber(
    server: SpeechServer, response_format: str = "json", max_depth: int = 3
) -> ResplittingTranscriber:
    settings = Settings(
        speech_base_url=server.base_url,
        speech_api_key=SecretStr(server.api_key),
        speech_api_key_secret_id=None,
        speech_response_format=response_format,
        speech_read_timeout_s=60.0,
    )
    return ResplittingTranscriber(build_transcriber(settings), max_depth=max_depth)


def seconds(pcm: bytes) -> float:
    return len(pcm) / SAMPLE_WIDTH / SAMPLE_RATE


REFERENCE = " ".join(text for _, text in SENTENCES)


@pytest.mark.parametrize("server", [0.8], indirect=True)
def test_a_real_413_is_answered_by_halves_and_the_text_comes_out(
    server: SpeechServer, chunk: bytes, spoken: list[bytes]
) -> None:
    result = transcriber(server).transcribe(chunk, "00000.flac", language="en")

    assert word_error_rate(REFERENCE, result.text) <= 0.1, result.text
    stats = server.stats()
    assert stats["by_status"] == {"200": 2, "413": 1}
    assert result.attempts == stats["requests_total"] == 3
    # Cut at the pause between the second and third sentence: no audio lost, none sent twice.
    assert stats["audio_seconds"] == pytest.approx(seconds(b"".join(spoken)), abs=0.01)


@pytest.mark.parametrize("server", [0.45], indirect=True)
def test_parts_still_too_large_are_cut_again(server: SpeechServer, chunk: bytes) -> None:
    result = transcriber(server).transcribe(chunk, "00000.flac", language="en")

    assert word_error_rate(REFERENCE, result.text) <= 0.1, result.text
    stats = server.stats()
    assert stats["by_status"] == {"200": 4, "413": 3}  # the chunk, both halves; four quarters
    assert result.attempts == 7


@pytest.mark.parametrize("server", [0.8], indirect=True)
def test_segments_come_back_in_chunk_time(
    server: SpeechServer, chunk: bytes, spoken: list[bytes]
) -> None:
    server.control(verbose_json=True)
    result = transcriber(server, "verbose_json").transcribe(chunk, "00000.flac", language="en")

    starts = [s.start_s for s in result.segments]
    assert starts == sorted(starts)
    assert all(0 <= s.start_s <= s.end_s <= seconds(b"".join(spoken)) for s in result.segments)
    # "Outside the window" is said from the start of the fourth sentence: a part's times that
    # were not moved by the part's offset would place it about eight seconds early.
    fourth_starts = seconds(b"".join(spoken[:3]))
    (outside,) = [s for s in result.segments if "outside" in s.text.lower()]
    assert outside.start_s == pytest.approx(fourth_starts, abs=1.0)


@pytest.mark.parametrize("server", [0.2], indirect=True)
def test_too_large_at_every_depth_still_fails_as_413(server: SpeechServer, chunk: bytes) -> None:
    with pytest.raises(PayloadTooLargeError) as caught:
        transcriber(server, max_depth=1).transcribe(chunk, "00000.flac", language="en")
    assert caught.value.status_code == 413
    assert caught.value.attempts == server.stats()["requests_total"] == 2
