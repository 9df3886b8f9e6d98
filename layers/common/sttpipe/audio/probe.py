"""Cheap facts about an uploaded file, and the input limits checked on them before any work.

`probe` reads headers, decodes the first audio frame and (when the header states a duration)
the last few seconds, so that empty, corrupt, truncated, unsupported and oversized inputs all
fail here, in well under a second, rather than part-way through splitting.
"""

from __future__ import annotations

import os
import struct
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Protocol, cast

import av
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer

from sttpipe.audio.errors import (
    AudioTooLargeError,
    AudioTooLongError,
    EmptyAudioError,
    InvalidAudioError,
    TruncatedAudioError,
    UnsupportedCodecError,
)
from sttpipe.audio.pcm import SAMPLE_RATE, SAMPLE_WIDTH

# Codecs of the formats we promise (WAV, FLAC, MP3, OGG/Vorbis, Opus, M4A/AAC, WebM, MP4/MOV);
# every "pcm_*" codec is accepted too. Others (AC-3, WMA, ADPCM, ...) are refused rather than
# half-supported through whatever decoder FFmpeg happens to carry.
SUPPORTED_CODECS = frozenset({"flac", "mp3", "vorbis", "opus", "aac"})
SUPPORTED_FORMATS_TEXT = "WAV, FLAC, MP3, OGG (Vorbis or Opus), M4A/AAC, WebM or MP4/MOV"

# The only demuxers FFmpeg may pick for an upload: the containers above, and AC-3's (so that its
# codec is refused by name rather than as "not audio"). Others must never see untrusted bytes:
# HLS or concat would follow a playlist to files on the function's disk or the network, image
# and text demuxers are attack surface with nothing to transcribe. And local files only.
ALLOWED_DEMUXERS = "wav,flac,mp3,ogg,mov,matroska,aac,ac3"
_OPEN_OPTIONS = {"format_whitelist": ALLOWED_DEMUXERS, "protocol_whitelist": "file"}

# How much of the end of the file probe decodes to prove the header's duration.
TAIL_CHECK_S = 5.0

# WAV "data" sizes at or above this are a streaming writer's "length unknown" placeholder
# (FFmpeg writes 0xFFFFFFFF to a pipe), not a promise: the audio runs to the end of the file.
_WAV_UNKNOWN_SIZE = 0x7FFF_0000
# A WAV may carry a few metadata chunks after its audio; more than this is not a real header.
_WAV_MAX_TRAILING_CHUNKS = 64

_NOT_AUDIO = "The file is not audio we can read: it is damaged or in an unknown format."


class AudioFile(Protocol):
    """A readable, seekable binary file: an open file, or a download still arriving."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...


# A path, or a file the caller opened (reads may wait for a download: see ObjectStore.download).
AudioSource = str | os.PathLike[str] | AudioFile


@contextmanager
def opened(source: AudioSource) -> Iterator[AudioFile]:
    """The source as a binary file at its start; a path is opened here and closed after."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            yield f
    else:
        source.seek(0)
        yield source


@dataclass(frozen=True)
class AudioInfo:
    container: str  # FFmpeg's format name, e.g. "wav", "mp3", "matroska,webm"
    codec: str  # FFmpeg's codec name, e.g. "pcm_s16le", "mp3", "opus"
    sample_rate: int
    channels: int
    duration_s: float
    size_bytes: int
    # Byte offset and length of the samples when the file is already canonical PCM WAV
    # (16 kHz mono s16le): split_file then copies them without decoding.
    pcm_range: tuple[int, int] | None = None


def is_supported_codec(codec: str) -> bool:
    return codec in SUPPORTED_CODECS or codec.startswith("pcm_")


def truncation_tolerance_s(duration_s: float) -> float:
    """How far short of its header's duration a file may decode before we call it truncated.

    Encoder delay, padding and frame rounding differ by a few tens of milliseconds per format.
    """
    return max(1.0, 0.01 * duration_s)


def probe(source: AudioSource) -> AudioInfo:
    """Read what split_file and check_limits need, and reject bad input with an AudioError."""
    with opened(source) as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            raise EmptyAudioError("The file is empty (0 bytes).")
        return _probe_wav(f, size) or _probe_av(f, size)


def check_limits(
    info: AudioInfo, max_duration_s: float | None = None, max_bytes: int | None = None
) -> None:
    """Raise AudioTooLargeError / AudioTooLongError when the input is over a limit (None: none)."""
    if max_bytes is not None and info.size_bytes > max_bytes:
        raise AudioTooLargeError(
            f"The file is {_megabytes(info.size_bytes)}; the limit is {_megabytes(max_bytes)}."
        )
    if max_duration_s is not None and info.duration_s > max_duration_s:
        raise AudioTooLongError(
            f"The recording is {human_duration(info.duration_s)} long; "
            f"the limit is {human_duration(max_duration_s)}."
        )


def human_duration(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{seconds:.1f} s"


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


# ---- WAV: the header is checked against the file, and canonical PCM needs no decoder ----


def _probe_wav(f: AudioFile, size: int) -> AudioInfo | None:
    """AudioInfo for canonical PCM WAV; None when PyAV should look (not WAV, or another WAV)."""
    f.seek(0)
    head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    f.seek(0)
    try:
        with wave.open(cast(IO[bytes], f)) as w:  # `wave` only reads, seeks and tells
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.getnframes()
    except (wave.Error, EOFError, struct.error):
        return None  # a format `wave` does not read (float, extensible, ADPCM) or damage
    data_start = f.tell()  # `wave` stops right after the data chunk's header
    if rate <= 0 or channels <= 0:
        raise InvalidAudioError(
            f"The WAV header is damaged: it gives {rate} Hz and {channels} channel(s)."
        )
    block = channels * width
    f.seek(data_start - 4)
    (declared,) = struct.unpack("<I", f.read(4))
    available = size - data_start
    if declared >= _WAV_UNKNOWN_SIZE:
        data_len = available - available % block
    elif frames * block > available:
        raise TruncatedAudioError(
            "The file is cut off: its header promises "
            f"{human_duration(frames / rate)} of audio but it holds only "
            f"{human_duration(available // block / rate)}."
        )
    else:
        data_len = frames * block
        if not _only_chunks_follow(f, data_start + declared + (declared & 1), size):
            raise InvalidAudioError(
                "The WAV header does not match the file: there is more data after the "
                "audio than the header accounts for."
            )
    if data_len == 0:
        raise EmptyAudioError("The WAV file holds no audio samples.")
    if (rate, channels, width) != (SAMPLE_RATE, 1, SAMPLE_WIDTH):
        return None  # valid, but needs resampling or mixing down: PyAV's job
    return AudioInfo(
        container="wav",
        codec="pcm_s16le",
        sample_rate=rate,
        channels=channels,
        duration_s=data_len / (rate * block),
        size_bytes=size,
        pcm_range=(data_start, data_len),
    )


def _only_chunks_follow(f: AudioFile, pos: int, size: int) -> bool:
    """True when what follows the audio is a few well-formed RIFF chunks (LIST, id3, ...)."""
    for _ in range(_WAV_MAX_TRAILING_CHUNKS):
        if size - pos < 8:
            return True  # at most a stray pad byte or two
        f.seek(pos)
        header = f.read(8)
        chunk_id, (chunk_size,) = header[:4], struct.unpack("<I", header[4:])
        pos += 8 + chunk_size + (chunk_size & 1)
        # Audio samples misread as a header almost never give a printable id AND a size that
        # ends inside the file; a pad byte missing at the very end is forgiven.
        if not all(32 <= b < 127 for b in chunk_id) or pos > size + 1:
            return False
    return False


# ---- everything else: FFmpeg through PyAV -------------------------------------------------


@contextmanager
def open_audio(source: AudioSource) -> Iterator[tuple[InputContainer, AudioStream]]:
    """The container and its main audio stream (FFmpeg's pick when there are several)."""
    with (
        opened(source) as f,
        av.open(f, "r", container_options=_OPEN_OPTIONS) as container,
    ):
        stream = container.streams.best("audio")
        if not isinstance(stream, AudioStream):
            raise InvalidAudioError("The file has no audio track.")
        yield container, stream


def _probe_av(f: AudioFile, size: int) -> AudioInfo:
    try:
        with open_audio(f) as (container, stream):
            ctx = stream.codec_context
            if ctx.sample_rate <= 0 or ctx.channels <= 0:
                raise InvalidAudioError(_NOT_AUDIO)
            codec = ctx.codec.canonical_name
            if not is_supported_codec(codec):
                raise UnsupportedCodecError(
                    f"The audio codec {ctx.codec.long_name} is not supported. "
                    f"Please upload {SUPPORTED_FORMATS_TEXT}."
                )
            first_end = _first_frame_end(container, stream)
            duration = _header_duration(container, stream)
            if duration is None:
                # No duration in the header (a browser's MediaRecorder WebM): count the packets.
                duration = max(first_end, _scanned_duration(container, stream))
            else:
                duration = _verified_duration(container, stream, duration)
            return AudioInfo(
                container=container.format.name,
                codec=codec,
                sample_rate=ctx.sample_rate,
                channels=ctx.channels,
                duration_s=duration,
                size_bytes=size,
            )
    except (av.FFmpegError, UnicodeDecodeError) as exc:  # FFmpeg gave up on the header
        raise InvalidAudioError(_NOT_AUDIO) from exc


def _first_frame_end(container: InputContainer, stream: AudioStream) -> float:
    try:
        frame = next(container.decode(stream), None)
    except av.FFmpegError as exc:
        raise InvalidAudioError(
            "The audio data cannot be decoded: the file is damaged or is not really audio."
        ) from exc
    if frame is None:
        raise EmptyAudioError("The file holds no audio samples.")
    return _frame_end(frame) or 0.0


def _header_duration(container: InputContainer, stream: AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration / av.time_base)
    return None


def _scanned_duration(container: InputContainer, stream: AudioStream) -> float:
    end = 0.0
    for packet in container.demux(stream):
        if packet.pts is not None and packet.time_base:
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    return end


def _verified_duration(container: InputContainer, stream: AudioStream, duration: float) -> float:
    """Decode the last TAIL_CHECK_S seconds the header promises, to prove its duration.

    A cut-off file ends early or fails to decode there: TruncatedAudioError. A header that
    understates the length (so that limits would pass) shows as audio running past the promised
    end: the duration is then measured from the packets, without decoding the rest.
    """
    tolerance = truncation_tolerance_s(duration)
    start = duration - TAIL_CHECK_S
    if start > 0:
        try:
            container.seek(int(start * av.time_base))
        except av.FFmpegError:
            return duration  # not seekable: split_file still compares the decoded length
    end = 0.0
    try:
        for frame in container.decode(stream):
            frame_end = _frame_end(frame)
            if frame_end is None:
                return duration  # no timestamps to judge by
            end = max(end, frame_end)
            if end > duration + tolerance:
                return max(end, _scanned_duration(container, stream))
    except av.FFmpegError as exc:
        raise TruncatedAudioError(
            "The end of the file is damaged or missing; it was probably cut off in transfer."
        ) from exc
    if end < duration - tolerance:
        raise TruncatedAudioError(
            f"The file is cut off: its header promises {human_duration(duration)} of audio "
            f"but it ends after {human_duration(end)}."
        )
    return duration


def _frame_end(frame: AudioFrame) -> float | None:
    if frame.time is None:
        return None
    return float(frame.time) + frame.samples / frame.sample_rate
