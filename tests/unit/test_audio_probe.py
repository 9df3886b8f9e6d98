"""probe, check_limits and the decoders, on real files written by real encoders in tmp_path."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import pytest
from sttpipe_testing.audio import (
    read_pcm,
    silence,
    tone,
    write_encoded,
    write_video_without_audio,
    write_wav,
)
from typing_extensions import Buffer

from sttpipe.audio import (
    AudioError,
    AudioTooLargeError,
    AudioTooLongError,
    EmptyAudioError,
    InvalidAudioError,
    SplitOptions,
    TruncatedAudioError,
    UnsupportedCodecError,
    check_limits,
    probe,
    split_file,
)

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.flac"

# (file name, container, codec, rate, layout, codec options): one of each promised format.
ENCODED_FORMATS = [
    ("speech.mp3", "mp3", "libmp3lame", 44100, "stereo", None),
    ("speech.ogg", "ogg", "vorbis", 22050, "stereo", {"strict": "-2"}),
    ("speech.opus", "ogg", "libopus", 48000, "mono", None),
    ("speech.m4a", "ipod", "aac", 44100, "stereo", None),
    ("speech.webm", "webm", "libopus", 48000, "stereo", None),
    ("speech.mp4", "mp4", "aac", 48000, "mono", None),
    ("speech.flac", "flac", "flac", 44100, "mono", None),
    ("speech_f32.wav", "wav", "pcm_f32le", 16000, "mono", None),
    ("speech_44k.wav", "wav", "pcm_s16le", 44100, "stereo", None),
]


@pytest.fixture(scope="module")
def speech_pcm() -> bytes:
    """Twelve seconds of the committed flite sample, as canonical PCM."""
    return read_pcm(SAMPLE)[: 12 * 32000]


def assert_user_facing(error: AudioError, path: Path) -> None:
    reason = error.reason
    assert reason and reason == str(error)
    assert reason[0].isupper() and reason.endswith(".")
    for internal in ("Traceback", "Errno", "\n", str(path), path.name, "avcodec"):
        assert internal not in reason, reason
    assert error.retryable is False


# ---- every promised format decodes ------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt", "codec", "rate", "layout", "opts"), ENCODED_FORMATS)
def test_encoded_formats_decode_to_16k_mono(
    tmp_path: Path,
    speech_pcm: bytes,
    name: str,
    fmt: str,
    codec: str,
    rate: int,
    layout: str,
    opts: dict[str, str] | None,
) -> None:
    path = tmp_path / name
    write_encoded(path, speech_pcm, fmt, codec, rate=rate, layout=layout, codec_options=opts)

    info = probe(path)
    chunks = list(split_file(path, SplitOptions(max_chunk_s=8, min_chunk_s=2), info=info))

    assert info.sample_rate == rate and info.channels == (2 if layout == "stereo" else 1)
    assert info.pcm_range is None  # not canonical: decoded and resampled by PyAV
    source_ms = len(speech_pcm) // 32
    assert abs(info.duration_s * 1000 - source_ms) < 120  # encoder delay and padding
    assert chunks[0].start_ms == 0
    assert abs(chunks[-1].end_ms - source_ms) < 120
    assert all(c.has_speech for c in chunks)
    assert len(chunks) >= 2


def test_canonical_wav_is_copied_not_decoded(tmp_path: Path, speech_pcm: bytes) -> None:
    path = tmp_path / "speech.wav"
    write_wav(path, speech_pcm)

    info = probe(path)

    assert info.pcm_range == (44, len(speech_pcm))
    assert info.duration_s == len(speech_pcm) / 32000
    assert read_pcm(path) == speech_pcm


def test_webm_without_duration_gets_it_by_counting_packets(
    tmp_path: Path, speech_pcm: bytes
) -> None:
    # A browser's MediaRecorder writes WebM as a stream, with no duration in its header.
    import av

    class Unseekable(io.RawIOBase):
        def __init__(self, sink: io.BufferedWriter) -> None:
            self._sink = sink

        def writable(self) -> bool:
            return True

        def write(self, data: Buffer) -> int:
            return self._sink.write(data)

    path = tmp_path / "recorded.webm"
    with path.open("wb") as raw:
        write_encoded(Unseekable(raw), speech_pcm, "webm", "libopus", rate=48000)
    with av.open(str(path)) as container:
        assert container.duration is None and container.streams.audio[0].duration is None

    info = probe(path)

    assert abs(info.duration_s - 12.0) < 0.1


def test_header_that_understates_the_duration_cannot_dodge_the_limit(
    tmp_path: Path, speech_pcm: bytes
) -> None:
    path = tmp_path / "lying.webm"
    write_encoded(path, speech_pcm, "webm", "libopus", rate=48000)
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89\x88")  # Matroska Duration element, 8-byte float, in ms
    data[at + 3 : at + 11] = struct.pack(">d", 2000.0)  # claims 2 s of the 12
    path.write_bytes(data)

    info = probe(path)

    assert abs(info.duration_s - 12.0) < 0.1
    with pytest.raises(AudioTooLongError):
        check_limits(info, max_duration_s=5)


def test_wav_with_metadata_after_the_audio_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "tagged.wav"
    write_wav(path, tone(2))
    with path.open("ab") as f:
        f.write(b"LIST" + struct.pack("<I", 25) + b"INFOINAM" + b"x" * 17 + b"\0")

    assert probe(path).duration_s == 2.0


def test_streamed_wav_with_unknown_length_reads_to_the_end(tmp_path: Path) -> None:
    path = tmp_path / "streamed.wav"
    write_wav(path, tone(3))
    data = bytearray(path.read_bytes())
    data[4:8] = data[40:44] = b"\xff\xff\xff\xff"  # what FFmpeg writes to a pipe
    path.write_bytes(data)

    assert probe(path).duration_s == 3.0


# ---- bad input: each raises its own AudioError, from probe, before any splitting ----------


@pytest.mark.parametrize("name", ["empty.wav", "empty.mp3", "empty.m4a"])
def test_zero_length_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")

    with pytest.raises(EmptyAudioError) as caught:
        probe(path)
    assert_user_facing(caught.value, path)


def test_wav_header_without_samples(tmp_path: Path) -> None:
    path = tmp_path / "nothing.wav"
    write_wav(path, b"")

    with pytest.raises(EmptyAudioError) as caught:
        probe(path)
    assert_user_facing(caught.value, path)


def test_flac_without_samples(tmp_path: Path) -> None:
    path = tmp_path / "nothing.flac"
    write_encoded(path, b"", "flac", "flac")

    with pytest.raises(EmptyAudioError):
        probe(path)


@pytest.mark.parametrize("ext", ["wav", "mp3", "flac", "ogg", "m4a", "webm", "opus", "mp4"])
@pytest.mark.parametrize("size", [7, 1000, 60_000])
def test_random_bytes_with_an_audio_extension(tmp_path: Path, ext: str, size: int) -> None:
    path = tmp_path / f"noise.{ext}"
    path.write_bytes(random.Random(f"{ext}{size}").randbytes(size))

    with pytest.raises(InvalidAudioError) as caught:
        probe(path)
    assert_user_facing(caught.value, path)


def test_random_bytes_behind_a_riff_header(tmp_path: Path) -> None:
    path = tmp_path / "fake.wav"
    path.write_bytes(b"RIFF\x00\x10\x00\x00WAVEfmt " + random.Random(1).randbytes(4000))

    with pytest.raises(InvalidAudioError):
        probe(path)


def test_text_file_named_mp3(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp3"
    path.write_text("Meeting notes: nothing to hear here.\n" * 50)

    with pytest.raises(InvalidAudioError):
        probe(path)


def test_video_without_audio_track(tmp_path: Path) -> None:
    path = tmp_path / "silent_film.mp4"
    write_video_without_audio(path)

    with pytest.raises(InvalidAudioError, match="no audio track") as caught:
        probe(path)
    assert_user_facing(caught.value, path)


def test_wav_truncated_in_transfer(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    write_wav(path, tone(10))
    path.write_bytes(path.read_bytes()[: 44 + 2 * 32000])  # 2 s of the promised 10

    with pytest.raises(TruncatedAudioError, match=r"10\.0 s .* 2\.0 s") as caught:
        probe(path)
    assert_user_facing(caught.value, path)


def test_wav_header_that_understates_the_audio(tmp_path: Path) -> None:
    path = tmp_path / "lying.wav"
    write_wav(path, tone(10))
    data = bytearray(path.read_bytes())
    data[40:44] = struct.pack("<I", 32000)  # claims 1 s; 9 s more follow
    path.write_bytes(data)

    with pytest.raises(InvalidAudioError, match="does not match") as caught:
        probe(path)
    assert not isinstance(caught.value, TruncatedAudioError)


@pytest.mark.parametrize(
    ("name", "fmt", "codec", "options"),
    [
        ("cut.flac", "flac", "flac", None),
        ("cut.mp3", "mp3", "libmp3lame", None),  # LAME's Xing header gives the length
        ("cut.webm", "webm", "libopus", None),
        ("cut.m4a", "ipod", "aac", {"movflags": "faststart"}),  # index first, data cut
        ("cut.mp4", "mp4", "aac", None),  # index last: cut off with the data
    ],
)
def test_encoded_file_truncated_in_transfer(
    tmp_path: Path, name: str, fmt: str, codec: str, options: dict[str, str] | None
) -> None:
    path = tmp_path / name
    write_encoded(path, tone(30), fmt, codec, container_options=options)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(InvalidAudioError) as caught:  # TruncatedAudioError when detectable
        probe(path)
    assert_user_facing(caught.value, path)
    if name != "cut.mp4":  # without its index an MP4 is simply unreadable
        assert isinstance(caught.value, TruncatedAudioError)


@pytest.mark.parametrize(
    ("name", "fmt", "codec", "rate"),
    [("adpcm.wav", "wav", "adpcm_ms", 16000), ("surround.ac3", "ac3", "ac3", 48000)],
)
def test_unsupported_codec(tmp_path: Path, name: str, fmt: str, codec: str, rate: int) -> None:
    path = tmp_path / name
    write_encoded(path, tone(2), fmt, codec, rate=rate)

    with pytest.raises(UnsupportedCodecError, match="not supported") as caught:
        probe(path)
    assert_user_facing(caught.value, path)


# ---- limits ------------------------------------------------------------------------------


def test_limits_pass_at_the_limit_and_fail_above(tmp_path: Path) -> None:
    path = tmp_path / "ten.wav"
    write_wav(path, silence(10))
    info = probe(path)

    check_limits(info, max_duration_s=10, max_bytes=info.size_bytes)
    check_limits(info)  # no limits
    with pytest.raises(AudioTooLongError, match=r"10\.0 s long; the limit is 9\.0 s"):
        check_limits(info, max_duration_s=9)
    with pytest.raises(AudioTooLargeError, match=r"0\.3 MB; the limit is 0\.3 MB"):
        check_limits(info, max_bytes=info.size_bytes - 1)


def test_limits_are_checked_before_any_decoding(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    write_wav(path, tone(20))

    # split_file raises on the call itself: no chunk is ever produced.
    with pytest.raises(AudioTooLongError):
        split_file(path, SplitOptions(max_duration_s=15))
    with pytest.raises(AudioTooLargeError):
        split_file(path, SplitOptions(max_bytes=100_000))


def test_long_durations_are_worded_for_people() -> None:
    from sttpipe.audio.probe import human_duration

    assert human_duration(4 * 3600 + 125) == "4 h 02 min"
    assert human_duration(65.4) == "1 min 05 s"
    assert human_duration(2.04) == "2.0 s"
