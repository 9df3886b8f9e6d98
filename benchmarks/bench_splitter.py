"""Splitter throughput (x real time) and peak memory on long inputs.

Builds a ~55-minute recording by repeating samples/sample.flac (real speech with real pauses),
writes it as 16 kHz mono WAV (the copy fast path) and as 44.1 kHz stereo MP3 (decode and
resample), then splits each in a fresh subprocess, so that its peak RSS is the splitter's own
and not the generator's. Prints one line per input.

    .venv/bin/python benchmarks/bench_splitter.py [--minutes 55] [--keep DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample.flac"


def child(path: str) -> None:
    """Run in the subprocess: split one file and report figures as JSON on stdout."""
    from sttpipe.audio import SplitOptions, probe, split_file

    baseline_mb = peak_rss_mb()  # after the imports
    started = time.perf_counter()
    info = probe(path)
    probed = time.perf_counter()
    chunks = silent = flac_bytes = longest_ms = 0
    for chunk in split_file(path, SplitOptions(concurrency=3), info=info):
        chunks += 1
        silent += not chunk.has_speech
        flac_bytes += len(chunk.flac)
        longest_ms = max(longest_ms, chunk.end_ms - chunk.start_ms)
    finished = time.perf_counter()
    peak_mb = peak_rss_mb()
    json.dump(
        {
            "duration_s": info.duration_s,
            "size_mb": info.size_bytes / 1e6,
            "probe_s": probed - started,
            "split_s": finished - probed,
            "chunks": chunks,
            "silent": silent,
            "flac_mb": flac_bytes / 1e6,
            "longest_chunk_s": longest_ms / 1000,
            "baseline_rss_mb": baseline_mb,
            "peak_rss_mb": peak_mb,
        },
        sys.stdout,
    )


def peak_rss_mb() -> float:
    """Peak RSS of this process. Linux's getrusage ru_maxrss carries over the parent's peak
    across fork + exec; VmHWM belongs to the new address space, so prefer it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_inputs(directory: Path, minutes: float) -> list[Path]:
    from sttpipe_testing.audio import read_pcm, write_encoded, write_wav

    speech = read_pcm(SAMPLE)
    repeats = math.ceil(minutes * 60 * 32000 / len(speech))
    wav, mp3 = directory / "long.wav", directory / "long.mp3"
    write_wav(wav, itertools.repeat(speech, repeats))
    write_encoded(
        mp3,
        itertools.repeat(speech, repeats),
        "mp3",
        "libmp3lame",
        rate=44100,
        layout="stereo",
        codec_options={"b": "128k"},
    )
    return [wav, mp3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=55.0)
    parser.add_argument("--keep", type=Path, help="write the inputs here and keep them")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        inputs = make_inputs(directory, args.minutes)
        print(f"generated inputs in {time.perf_counter() - started:.1f} s (not measured)")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        for path in inputs:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            r = json.loads(out)
            total = r["probe_s"] + r["split_s"]
            print(
                f"{path.name:9} {r['duration_s'] / 60:5.1f} min {r['size_mb']:6.1f} MB | "
                f"probe {r['probe_s'] * 1000:5.0f} ms, split {r['split_s']:5.2f} s "
                f"= {r['duration_s'] / total:5.0f}x real time | {r['chunks']} chunks "
                f"({r['silent']} silent, longest {r['longest_chunk_s']:.1f} s), "
                f"FLAC {r['flac_mb']:.1f} MB | peak RSS {r['peak_rss_mb']:.0f} MB "
                f"(after imports {r['baseline_rss_mb']:.0f} MB)"
            )


if __name__ == "__main__":
    main()
