"""Audio input: probe and limit-check an upload, then split it into FLAC chunks at pauses.

info = probe(path)                      # AudioError on bad input, before any work
check_limits(info, max_duration_s=..., max_bytes=...)
for chunk in split_file(path, SplitOptions(concurrency=3), info=info):
    ...  # chunk.flac, chunk.pcm_sha256, chunk.has_speech, absolute start_ms / end_ms
"""

from sttpipe.audio.decode import decode_bytes
from sttpipe.audio.errors import (
    AudioError,
    AudioTooLargeError,
    AudioTooLongError,
    EmptyAudioError,
    InvalidAudioError,
    LimitExceededError,
    NoSpeechError,
    TruncatedAudioError,
    UnsupportedCodecError,
)
from sttpipe.audio.pcm import (
    API_MAX_BYTES,
    BYTES_PER_SECOND,
    SAMPLE_RATE,
    canonical_pcm_sha256,
    encode_flac,
)
from sttpipe.audio.probe import SUPPORTED_CODECS, AudioInfo, check_limits, probe
from sttpipe.audio.split import (
    MAX_CHUNK_S_LIMIT,
    AudioChunk,
    SplitOptions,
    find_pause_cut,
    split_file,
    target_chunk_seconds,
)

__all__ = [
    "API_MAX_BYTES",
    "BYTES_PER_SECOND",
    "MAX_CHUNK_S_LIMIT",
    "SAMPLE_RATE",
    "SUPPORTED_CODECS",
    "AudioChunk",
    "AudioError",
    "AudioInfo",
    "AudioTooLargeError",
    "AudioTooLongError",
    "EmptyAudioError",
    "InvalidAudioError",
    "LimitExceededError",
    "NoSpeechError",
    "SplitOptions",
    "TruncatedAudioError",
    "UnsupportedCodecError",
    "canonical_pcm_sha256",
    "check_limits",
    "decode_bytes",
    "encode_flac",
    "find_pause_cut",
    "probe",
    "split_file",
    "target_chunk_seconds",
]
