"""Back-pressure figures on the whole local pipeline (moto, real handlers in function-host
processes, the fleet-wide limit on the real Redis, the local speech server on faster-whisper).

The speech server is given a Cloud.ru-like latency (no published figure: 1 s per call plus
0.1 s per audio second, Whisper large on a GPU) and a 429 rate. Printed, per run:

1. Load: N normal jobs (variants of the one-minute sample, so no cache hit) at the same time:
   completion time of each job, speech API calls against the minimum (one per chunk), 429s,
   and the most calls the server saw in flight against the configured limit.
2. Priority: L low-priority jobs submitted, then one high-priority job: how long each took
   from its submission, and the high job's rank among the finishers.

    .venv/bin/python benchmarks/bench_resilience.py [--jobs 4] [--low 4] [--rate-429 0.2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from array import array
from collections.abc import Iterator
from itertools import count
from pathlib import Path

from sttpipe_testing.audio import read_pcm, write_wav

from localcloud.cli import SAMPLE
from localcloud.client import PipelineClient
from localcloud.pipeline import LocalPipeline

_gains = count(1)


def variants(directory: Path, n: int) -> Iterator[Path]:
    samples = array("h", read_pcm(SAMPLE))
    for _ in range(n):
        gain = 1.0 - 0.01 * next(_gains)
        path = directory / f"sample-{gain:.2f}.wav"
        write_wav(path, array("h", (int(s * gain) for s in samples)).tobytes())
        yield path


def run_all(client: PipelineClient, jobs: list[tuple[str, float]]) -> dict[str, tuple[float, dict]]:
    """job id -> (seconds from its submission to its end, the finished job)."""
    done: dict[str, tuple[float, dict]] = {}

    def follow(job_id: str, submitted: float) -> None:
        job = client.wait(job_id, timeout_s=900)
        done[job_id] = (time.monotonic() - submitted, job)

    threads = [threading.Thread(target=follow, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done


def submit(client: PipelineClient, path: Path, priority: str) -> tuple[str, float]:
    started = time.monotonic()
    return client.submit(path, language="en", priority=priority).job_id, started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--low", type=int, default=4)
    parser.add_argument("--rate-429", type=float, default=0.2)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalPipeline(
            emulator="moto",
            concurrency={"WorkerFunction": args.workers},
            function_env={"STT_SPEECH_LIMIT": str(args.limit)},
            log_dir=Path(tmp) / "logs",
        ) as pipeline,
    ):
        client = PipelineClient(pipeline.api_url, token=pipeline.token())
        files = list(variants(Path(tmp), args.jobs + args.low + 1))
        print(f"limit {args.limit}, {args.workers} worker processes, logs {pipeline.cloud.log_dir}")

        pipeline.speech.control(latency_s=1.0, latency_per_audio_s=0.1, rate_429=args.rate_429)
        pipeline.speech.reset_stats()
        started = time.monotonic()
        done = run_all(client, [submit(client, f, "normal") for f in files[: args.jobs]])
        wall = time.monotonic() - started
        stats = pipeline.speech.stats()
        chunks = sum(
            sum(1 for c in job["chunks"] if c["state"] != "SILENT") for _, job in done.values()
        )
        seconds = sorted(s for s, _ in done.values())
        print(f"\n1. {args.jobs} normal jobs at once, {args.rate_429:.0%} of calls answered 429")
        print(f"   statuses: {sorted(job['status'] for _, job in done.values())}")
        print(
            f"   job completion: median {statistics.median(seconds):.1f} s, max {seconds[-1]:.1f} s"
        )
        print(f"   all done in {wall:.1f} s")
        print(f"   API calls {stats['requests_total']} for {chunks} chunks (minimum {chunks}),")
        print(f"   by status {stats['by_status']}, max in flight {stats['max_in_flight']}")

        pipeline.speech.control(rate_429=0.0)
        pipeline.speech.reset_stats()
        low_files, high_file = files[args.jobs : -1], files[-1]
        low = [submit(client, f, "low") for f in low_files]
        high = submit(client, high_file, "high")
        done = run_all(client, [*low, high])
        order = sorted(done, key=lambda j: done[j][0] + dict([*low, high])[j])
        low_s = sorted(done[j][0] for j, _ in low)
        print(f"\n2. {args.low} low-priority jobs, then one high-priority job (no 429s)")
        print(
            f"   high job: {done[high[0]][0]:.1f} s from submission to the end, "
            f"finished #{order.index(high[0]) + 1} of {len(order)}"
        )
        print(f"   low jobs: {', '.join(f'{s:.1f}' for s in low_s)} s")
        client.close()


if __name__ == "__main__":
    main()
