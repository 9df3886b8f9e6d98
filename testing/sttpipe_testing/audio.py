"""Audio makers for tests, benchmarks and demos; the pipeline itself never imports this.

Everything produces or consumes canonical PCM (16 kHz mono s16le) and writes real files with
real encoders, so tests exercise the same decoders as production.
"""

from __future__ import annotations

import array
import io
import math
import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Mapping

import av
from av.audio.stream import AudioStream

from sttpipe.audio.decode import pcm_blocks
from sttpipe.audio.pcm import SAMPLE_RATE, SAMPLE_WIDTH
from sttpipe.audio.probe import probe


def tone(seconds: float, freq: int = 400, amplitude: float = 0.3) -> bytes:
    """A sine tone; webrtcvad calls it speech in every mode, which makes pauses exact."""
    # One second holds a whole number of cycles of an integer frequency: repeat it.
    second = array.array(
        "h",
        (
            round(amplitude * 32767 * math.sin(2 * math.pi * freq * i / SAMPLE_RATE))
            for i in range(SAMPLE_RATE)
        ),
    ).tobytes()
    return _take(second, seconds)


def silence(seconds: float) -> bytes:
    return bytes(round(seconds * SAMPLE_RATE) * SAMPLE_WIDTH)


def scaled(pcm: bytes, gain: float) -> bytes:
    """The same audio at another volume: the same words, PCM (and so cache keys) never seen."""
    samples = array.array("h", pcm)
    return array.array("h", (int(s * gain) for s in samples)).tobytes()


def _take(pattern: bytes, seconds: float) -> bytes:
    size = round(seconds * SAMPLE_RATE) * SAMPLE_WIDTH
    return (pattern * (size // len(pattern) + 1))[:size]


def read_pcm(path: str | os.PathLike[str]) -> bytes:
    """Decode any supported file to canonical PCM in one piece (fine for test-sized files)."""
    return b"".join(pcm_blocks(path, probe(path)))


def write_wav(path: str | os.PathLike[str], pcm: bytes | Iterable[bytes]) -> None:
    """Canonical PCM WAV, from one piece or from blocks (a long file need not fit in memory)."""
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(SAMPLE_RATE)
        for block in _blocks(pcm):
            w.writeframes(block)


def write_encoded(
    target: str | os.PathLike[str] | io.IOBase,
    pcm: bytes | Iterable[bytes],
    container_format: str,
    codec: str,
    *,
    rate: int = SAMPLE_RATE,
    layout: str = "mono",
    codec_options: Mapping[str, str] | None = None,
    container_options: Mapping[str, str] | None = None,
) -> None:
    """Encode canonical PCM with any FFmpeg encoder PyAV carries, at any rate and layout.

    `target` may be an unseekable stream: the muxer then cannot go back to fill in the header.
    """
    if isinstance(target, str | os.PathLike):
        target = os.fspath(target)
    with av.open(
        target, "w", format=container_format, options=dict(container_options or {})
    ) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        if not isinstance(stream, AudioStream):
            raise ValueError(f"{codec} is not an audio encoder")
        if codec_options:
            stream.codec_context.options = dict(codec_options)
        formats = stream.codec_context.codec.audio_formats or ()
        resampler = av.AudioResampler(
            format=formats[0].name if formats else "s16", layout=layout, rate=rate
        )
        samples = 0
        for block in _blocks(pcm):
            frame = av.AudioFrame(format="s16", layout="mono", samples=len(block) // SAMPLE_WIDTH)
            frame.planes[0].update(block)
            frame.sample_rate = SAMPLE_RATE
            frame.pts = samples
            samples += frame.samples
            for out in resampler.resample(frame):
                container.mux(stream.encode(out))
        for out in resampler.resample(None):
            container.mux(stream.encode(out))
        container.mux(stream.encode(None))


def _blocks(pcm: bytes | Iterable[bytes]) -> Iterable[bytes]:
    blocks = [pcm] if isinstance(pcm, bytes) else pcm
    return (block for block in blocks if block)  # an empty frame has no planes to fill


def flite_available() -> bool:
    return shutil.which("flite") is not None


def speak(text: str, voice: str = "slt") -> bytes:
    """Canonical PCM of Debian's flite saying `text` (voices slt, rms, awb, kal16: 16 kHz)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "speech.wav")
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", out], check=True)
        with wave.open(out) as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (SAMPLE_RATE, 1, 2):
                raise ValueError(f"flite voice {voice} does not speak 16 kHz mono s16")
            return w.readframes(w.getnframes())


def write_video_without_audio(path: str | os.PathLike[str]) -> None:
    """A tiny MP4 with one video stream and no audio track (an upload the splitter refuses)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        for i in range(5):
            frame = av.VideoFrame(32, 32, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
