"""Word error rate of the stitched transcript against whole-file and fixed 10 s cutting.

Builds recordings of 4.5 minutes of multi-voice flite speech (voices slt, rms, awb, kal16,
changing every sentence or two; pauses of varied length), one per seed, each also with white
noise added at the given SNRs. Several seeds, since a small engine's errors move from one
recording to the next by a point or two: compare the means.
Each is transcribed three ways with the local engine, called directly:
  stitched  the splitter's chunks (production settings), silent ones skipped, each chunk sent as
            its FLAC, results assembled by sttpipe.transcript as the merge does;
  whole     the whole recording in one call (the engine windows it itself);
  fixed-10s cuts every 10 s regardless of speech, every piece sent, texts assembled.
Prints a line per recording, then the mean WER of each method. The issue's target: stitched no
worse than whole-file + 0.5 points.

    .venv/bin/python benchmarks/bench_quality.py [--engine pocketsphinx] [--snr-db 15 ...]
        [--seeds 1,2,3]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sttpipe_testing.audio import flite_available, silence, speak, write_wav

from localcloud.cli import word_error_rate
from localcloud.speech_server import Engine, load_engine
from sttpipe.audio import SAMPLE_RATE, SplitOptions, decode_bytes, encode_flac, split_file
from sttpipe.config import Settings
from sttpipe.domain.models import ChunkTranscript, Segment
from sttpipe.domain.transcripts import RelativeSegment, Transcript, Transcription
from sttpipe.speech.resplit import ResplittingTranscriber
from sttpipe.transcript import assemble

VOICES = ("slt", "rms", "awb", "kal16")
FIXED_S = 10.0

# Plain sentences (no numbers, so that no engine's number formatting counts as an error).
SENTENCES = (
    "The weather was calm and clear on the morning of our trip.",
    "We packed our bags and walked down the hill to the station.",
    "The old library opens its doors early on weekdays.",
    "My brother found a small wooden box under the stairs.",
    "Nobody knew who had left the lights on in the kitchen.",
    "The river runs slowly past the mill and into the lake.",
    "She painted the fence white before the summer rain came.",
    "A flock of birds rose from the field and turned toward the sea.",
    "The teacher asked the class to read the first chapter again.",
    "We bought apples and cheese at the market by the church.",
    "The bus was late because of the snow on the mountain road.",
    "He fixed the broken chair with glue and a few nails.",
    "The children built a tall tower out of sand and shells.",
    "Our neighbour grows tomatoes and beans in her garden.",
    "The museum keeps old maps of the town in a quiet room.",
    "I could hear the bells ringing from across the valley.",
    "The cat slept all afternoon on the warm window sill.",
    "They opened a new bakery at the corner of our street.",
    "The doctor told him to rest and drink plenty of water.",
    "Every evening the fishermen pull their boats onto the beach.",
    "The wind blew the papers off the desk and onto the floor.",
    "We followed a narrow path through the forest to the lake.",
    "The concert hall was full long before the music began.",
    "She wrote a long letter to her friend in the city.",
    "The farmer drove his tractor slowly along the muddy lane.",
    "Please close the gate so the sheep do not run away.",
    "The kettle whistled and my mother poured the tea.",
    "A strong light shone from the top of the tower at night.",
    "The students waited outside the hall for the results.",
    "He keeps his bicycle in the shed behind the house.",
    "The train crossed a high bridge over the deep green river.",
    "We watched the sun go down behind the distant hills.",
    "The shop sells fresh bread and cakes every morning.",
    "Her grandfather tells wonderful stories about the sea.",
    "The road was closed after a tree fell across it.",
    "I lost my keys somewhere between the office and home.",
    "The garden looks beautiful when the roses are in bloom.",
    "They played football in the park until it was dark.",
    "The captain ordered the crew to lower the sails.",
    "A young fox crossed the road in front of our car.",
    "The hotel room had a view of the harbour and the ships.",
    "We cleaned the house from top to bottom before the guests arrived.",
    "The pilot said we would land a little earlier than planned.",
    "My sister is learning to play the violin this year.",
    "The mountain village is quiet in the middle of winter.",
    "He carried the heavy boxes up the stairs one by one.",
    "The waiter brought us soup and warm bread with butter.",
    "Snow covered the roofs and the streets were very quiet.",
    "The workers finished the new bridge before the autumn.",
    "She always reads the newspaper with her morning coffee.",
    "The little boat rocked gently on the calm blue water.",
    "Our teacher showed us how to find the north star.",
    "The old clock in the hall stopped a long time ago.",
    "We planted young trees along the edge of the field.",
    "The market was busy and full of bright colours and noise.",
    "He told us a funny story about his first day at work.",
    "The path along the cliff is narrow and very steep.",
    "They waited for the storm to pass before leaving the cabin.",
    "The baker told us that the shop opens very early every day.",
    "My friend sent me a picture of the lake from his window.",
    "The horses ran across the meadow toward the old barn.",
    "We heard an owl calling from the trees behind the house.",
    "The evening train was full of people going home from work.",
    "It was a long day but we were happy to see the sea.",
)


@dataclass(frozen=True)
class Recording:
    name: str
    pcm: bytes


def build_speech(seed: int) -> tuple[bytes, list[bytes], str]:
    """(canonical PCM, the spoken parts alone, the reference text)."""
    rng = random.Random(seed)
    voice = 0
    pieces: list[bytes] = [silence(0.5)]
    spoken: list[bytes] = []
    for sentence in SENTENCES:
        if rng.random() < 0.6:  # a new speaker every sentence or two
            voice = (voice + rng.randrange(1, len(VOICES))) % len(VOICES)
        pcm = speak(sentence, VOICES[voice])
        spoken.append(pcm)
        # Mostly ordinary sentence pauses, some run-on sentences, now and then a long gap.
        pause = rng.choice((0.15, 0.3, 0.5, 0.5, 0.7, 0.7, 1.0, 1.0, 1.5, 3.0))
        pieces += [pcm, silence(pause)]
    return b"".join(pieces), spoken, " ".join(SENTENCES)


def with_noise(pcm: bytes, spoken: Iterable[bytes], snr_db: float, seed: int) -> bytes:
    """White noise at `snr_db` below the speech's own power (pauses not counted)."""
    speech = np.frombuffer(b"".join(spoken), dtype=np.int16).astype(np.float64)
    noise_rms = math.sqrt(float(np.mean(speech**2))) / 10 ** (snr_db / 20)
    signal = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    noisy = signal + np.random.default_rng(seed).normal(0.0, noise_rms, signal.size)
    return np.clip(np.round(noisy), -32768, 32767).astype("<i2").tobytes()


def as_samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16)


class EngineApi:
    """The engine behind the speech API's port (a FLAC in, a Transcription out)."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def transcribe(
        self,
        audio: bytes,
        filename: str,
        *,
        language: str | None,
        prompt: str | None = None,
        remaining_s: float | None = None,
    ) -> Transcription:
        text, segments = self._runner.transcribe(decode_bytes(audio))
        return Transcription(text, tuple(RelativeSegment(s, e, t) for s, e, t in segments))


class Runner:
    """Calls the engine directly, as the local speech server would, a few chunks at a time."""

    def __init__(self, engine: Engine, workers: int) -> None:
        self.engine = engine
        self.workers = workers

    def transcribe(self, pcm: bytes) -> tuple[str, list[tuple[float, float, str]]]:
        result = self.engine.transcribe(
            as_samples(pcm), language="en", prompt=None, temperature=0.0
        )
        return result.text, [(s.start_s, s.end_s, s.text) for s in result.segments]

    def chunks(self, pieces: list[tuple[int, int, bytes]]) -> Transcript:
        """Transcribe (start_ms, end_ms, pcm) pieces in parallel, each through the decorator the
        worker puts outermost (a 413 or a repetition loop re-splits the piece); assemble as
        the merge does."""
        api = ResplittingTranscriber(EngineApi(self))

        def one(index: int) -> ChunkTranscript:
            start_ms, end_ms, pcm = pieces[index]
            result = api.transcribe(encode_flac(pcm), f"{index}.flac", language="en")
            return ChunkTranscript(
                index=index,
                start_ms=start_ms,
                end_ms=end_ms,
                text=result.text,
                segments=[
                    Segment(
                        start_ms=start_ms + round(s.start_s * 1000),
                        end_ms=min(end_ms, start_ms + round(s.end_s * 1000)),
                        text=s.text,
                        chunk_index=index,
                    )
                    for s in result.segments
                ],
            )

        with ThreadPoolExecutor(self.workers) as pool:
            results = list(pool.map(one, range(len(pieces))))
        return assemble(results, [])


def stitched(path: Path, runner: Runner, max_chunk_s: float) -> tuple[str, int, float]:
    settings = Settings()  # the production defaults, but for the longest chunk
    options = SplitOptions(
        max_chunk_s=max_chunk_s,
        min_chunk_s=min(settings.min_chunk_s, max_chunk_s),
        concurrency=settings.speech_limit,
    )
    pieces = [
        (c.start_ms, c.end_ms, decode_bytes(c.flac))  # what the API would get: the FLAC
        for c in split_file(path, options)
        if c.has_speech
    ]
    sent = sum(len(p) for _, _, p in pieces) / 2 / SAMPLE_RATE
    return runner.chunks(pieces).text, len(pieces), sent


def whole(pcm: bytes, runner: Runner) -> tuple[str, int, float]:
    return runner.transcribe(pcm)[0], 1, len(pcm) / 2 / SAMPLE_RATE


def fixed(pcm: bytes, runner: Runner) -> tuple[str, int, float]:
    step = int(FIXED_S * SAMPLE_RATE) * 2
    pieces = [
        (at * 1000 // (2 * SAMPLE_RATE), (at + len(part)) * 1000 // (2 * SAMPLE_RATE), part)
        for at in range(0, len(pcm), step)
        if (part := pcm[at : at + step])
    ]
    return runner.chunks(pieces).text, len(pieces), len(pcm) / 2 / SAMPLE_RATE


Method = Callable[[Path, bytes, Runner], tuple[str, int, float]]


def methods(chunk_lengths: list[float]) -> dict[str, Method]:
    """Stitched at each longest chunk (the first is the one compared), whole, fixed cuts."""
    found: dict[str, Method] = {
        f"stitched-{length:g}s": lambda path, pcm, runner, length=length: stitched(
            path, runner, length
        )
        for length in chunk_lengths
    }
    found["whole"] = lambda path, pcm, runner: whole(pcm, runner)
    found[f"fixed-{FIXED_S:g}s"] = lambda path, pcm, runner: fixed(pcm, runner)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--engine", default="faster-whisper", choices=("faster-whisper", "pocketsphinx")
    )
    parser.add_argument(
        "--snr-db", type=float, action="append", help="noise level(s) (default: 20 and 10)"
    )
    parser.add_argument(
        "--seeds", default="1,2,3,4,5", help="one recording per seed: voices and pauses vary"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--chunk-s",
        default=f"{Settings().max_chunk_s:g}",
        help="longest chunk(s) for the stitched transcript (default: the setting's)",
    )
    args = parser.parse_args()
    chosen = methods([float(s) for s in args.chunk_s.split(",")])
    first = next(iter(chosen))
    if not flite_available():
        sys.exit("needs Debian's flite (apt-get install flite)")
    seeds = [int(s) for s in args.seeds.split(",")]
    snrs = args.snr_db or [20.0, 10.0]

    runner = Runner(load_engine(args.engine, workers=args.workers), args.workers)
    words = len(" ".join(SENTENCES).split())
    print(
        f"{len(SENTENCES)} sentences ({words} words) per recording, voices {'/'.join(VOICES)}, "
        f"seeds {seeds}; engine {args.engine}, {args.workers} chunks at a time"
    )
    header = "  ".join(f"{m:>22}" for m in chosen)
    print(f"{'seed':>4} {'recording':13} {'min':>4}  {header}   (WER, calls, audio sent)")
    rates: dict[tuple[str, str], list[float]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recording.wav"
        for seed in seeds:
            clean, spoken, reference = build_speech(seed)
            recordings = [Recording("clean", clean)] + [
                Recording(f"SNR {snr:g} dB", with_noise(clean, spoken, snr, seed)) for snr in snrs
            ]
            for recording in recordings:
                write_wav(path, recording.pcm)
                cells = []
                for method, run in chosen.items():
                    text, calls, sent_s = run(path, recording.pcm, runner)
                    rate = word_error_rate(reference, text)
                    rates.setdefault((recording.name, method), []).append(rate)
                    cells.append(f"{rate:6.1%} {calls:4d} {sent_s:5.0f} s")
                minutes = len(recording.pcm) / 2 / SAMPLE_RATE / 60
                print(
                    f"{seed:4d} {recording.name:13} {minutes:4.1f}  "
                    + "  ".join(f"{c:>22}" for c in cells),
                    flush=True,
                )
    print(f"done in {time.perf_counter() - started:.0f} s. Mean WER over {len(seeds)} seeds:")
    for name in dict.fromkeys(condition for condition, _ in rates):
        mean = {m: sum(rates[name, m]) / len(rates[name, m]) for m in chosen}
        margin = (mean[first] - mean["whole"]) * 100
        verdict = "meets" if margin <= 0.5 else "MISSES"
        print(
            f"  {name:13} "
            + ", ".join(f"{m} {v:.1%}" for m, v in mean.items())
            + f"; {first} - whole = {margin:+.1f} points: {verdict} the +0.5 target"
        )


if __name__ == "__main__":
    main()
