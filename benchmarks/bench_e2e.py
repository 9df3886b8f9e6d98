"""End-to-end speed: the whole pipeline on the local cloud against the sequential code it
replaces, side by side in one run.

Builds a long recording itself (default 55 minutes, 16 kHz mono WAV, about 105 MB): flite
sentences in four voices with pauses between them, every minute at its own volume so that no two
minutes hold the same samples (no chunk of a job answers another from the cache). The local
speech server runs without a recognition engine ("none") and answers after a latency model
(default 0.5 s + 0.01 s per audio second, which reproduces the seed system's documented 48-60 s
for 100 MB), so the figures are the pipeline's and the model's, not this CPU's decoding.

Printed, per run:
  sequential   the seed's algorithm: the WAV cut into pieces under 25 MB, sent one after
               another through the pipeline's own speech client;
  pipeline     the local cloud at default settings (fleet limit 4), then at a larger fleet
               limit: the first job after the cloud started, then a warm one (another recording,
               so no cache hit), then the warm recording again (known: hashed, not uploaded).
Columns: wall time from the command's start to the final status; API calls; bytes uploaded; the
ideal critical path for the chunking the splitter chose (the upload + the calls it made, packed
on the fleet limit longest first, each as long as the latency model says, from the moment the
first chunk is cut (the split's share up to its end: chunks are handed to the workers as they
are cut), but the last chunk's call not before the split has ended + its merge: what is left is
the pipeline's own time) and measured/ideal; and the time per stage (upload,
split, from its end to the first speech API call (negative: calls began while it still split),
from that call to the last answer, from the last answer to the merge, merge).

    .venv/bin/python benchmarks/bench_e2e.py [--minutes 55] [--limits 4,10]
        [--latency-s 0.5] [--latency-per-audio-s 0.01]
"""

from __future__ import annotations

import argparse
import heapq
import random
import re
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bench_quality import SENTENCES, VOICES
from sttpipe_testing.audio import flite_available, silence, speak, write_wav

from localcloud.client import PipelineClient
from localcloud.pipeline import LocalPipeline
from localcloud.speech_server.app import DEFAULT_MODEL, MAX_UPLOAD_BYTES
from sttpipe.audio import SAMPLE_RATE
from sttpipe.speech.cloudru import CloudRuTranscriber

BYTES_PER_SECOND = 2 * SAMPLE_RATE
PAUSES_S = (0.3, 0.5, 0.7, 1.0, 1.5)
# The seed kept its pieces under the API's 25 MB; leave room for the multipart framing.
PIECE_BYTES = MAX_UPLOAD_BYTES - 64 * 1024
WORKER_PROCESSES_OVER_LIMIT = 2  # a worker fetching or storing while others call the API


def clips() -> list[np.ndarray]:
    """Every sentence in every voice, as int16 samples (flite runs two at a time)."""
    jobs = [(s, v) for s in SENTENCES for v in VOICES]
    with ThreadPoolExecutor(2) as pool:
        return [np.frombuffer(p, np.int16) for p in pool.map(lambda j: speak(*j), jobs)]


def minutes_of_speech(spoken: list[np.ndarray], minutes: int, variant: int) -> Iterator[np.ndarray]:
    """`minutes` one-minute blocks of sentences and pauses, each at a volume of its own."""
    rng = random.Random(variant)
    for minute in range(minutes):
        gain = 0.45 + 0.5 * rng.random() + minute * 1e-4  # never twice the same
        block: list[np.ndarray] = []
        size = 0
        while size < 60 * SAMPLE_RATE:
            clip = spoken[rng.randrange(len(spoken))]
            pause = np.frombuffer(silence(rng.choice(PAUSES_S)), np.int16)
            block += [clip, pause]
            size += clip.size + pause.size
        yield (np.concatenate(block)[: 60 * SAMPLE_RATE] * gain).astype(np.int16)


def build_recording(path: Path, spoken: list[np.ndarray], minutes: int, variant: int) -> Path:
    write_wav(path, (m.tobytes() for m in minutes_of_speech(spoken, minutes, variant)))
    return path


@dataclass(frozen=True)
class Figures:
    name: str
    wall_s: float
    calls: int
    uploaded_bytes: int
    ideal_s: float | None = None
    stages: str = ""

    def row(self) -> str:
        ratio = f"{self.wall_s / self.ideal_s:5.2f}x" if self.ideal_s else "     -"
        ideal = f"{self.ideal_s:6.1f}" if self.ideal_s else "     -"
        return (
            f"{self.name:<34} {self.wall_s:7.1f} {self.calls:6d} {self.uploaded_bytes / 1e6:8.1f} "
            f"{ideal} {ratio}  {self.stages}"
        )


HEADER = (
    f"{'run':<34} {'wall s':>7} {'calls':>6} {'sent MB':>8} {'ideal':>6} {'m/i':>6}  stages (s)"
)


def packed_s(call_seconds: list[float], limit: int) -> float:
    """The calls on `limit` slots, longest first: the shortest time they can take in waves."""
    slots = [0.0] * limit
    for seconds in sorted(call_seconds, reverse=True):
        heapq.heappush(slots, heapq.heappop(slots) + seconds)
    return max(slots)


def sequential(pipeline: LocalPipeline, recording: Path) -> Figures:
    """The seed: pieces under 25 MB, one after another, through the same speech client."""
    pipeline.speech.reset_stats()
    api_key = pipeline.speech.api_key
    started = time.monotonic()
    pcm = recording.read_bytes()[44:]  # canonical WAV: a 44-byte header
    piece = PIECE_BYTES - PIECE_BYTES % 2
    with (
        httpx.Client(base_url=pipeline.speech.base_url) as http,
        tempfile.TemporaryDirectory() as tmp,
    ):
        client = CloudRuTranscriber(
            http, model=DEFAULT_MODEL, api_key=lambda: api_key, read_timeout_s=600
        )
        for n, at in enumerate(range(0, len(pcm), piece)):
            wav = Path(tmp) / f"piece-{n}.wav"
            write_wav(wav, pcm[at : at + piece])
            client.transcribe(wav.read_bytes(), wav.name, language="en")
    stats = pipeline.speech.stats()
    return Figures("sequential (seed)", time.monotonic() - started, stats["requests_total"], 0)


class PipelineRun:
    def __init__(self, pipeline: LocalPipeline, limit: int, latency: tuple[float, float]) -> None:
        self.pipeline = pipeline
        self.limit = limit
        self.fixed_s, self.per_audio_s = latency
        self.client = PipelineClient(pipeline.api_url, token=pipeline.token())

    def job(self, name: str, recording: Path) -> Figures:
        self.pipeline.speech.reset_stats()
        started = time.monotonic()
        submitted = self.client.submit(recording, language="en")
        uploaded = time.monotonic() - started
        job = self.client.wait(submitted.job_id, timeout_s=1800, poll_s=0.05)
        wall = time.monotonic() - started
        if job["status"] != "COMPLETED":
            raise RuntimeError(f"{name}: job ended {job['status']}: {job.get('failure_reason')}")
        calls = self.pipeline.speech.stats()["calls"]
        stats: dict[str, Any] = job["stats"]
        split_s = float(stats.get("split_seconds", 0.0))
        merge_s = float(stats.get("merge_seconds") or 0.0)
        ideal = None
        stages = f"upload {uploaded:.1f}, split {split_s:.1f}"
        if calls:
            audio = [a for _, _, a in calls]
            service = [self.fixed_s + self.per_audio_s * a for a in audio]
            chunks = job["chunks"]
            first_cut_s = split_s * chunks[0]["end_ms"] / chunks[-1]["end_ms"]
            last_s = (chunks[-1]["end_ms"] - chunks[-1]["start_ms"]) / 1000
            last_call_s = self.fixed_s + self.per_audio_s * last_s
            calls_s = max(first_cut_s + packed_s(service, self.limit), split_s + last_call_s)
            ideal = uploaded + calls_s + merge_s
            first_call = min(start for start, _, _ in calls)
            last_answer = max(end for _, end, _ in calls)
            stages += (
                f", to 1st call {first_call - uploaded - split_s:.1f}, calls "
                f"{last_answer - first_call:.1f} ({len(calls)} of ~{sum(audio) / len(audio):.0f} s"
                f" audio), after {wall - last_answer - merge_s:.1f}, merge {merge_s:.1f}"
            )
            stages += f"; splitter peak {self.splitter_peak_mb()} MB"
        return Figures(name, wall, len(calls), submitted.uploaded_bytes, ideal, stages)

    def splitter_peak_mb(self) -> int:
        """The last splitter invocation's peak memory, from its REPORT line."""
        log = (self.pipeline.cloud.log_dir / "SplitterFunction.log").read_text()
        return int(re.findall(r"Max Memory Used: (\d+) MB", log)[-1])

    def close(self) -> None:
        self.client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=55)
    parser.add_argument("--limits", default="4,10", help="fleet limits; the first is the default")
    parser.add_argument("--latency-s", type=float, default=0.5)
    parser.add_argument("--latency-per-audio-s", type=float, default=0.01)
    args = parser.parse_args()
    if not flite_available():
        raise SystemExit("flite is needed to build the recording: sudo apt-get install flite")
    limits = [int(v) for v in args.limits.split(",")]
    latency = (args.latency_s, args.latency_per_audio_s)

    with tempfile.TemporaryDirectory() as tmp:
        spoken = clips()
        first = build_recording(Path(tmp) / "first.wav", spoken, args.minutes, variant=1)
        warm = build_recording(Path(tmp) / "warm.wav", spoken, args.minutes, variant=2)
        print(
            f"recording: {args.minutes} min, {first.stat().st_size / 1e6:.1f} MB WAV; speech API "
            f"model: {args.latency_s:g} s + {args.latency_per_audio_s:g} s per audio second"
        )
        rows: list[Figures] = []
        for n, limit in enumerate(limits):
            with LocalPipeline(
                emulator="moto",
                engine="none",
                speech_workers=2 * limit,
                concurrency={"WorkerFunction": limit + WORKER_PROCESSES_OVER_LIMIT},
                function_env={"STT_SPEECH_LIMIT": str(limit)},
                log_dir=Path(tmp) / f"logs-{limit}",
                prewarm=True,  # as `stt up` does
            ) as pipeline:
                pipeline.speech.control(
                    latency_s=args.latency_s, latency_per_audio_s=args.latency_per_audio_s
                )
                if n == 0:
                    rows.append(sequential(pipeline, first))
                run = PipelineRun(pipeline, limit, latency)
                label = f"limit {limit}" + (" (default)" if n == 0 else "")
                rows.append(run.job(f"pipeline, {label}, first job", first))
                rows.append(run.job(f"pipeline, {label}, warm", warm))
                rows.append(run.job(f"pipeline, {label}, known recording", warm))
                run.close()
        print(HEADER)
        for row in rows:
            print(row.row())
        baseline = rows[0].wall_s
        speedups = (
            f"{r.name.removeprefix('pipeline, ')} {baseline / r.wall_s:.2f}x" for r in rows[1:]
        )
        print("speed-up over sequential: " + ", ".join(speedups))


if __name__ == "__main__":
    main()
