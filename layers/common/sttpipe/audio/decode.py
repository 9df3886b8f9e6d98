"""Stream any supported input as canonical PCM (16 kHz mono s16le) in bounded blocks."""

from __future__ import annotations

import io
from collections.abc import Iterator

import av
from av.audio.frame import AudioFrame

from sttpipe.audio.errors import InvalidAudioError
from sttpipe.audio.pcm import SAMPLE_RATE, SAMPLE_WIDTH
from sttpipe.audio.probe import (
    AudioInfo,
    AudioSource,
    human_duration,
    open_audio,
    opened,
    probe,
)

# Block size for copying canonical WAV: large enough that per-block overhead vanishes.
_COPY_BLOCK_BYTES = 1 << 16


def pcm_blocks(source: AudioSource, info: AudioInfo) -> Iterator[bytes]:
    """Yield the recording as canonical PCM, a block at a time (never the whole file)."""
    if info.pcm_range is not None:
        return _copy_range(source, *info.pcm_range)
    return _decode(source)


def decode_bytes(data: bytes) -> bytes:
    """Canonical PCM of a whole audio file held in memory, such as a chunk's FLAC.

    Raises an AudioError, as probe does, when `data` is not audio we can read. Meant for
    chunk-sized audio: the result is held in memory.
    """
    audio = io.BytesIO(data)
    return b"".join(pcm_blocks(audio, probe(audio)))


def _copy_range(source: AudioSource, offset: int, length: int) -> Iterator[bytes]:
    with opened(source) as f:
        f.seek(offset)
        while length > 0:
            block = f.read(min(_COPY_BLOCK_BYTES, length))
            if not block:
                return  # the file shrank since probe; split_file's length check reports it
            length -= len(block)
            yield block


def _decode(source: AudioSource) -> Iterator[bytes]:
    # Passes frames that are already canonical (16 kHz mono s16 FLAC) through untouched, so
    # their PCM, and therefore their chunk hashes, equal those of the same audio in WAV.
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    decoded = 0
    with open_audio(source) as (container, stream):
        try:
            for packet in container.demux(stream):  # ends with an empty packet that flushes
                try:
                    frames = packet.decode()
                except av.InvalidDataError:
                    # A damaged packet is skipped, as FFmpeg itself does. Too much skipped
                    # shows as a shortfall against the header, which split_file rejects.
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        decoded += out.samples
                        yield _pcm(out)
            for out in resampler.resample(None):
                yield _pcm(out)
        except av.FFmpegError as exc:
            raise InvalidAudioError(
                f"The audio is damaged about {human_duration(decoded / SAMPLE_RATE)} "
                "into the recording and cannot be decoded past that point."
            ) from exc


def _pcm(frame: AudioFrame) -> bytes:
    # Planes are padded for alignment: only the first samples * width bytes are audio.
    with memoryview(frame.planes[0]) as plane:
        return plane[: frame.samples * SAMPLE_WIDTH].tobytes()
