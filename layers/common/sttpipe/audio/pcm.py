"""The canonical audio form (16 kHz mono signed 16-bit little-endian PCM), its hash and FLAC.

Every input is decoded to this one form before anything else happens, so a chunk's identity
(`canonical_pcm_sha256`) depends on the sound alone, not on the container it arrived in.
"""

from __future__ import annotations

import hashlib
import io

import av

SAMPLE_RATE = 16_000
SAMPLE_WIDTH = 2  # bytes per sample (s16le)
BYTES_PER_SECOND = SAMPLE_RATE * SAMPLE_WIDTH

# The speech API answers 413 above 25 MB (decimal, to be safe).
API_MAX_BYTES = 25_000_000


def flac_seconds(data: bytes) -> float | None:
    """The duration a FLAC file's STREAMINFO block states, None when `data` is no FLAC."""
    # "fLaC", a 4-byte block header, then STREAMINFO, whose bytes 10-17 (file bytes 18-25) hold
    # the sample rate (20 bits), channels and bits per sample (8), total samples (36).
    if len(data) < 26 or data[:4] != b"fLaC" or data[4] & 0x7F != 0:
        return None
    info = int.from_bytes(data[18:26], "big")
    rate = info >> 44
    samples = info & ((1 << 36) - 1)
    return samples / rate if rate and samples else None


# Canonical PCM, whole or in consecutive parts (views into a larger buffer, never copied here).
Pcm = bytes | bytearray | memoryview


def canonical_pcm_sha256(*parts: Pcm) -> str:
    """Hex SHA-256 of canonical PCM, given whole or in parts: the chunk's cache and storage
    key."""
    digest = hashlib.sha256()
    for part in parts:
        _check_pcm(part)
        digest.update(part)
    return digest.hexdigest()


ENCODE_FRAME_SAMPLES = 10 * SAMPLE_RATE


def encode_flac(*parts: Pcm) -> bytes:
    """Encode canonical PCM, given whole or in consecutive parts, as a FLAC file in memory:
    lossless, about half the size of WAV."""
    for part in parts:
        _check_pcm(part)
    out = io.BytesIO()
    # No 8 KB padding block: nobody edits these files' tags, and silent chunks shrink to ~100 B.
    with av.open(out, "w", format="flac", options={"metadata_header_padding": "0"}) as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        # In frames of at most ENCODE_FRAME_SAMPLES, from views of the parts: a copy of a 300 s
        # chunk would be another 9.6 MB held while it is encoded.
        pts = 0
        for part in parts:
            with memoryview(part) as view:
                for start in range(0, len(view), ENCODE_FRAME_SAMPLES * SAMPLE_WIDTH):
                    block = view[start : start + ENCODE_FRAME_SAMPLES * SAMPLE_WIDTH]
                    samples = len(block) // SAMPLE_WIDTH
                    frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
                    frame.planes[0].update(bytes(block))  # a frame's worth at a time
                    block.release()
                    frame.sample_rate = SAMPLE_RATE
                    frame.pts = pts
                    pts += samples
                    container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


def _check_pcm(pcm: Pcm) -> None:
    if len(pcm) % SAMPLE_WIDTH:
        raise ValueError(f"canonical PCM has whole 16-bit samples; got {len(pcm)} bytes")
