"""Known speech for tests and benchmarks: Debian's `flite` voices, encoded with PyAV."""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import cast

import av

# container format -> audio codec
FORMATS = {"wav": "pcm_s16le", "flac": "flac", "ogg": "libopus", "mp3": "libmp3lame", "mp4": "aac"}
VOICES = ("slt", "rms", "awb", "kal16")


class FliteMissingError(RuntimeError):
    pass


def speak(text: str, *, voice: str = "slt", fmt: str = "flac", rate: int = 16_000) -> bytes:
    """`text` spoken by a flite voice, as mono audio in `fmt` at `rate` Hz."""
    flite = shutil.which("flite")
    if flite is None:
        raise FliteMissingError("flite is not installed (apt-get install flite)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([flite, "-voice", voice, "-t", text, "-o", str(wav)], check=True)
        return transcode(wav.read_bytes(), fmt=fmt, rate=rate)


def transcode(audio: bytes, *, fmt: str, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with av.open(io.BytesIO(audio), mode="r") as source, av.open(out, "w", format=fmt) as sink:
        stream = cast(av.AudioStream, sink.add_stream(FORMATS[fmt], rate=rate, layout="mono"))
        # Feed the encoder the sample format it defaults to (s16, s16p, fltp... per codec).
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        for frame in source.decode(audio=0):
            for resampled in resampler.resample(frame):
                sink.mux(stream.encode(resampled))
        for resampled in resampler.resample(None):
            sink.mux(stream.encode(resampled))
        sink.mux(stream.encode(None))
    return out.getvalue()
