"""Speech API calls saved by not sending chunks without speech.

Builds a recording with long silent stretches, as a meeting with breaks or a lecture hall
between talks sounds: bursts of flite speech (a few sentences each) separated by gaps of 30 s to
3 min, with faint room noise under everything (not digital silence). Splits it with the
production settings and prints how many chunks there were, how many had speech (the calls made)
against the calls a splitter without the speech check would make, and how much of the spoken
sentences fell into chunks that are not sent. With --transcribe-silent it also sends the skipped
chunks to the local engine and prints what it would have invented for them.

    .venv/bin/python benchmarks/bench_silence.py [--bursts 12] [--noise 200] [--seed 7]
        [--transcribe-silent]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_quality import SENTENCES, VOICES, as_samples
from sttpipe_testing.audio import flite_available, silence, speak, write_wav

from sttpipe.audio import SAMPLE_RATE, SplitOptions, decode_bytes, split_file
from sttpipe.config import Settings
from sttpipe.transcript.text import normalize


def build(bursts: int, noise_sigma: float, seed: int) -> tuple[bytes, list[tuple[int, int]]]:
    """(canonical PCM, the [start, end) ms of every spoken sentence)."""
    rng = random.Random(seed)
    sentences = iter(SENTENCES * math.ceil(bursts * 5 / len(SENTENCES)))
    pieces: list[bytes] = []
    spoken: list[tuple[int, int]] = []
    at = 0  # samples so far

    def add(pcm: bytes) -> None:
        nonlocal at
        pieces.append(pcm)
        at += len(pcm) // 2

    for _ in range(bursts):
        add(silence(rng.uniform(30, 180)))  # the break before someone speaks
        voice = rng.choice(VOICES)
        for _ in range(rng.randint(2, 5)):
            pcm = speak(next(sentences), voice)
            spoken.append((at * 1000 // SAMPLE_RATE, (at + len(pcm) // 2) * 1000 // SAMPLE_RATE))
            add(pcm)
            add(silence(rng.choice((0.4, 0.6, 0.8, 1.2))))
    add(silence(rng.uniform(30, 180)))
    signal = np.frombuffer(b"".join(pieces), dtype=np.int16).astype(np.float64)
    signal += np.random.default_rng(seed).normal(0.0, noise_sigma, signal.size)
    return np.clip(np.round(signal), -32768, 32767).astype("<i2").tobytes(), spoken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=int, default=12, help="stretches of speech")
    parser.add_argument(
        "--noise", type=float, default=200.0, help="room noise, standard deviation in samples"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--transcribe-silent", action="store_true")
    args = parser.parse_args()
    if not flite_available():
        sys.exit("needs Debian's flite (apt-get install flite)")

    pcm, spoken = build(args.bursts, args.noise, args.seed)
    duration_s = len(pcm) / 2 / SAMPLE_RATE
    speech_s = sum(end - start for start, end in spoken) / 1000
    settings = Settings()  # the production defaults
    options = SplitOptions(
        max_chunk_s=settings.max_chunk_s,
        min_chunk_s=settings.min_chunk_s,
        concurrency=settings.speech_limit,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "meeting.wav"
        write_wav(path, pcm)
        started = time.perf_counter()
        chunks = list(split_file(path, options))
        split_s = time.perf_counter() - started

    sent = [c for c in chunks if c.has_speech]
    skipped = [c for c in chunks if not c.has_speech]
    sent_s = sum(c.end_ms - c.start_ms for c in sent) / 1000
    # Sentence time outside every chunk sent (flite pads each sentence with a little silence).
    missed = [
        (end - start) - sum(max(0, min(end, c.end_ms) - max(start, c.start_ms)) for c in sent)
        for start, end in spoken
    ]
    print(
        f"recording: {duration_s / 60:.1f} min, {len(spoken)} sentences in {args.bursts} bursts "
        f"({speech_s / 60:.1f} min of speech, {speech_s / duration_s:.0%}), room noise "
        f"sigma {args.noise:g} ({20 * math.log10(args.noise / 32768):.0f} dBFS); split in "
        f"{split_s:.1f} s"
    )
    print(
        f"chunks: {len(chunks)}; with speech (API calls): {len(sent)}; skipped as silent: "
        f"{len(skipped)} = {len(skipped) / len(chunks):.0%} of calls saved"
    )
    print(
        f"audio sent: {sent_s / 60:.1f} min of {duration_s / 60:.1f} "
        f"({1 - sent_s / duration_s:.0%} not sent)"
    )
    print(
        f"without the speech check: {len(chunks)} calls; fixed 30 s cuts: "
        f"{math.ceil(duration_s / 30)} calls"
    )
    print(
        f"sentence time not sent: {sum(missed)} ms in total, at most {max(missed)} ms of one "
        f"sentence; {sum(1 for m in missed if m == 0)} of {len(spoken)} sentences sent whole"
    )

    if args.transcribe_silent:
        from localcloud.speech_server import load_engine

        engine = load_engine("faster-whisper", workers=1)
        answers = [
            engine.transcribe(
                as_samples(decode_bytes(chunk.flac)), language=None, prompt=None, temperature=0.0
            ).text.strip()
            for chunk in skipped
        ]
        worded = [a for a in answers if normalize(a)]
        print(
            f"Whisper tiny.en on the {len(skipped)} skipped chunks: "
            f"{sum(1 for a in answers if a)} non-empty answers, {len(worded)} with words: "
            + "; ".join(repr(a[:60]) for a in dict.fromkeys(worded))
        )


if __name__ == "__main__":
    main()
