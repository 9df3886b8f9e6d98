"""Transcript cache figures on this machine's real Redis (L2) and PostgreSQL (L3).

1. Lookup latency p50/p99 per level: each backend alone, and a hit through the tiered cache
   (validation and decoding included).
2. Re-running a long file (default 55 minutes, ~106 MB of 16 kHz WAV): the splitter, workers
   and merge services in this process on in-memory S3/SQS/Step Functions stand-ins, the cache on
   the real servers, the speech API served by the local speech server (faster-whisper tiny.en,
   offline). First run, identical re-upload, and a lossless re-encode (FLAC of the same sound).
3. Hit rate on a replay of uploads with exact duplicates and re-encoded copies (lossless WAV/FLAC
   and lossy MP3/Opus) of the same recordings, with a fake speech API that only counts calls.

    .venv/bin/python benchmarks/bench_cache.py [--minutes 55] [--lookups 3000] [--skip-rerun]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
from pydantic import SecretStr
from sttpipe_testing.audio import read_pcm, write_encoded, write_wav
from sttpipe_testing.fakes import (
    FakeTranscriber,
    InMemoryJobRepository,
    InMemoryObjectStore,
    InMemoryWorkflow,
    started_run,
)

from localcloud.services import ensure_redis, scratch_database
from localcloud.speech_server import SpeechServer
from sttpipe.adapters.migrations import migrate
from sttpipe.cache import TieredCache, build_transcript_cache, redis_for
from sttpipe.cache.base import seal
from sttpipe.cache.transcripts import CHUNKS
from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import ChunkOutcome, ChunkTask, Job, JobStatus, MergeTask
from sttpipe.domain.transcripts import CachedChunk, CachedSegment, CacheLevel
from sttpipe.services.merging import MergeService
from sttpipe.services.splitting import SplitterService
from sttpipe.services.transcribing import WorkerService
from sttpipe.speech.base import Transcriber
from sttpipe.speech.cloudru import build_transcriber

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample.flac"


def percentiles(samples_s: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples_s)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   (n={len(ms)})"


def timed(fn: Callable[[], object], n: int) -> list[float]:
    for _ in range(min(50, n)):  # warm connections and code paths
        fn()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


# ---- 1. lookup latency ----------------------------------------------------------------------


def typical_chunk() -> CachedChunk:
    """What a 30 s chunk of speech comes back as: ~80 words in ~6 segments."""
    words = ("the committee agreed to publish the quarterly figures next week " * 8).split()
    segments = [
        CachedSegment(start_ms=i * 5000, end_ms=i * 5000 + 4800, text=" ".join(words[i::6]))
        for i in range(6)
    ]
    return CachedChunk(text=" ".join(words), segments=segments, language="en")


def bench_lookups(settings: Settings, n: int) -> None:
    cache = build_transcript_cache(settings, redis_for(settings))
    assert cache is not None
    tiered = cache.tiered
    assert tiered.l1 and tiered.l2 and tiered.l3
    key = cache.chunk_key("ab" * 32, tenant="bench", language="en")
    data = seal(key, CHUNKS.encode(typical_chunk()))
    tiered.put(key, typical_chunk(), CHUNKS)
    print(f"1. lookup latency, one {len(data)}-byte chunk entry (hits)")
    for level, backend in (
        (CacheLevel.L1, tiered.l1),
        (CacheLevel.L2, tiered.l2),
        (CacheLevel.L3, tiered.l3),
    ):
        count = n * 10 if level is CacheLevel.L1 else n
        samples = timed(partial(backend.get_many, [key]), count)
        print(f"   {level} backend get          {percentiles(samples)}")
    # Through the tiered cache: a hit at each level (the levels above it left out).
    for level, only in (
        (CacheLevel.L1, TieredCache(l1=tiered.l1)),
        (CacheLevel.L2, TieredCache(l2=tiered.l2)),
        (CacheLevel.L3, TieredCache(l3=tiered.l3)),
    ):
        assert only.get(key, CHUNKS) is not None
        count = n * 10 if level is CacheLevel.L1 else n
        samples = timed(partial(only.get, key, CHUNKS), count)
        print(f"   {level} tiered hit (decoded)   {percentiles(samples)}")
    tiered.close()


# ---- the pipeline's services in one process --------------------------------------------------


@dataclass
class RunResult:
    seconds: float
    api_calls: int
    status: JobStatus
    stats: dict[str, object]
    text: str


class Services:
    """Splitter, `workers` worker containers (each with its own cache L1 and connections) and
    the merge, on in-memory S3/jobs/Step Functions, sharing the cache's Redis and PostgreSQL."""

    def __init__(self, settings: Settings, transcriber: Transcriber, workers: int) -> None:
        self.store = InMemoryObjectStore()
        self.jobs = InMemoryJobRepository()
        self.workflow = InMemoryWorkflow()
        self.settings = settings
        self._caches = [
            build_transcript_cache(settings, redis_for(settings)) for _ in range(workers + 2)
        ]
        self.splitter = SplitterService(
            self.store, self.jobs, self.workflow, settings, self._caches[0]
        )
        self.merger = MergeService(self.store, self.jobs, self.workflow, self._caches[1])
        self._workers = [
            WorkerService(self.store, self.jobs, self.workflow, transcriber, settings, cache)
            for cache in self._caches[2:]
        ]
        self._free = list(self._workers)
        self._lock = threading.Lock()

    def close(self) -> None:
        for cache in self._caches:
            if cache is not None:
                cache.tiered.close()

    @contextmanager
    def _worker(self) -> Iterator[WorkerService]:
        with self._lock:
            worker = self._free.pop()
        try:
            yield worker
        finally:
            with self._lock:
                self._free.append(worker)

    def run(self, body: bytes, filename: str, language: str = "en") -> RunResult:
        started = time.perf_counter()
        job_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        upload_key = keys.upload(job_id, filename)
        self.jobs.add(
            Job(
                job_id=job_id,
                filename=filename,
                language=language,
                upload_key=upload_key,
                created_at=now,
                updated_at=now,
            )
        )
        self.store.put_bytes(upload_key, body, "application/octet-stream")
        outcome = self.splitter.handle_upload(upload_key)
        if outcome.status is JobStatus.TRANSCRIBING:
            execution = started_run(
                self.store,
                next(v for k, v in self.workflow.executions.items() if k.endswith(job_id)),
            )

            def transcribe(chunk_task: ChunkTask) -> ChunkOutcome:
                with self._worker() as worker:
                    worker.process(chunk_task, receive_count=1, remaining_s=250)
                answer = self.workflow.answers[chunk_task.task_token]
                return ChunkOutcome.model_validate_json(answer.output or "")

            tasks = [
                ChunkTask(
                    task_token=self.workflow.open_task(),
                    job_id=job_id,
                    language=language,
                    chunk=chunk,
                )
                for chunk in execution.chunks
            ]
            with ThreadPoolExecutor(len(self._workers)) as pool:
                results = list(pool.map(transcribe, tasks))
            self.merger.merge(
                MergeTask(task_token=self.workflow.open_task(), job_id=job_id, results=results)
            )
        seconds = time.perf_counter() - started
        view = self.jobs.get(job_id)
        assert view is not None
        stats = view.job.stats
        text = self.store.get_bytes(keys.transcript(job_id, "txt")).decode()
        return RunResult(
            seconds,
            int(stats.get("speech_api_calls", 0)),
            view.job.status,
            stats,
            text,
        )


def varied_recording(minutes: float) -> bytes:
    """The sample repeated, each repeat at its own gain: real speech and pauses, and no two
    repeats with the same PCM (they would hit the cache within the first run)."""
    sample = np.frombuffer(read_pcm(SAMPLE), dtype=np.int16).astype(np.float32)
    repeats = max(1, round(minutes * 60 / (len(sample) / 16_000)))
    parts = [
        np.clip(sample * (0.55 + 0.4 * ((i * 37) % 100) / 100), -32768, 32767).astype(np.int16)
        for i in range(repeats)
    ]
    return np.concatenate(parts).tobytes()


def encoded(pcm: bytes, kind: str, workdir: Path) -> bytes:
    path = workdir / f"{uuid.uuid4().hex}.{kind}"
    if kind == "wav":
        write_wav(path, pcm)
    elif kind == "flac":
        write_encoded(path, pcm, "flac", "flac", codec_options={"compression_level": "8"})
    elif kind == "mp3":
        write_encoded(path, pcm, "mp3", "libmp3lame", codec_options={"b": "64k"})
    elif kind == "opus":
        write_encoded(path, pcm, "ogg", "libopus", rate=48_000, codec_options={"b": "32k"})
    else:
        raise ValueError(kind)
    return path.read_bytes()


# ---- 2. re-running a long file --------------------------------------------------------------


def bench_rerun(settings: Settings, minutes: float, workers: int, workdir: Path) -> None:
    pcm = varied_recording(minutes)
    wav = encoded(pcm, "wav", workdir)
    flac = encoded(pcm, "flac", workdir)
    print(
        f"2. re-running a {len(pcm) / 32000 / 60:.0f}-minute recording"
        f" ({len(wav) / 1e6:.0f} MB WAV; {workers} workers; local faster-whisper speech server)"
    )
    with SpeechServer(engine_name="faster-whisper", api_key="bench") as speech:
        api = settings.model_copy(
            update={"speech_base_url": speech.base_url, "speech_api_key": SecretStr("bench")}
        )
        services = Services(api, build_transcriber(api), workers)
        try:
            first = services.run(wav, "long.wav")
            served = speech.stats()["requests_total"]
            print(
                f"   first run        {first.seconds:8.2f} s   {first.api_calls:4d} API calls"
                f"   ({first.stats['chunks']} chunks, {first.status})"
            )
            again = services.run(wav, "long-again.wav")
            print(
                f"   identical file   {again.seconds:8.2f} s   {again.api_calls:4d} API calls"
                f"   ({again.seconds / first.seconds:.2%} of the first run,"
                f" from {again.stats.get('upload_cache_hit')},"
                f" same text: {again.text == first.text})"
            )
            copy = services.run(flac, "long.flac")
            print(
                f"   lossless re-encode {copy.seconds:6.2f} s   {copy.api_calls:4d} API calls"
                f"   ({copy.seconds / first.seconds:.2%}; chunk hits {copy.stats['cache_hits']})"
            )
            print(
                f"   speech server requests after all three: {speech.stats()['requests_total']}"
                f" (after the first run: {served})"
            )
        finally:
            services.close()


# ---- 3. hit rate on a replay ----------------------------------------------------------------


def bench_replay(settings: Settings, workdir: Path) -> None:
    sample = np.frombuffer(read_pcm(SAMPLE), dtype=np.int16).astype(np.float32)
    originals = [
        np.clip(sample * gain, -32768, 32767).astype(np.int16).tobytes()
        for gain in (0.5, 0.6, 0.7, 0.8, 0.9)
    ]
    replay: list[tuple[str, int, str]] = [(f"original {i}", i, "flac") for i in range(5)]
    replay += [("duplicate", i, "flac") for i in (0, 1, 0, 2, 3, 0)]
    replay += [("lossless re-encode", i, kind) for i, kind in ((0, "wav"), (1, "wav"), (2, "wav"))]
    replay += [("lossy re-encode", i, kind) for i, kind in ((0, "mp3"), (3, "opus"))]
    speech = FakeTranscriber(default="some words")
    services = Services(
        settings.model_copy(update={"cache_namespace": f"{settings.cache_namespace}-replay"}),
        speech,
        3,
    )
    bodies: dict[tuple[int, str], bytes] = {}
    by_kind: dict[str, list[int]] = {}
    try:
        for label, index, kind in replay:
            if (index, kind) not in bodies:
                bodies[(index, kind)] = encoded(originals[index], kind, workdir)
            before = len(speech.calls)
            result = services.run(bodies[(index, kind)], f"r{index}.{kind}")
            chunks = int(result.stats["chunks_transcribed"])  # type: ignore[call-overload]
            totals = by_kind.setdefault(
                label.rsplit(" ", 1)[0] if "original" in label else label, [0, 0]
            )
            totals[0] += chunks - (len(speech.calls) - before)
            totals[1] += chunks
    finally:
        services.close()
    print(f"3. replay of {len(replay)} uploads ({len(originals)} recordings of ~64 s)")
    for label, (hits, total) in by_kind.items():
        print(
            f"   {label:<20} {hits:3d}/{total:3d} chunks without an API call ({hits / total:.0%})"
        )
    hits, total = (sum(t[i] for t in by_kind.values()) for i in (0, 1))
    repeat_hits, repeats = (
        sum(t[i] for k, t in by_kind.items() if k != "original") for i in (0, 1)
    )
    print(
        f"   overall hit rate {hits / total:.1%} ({hits}/{total} chunks);"
        f" on the repeats alone {repeat_hits / repeats:.1%} ({repeat_hits}/{repeats})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=55)
    parser.add_argument("--lookups", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--skip-rerun", action="store_true")
    args = parser.parse_args()
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    with scratch_database("sttbench") as database, tempfile.TemporaryDirectory() as tmp:
        migrate(database.url)
        settings = Settings(
            database_url=SecretStr(database.url),
            redis_url=SecretStr(ensure_redis()),
            cache_namespace=namespace,
            default_language="en",
            queue_url_normal="https://sqs/normal",
        )
        try:
            bench_lookups(settings, args.lookups)
            if not args.skip_rerun:
                bench_rerun(settings, args.minutes, args.workers, Path(tmp))
            bench_replay(settings, Path(tmp))
        finally:
            for ns in (namespace, f"{namespace}-replay"):
                cache = build_transcript_cache(
                    settings.model_copy(update={"cache_namespace": ns}), redis_for(settings)
                )
                assert cache is not None and cache.tiered.l2 is not None
                cache.tiered.l2.drop_namespace()
                cache.tiered.close()


if __name__ == "__main__":
    main()
