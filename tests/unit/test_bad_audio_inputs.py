"""Every "Bad input" case of issue 3, through SplitterService, with real files and real decoders.

Each must end the job at once (the call returns, so the S3 notification is not redelivered for
a retry that cannot help) as FAILED with a specific reason worded for the uploader, start no
state machine execution, and keep the upload. test_splitter_service.py covers a zero-length MP3,
random bytes behind an ID3 tag, 12 s of digital silence and a recording over the duration limit.
"""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from sttpipe_testing.audio import (
    read_pcm,
    tone,
    write_encoded,
    write_video_without_audio,
    write_wav,
)

from sttpipe.domain import keys
from sttpipe.domain.models import JobStatus
from tests.unit.test_splitter_service import JOB_ID, SAMPLE, World

# A maker writes the bad file into the directory it is given and returns its path.
Maker = Callable[[Path], Path]


def speech() -> bytes:
    """Twelve seconds of the committed flite sample, as canonical PCM."""
    return read_pcm(SAMPLE)[: 12 * 32000]


def empty(name: str) -> Maker:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(b"")
        return path

    return make


def random_bytes(name: str, size: int = 50_000) -> Maker:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(random.Random(name).randbytes(size))
        return path

    return make


def text_named_mp3(tmp: Path) -> Path:
    path = tmp / "notes.mp3"
    path.write_text("Meeting notes: nothing to hear here.\n" * 50)
    return path


def video_without_audio(tmp: Path) -> Path:
    path = tmp / "silent_film.mp4"
    write_video_without_audio(path)
    return path


def wav_samples_missing(tmp: Path) -> Path:
    """A WAV header promising 12 s over 2 s of samples (cut off in transfer)."""
    path = tmp / "cut.wav"
    write_wav(path, speech())
    path.write_bytes(path.read_bytes()[: 44 + 2 * 32000])
    return path


def wav_header_understating(tmp: Path) -> Path:
    """A WAV whose data chunk claims 1 s while 12 s of samples follow it."""
    path = tmp / "lying.wav"
    write_wav(path, speech())
    data = bytearray(path.read_bytes())
    data[40:44] = struct.pack("<I", 32000)
    path.write_bytes(data)
    return path


def encoded_cut_in_half(name: str, fmt: str, codec: str) -> Maker:
    def make(tmp: Path) -> Path:
        path = tmp / name
        write_encoded(path, speech(), fmt, codec)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path

    return make


def flac_damaged_in_the_middle(tmp: Path) -> Path:
    """Header and end intact, so probe passes: the damage is only found while splitting."""
    path = tmp / "damaged.flac"
    write_encoded(path, read_pcm(SAMPLE), "flac", "flac")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 20_000] = random.Random(2).randbytes(20_000)
    path.write_bytes(data)
    return path


def faint_noise_only(tmp: Path) -> Path:
    path = tmp / "hiss.mp3"
    rng = random.Random(0)
    noise = b"".join(
        max(-32768, min(32767, round(rng.gauss(0, 300)))).to_bytes(2, "little", signed=True)
        for _ in range(12 * 16000)
    )
    write_encoded(path, noise, "mp3", "libmp3lame", rate=44100)
    return path


def unsupported(name: str, fmt: str, codec: str, rate: int) -> Maker:
    def make(tmp: Path) -> Path:
        path = tmp / name
        write_encoded(path, tone(2), fmt, codec, rate=rate)
        return path

    return make


def webm_understating_its_duration(tmp: Path) -> Path:
    """A WebM whose header says 2 s of its 12, to slip under a 5 s limit."""
    path = tmp / "lying.webm"
    write_encoded(path, speech(), "webm", "libopus", rate=48000)
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89\x88")  # Matroska Duration element, 8-byte float, in ms
    data[at + 3 : at + 11] = struct.pack(">d", 2000.0)
    path.write_bytes(data)
    return path


def mp3_speech(tmp: Path) -> Path:
    path = tmp / "talk.mp3"
    write_encoded(path, speech(), "mp3", "libmp3lame", rate=44100, layout="stereo")
    return path


# (case id, maker, settings for the world, pattern the reason must match)
def hls_playlist_of_a_local_file(tmp: Path) -> Path:
    """A 100-byte HLS playlist (uploaded as audio/mpeg: the name is the uploader's) whose one
    segment is a recording already on the function's disk."""
    secret = tmp / "secret.ts"
    write_encoded(secret, speech(), "mpegts", "libmp3lame")
    playlist = tmp / "playlist.m3u8"
    playlist.write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:12\n#EXTINF:12,\n{secret}\n#EXT-X-ENDLIST\n"
    )
    return playlist


CASES: list[tuple[str, Maker, dict[str, object], str]] = [
    ("empty-wav", empty("empty.wav"), {}, r"empty \(0 bytes\)"),
    ("empty-m4a", empty("empty.m4a"), {}, r"empty \(0 bytes\)"),
    *(
        # FFmpeg sniffs the odd random file as a text format (LRC lyrics): "no audio track".
        (f"random-{ext}", random_bytes(f"noise.{ext}"), {}, r"not audio|cannot be decoded|no audio")
        for ext in ("wav", "flac", "ogg", "opus", "m4a", "webm", "mp4")
    ),
    ("text-named-mp3", text_named_mp3, {}, r"not audio|cannot be decoded"),
    # FFmpeg's HLS demuxer would follow the playlist to a file on the function's own disk.
    (
        "hls-playlist-of-a-local-file",
        hls_playlist_of_a_local_file,
        {},
        r"not audio|cannot be decoded",
    ),
    ("video-without-audio", video_without_audio, {}, r"no audio track"),
    ("wav-cut-off", wav_samples_missing, {}, r"cut off.*12\.0 s.*2\.0 s"),
    ("wav-header-lies", wav_header_understating, {}, r"header does not match"),
    ("flac-cut-off", encoded_cut_in_half("cut.flac", "flac", "flac"), {}, r"cut off|damaged"),
    ("mp3-cut-off", encoded_cut_in_half("cut.mp3", "mp3", "libmp3lame"), {}, r"cut off|damaged"),
    ("webm-cut-off", encoded_cut_in_half("cut.webm", "webm", "libopus"), {}, r"cut off|damaged"),
    ("flac-damaged-mid-file", flac_damaged_in_the_middle, {}, r"damaged or cut off"),
    ("faint-noise-only", faint_noise_only, {}, r"No speech was found"),
    ("adpcm-wav", unsupported("adpcm.wav", "wav", "adpcm_ms", 16000), {}, r"not supported"),
    ("ac3", unsupported("surround.ac3", "ac3", "ac3", 48000), {}, r"AC-3.*not supported"),
    ("over-size-limit", mp3_speech, {"max_upload_bytes": 50_000}, r"MB; the limit is"),
    ("over-duration-limit-mp3", mp3_speech, {"max_duration_s": 10}, r"long; the limit is"),
    (
        "header-understates-duration",
        webm_understating_its_duration,
        {"max_duration_s": 5},
        r"long; the limit is",
    ),
]


@pytest.mark.parametrize(
    ("maker", "settings", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_upload_fails_the_job_at_once_with_its_own_reason(
    tmp_path: Path, maker: Maker, settings: dict[str, object], reason: str
) -> None:
    path = maker(tmp_path)
    body = path.read_bytes()
    world = World(**settings)
    key = world.upload(body, filename=path.name)

    outcome = world.service.handle_upload(key)  # returns: nothing for SQS to redeliver

    assert outcome.status is JobStatus.FAILED
    message = outcome.reason or ""
    assert re.search(reason, message), message
    # Worded for the uploader: one sentence or two, no internals.
    assert message[0].isupper() and message.endswith("."), message
    for internal in ("Traceback", "Errno", "\n", str(tmp_path), "sttpipe-", "avcodec", "Error"):
        assert internal not in message, message
    view = world.jobs.get(JOB_ID)
    assert view is not None
    assert view.job.status is JobStatus.FAILED and view.job.failure_reason == message
    assert view.chunks == []
    assert world.workflow.executions == {}
    assert world.store.size(keys.manifest(JOB_ID)) is None
    assert world.store.get_bytes(key) == body  # the original upload is kept

    # A redelivered notification finds the job finished and does no work again.
    again = world.service.handle_upload(key)
    assert again.status is JobStatus.FAILED and world.workflow.executions == {}


@pytest.mark.parametrize(
    "maker",
    [mp3_speech, webm_understating_its_duration],
    ids=["size", "duration-header-lies"],
)
def test_limits_are_checked_before_any_chunk_is_made(tmp_path: Path, maker: Maker) -> None:
    path = maker(tmp_path)
    world = World(max_upload_bytes=50_000, max_duration_s=5)
    key = world.upload(path.read_bytes(), filename=path.name)

    outcome = world.service.handle_upload(key)

    assert outcome.status is JobStatus.FAILED and "limit" in (outcome.reason or "")
    assert world.store.size(keys.chunk_audio(JOB_ID, 0)) is None
