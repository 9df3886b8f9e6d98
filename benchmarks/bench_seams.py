"""Seams: words lost or doubled where the splitter had to cut inside speech.

Builds speech the splitter cannot cut at a pause: flite sentences in four voices joined with no
gap (each trimmed to its first and last sound), split with `min_pause_s` above any gap, so that
every cut is a hard cut at the longest chunk length, inside a word, with `overlap_s` of audio
repeated after it. Every chunk is transcribed by the local engine as text only and assembled as
the merge does (which drops the words heard twice in the overlap). The stitched words and the
engine's whole-file decode are aligned with the generator's text; at each seam (the words within
SEAM_WORDS of where one chunk's words end and the next one's begin):
  lost        a word of the text that the whole-file decode has and the stitched one lacks:
              nothing stands in its place (dropped by a cut or by the join);
  misheard    a word of the text that the whole-file decode has and the stitched one has as
              another word, one for one (a chunk heard it with less context than the whole);
  duplicated  words the stitched transcript has beyond the text that belong to a pair of words
              it also has within SEAM_WORDS * 2 before or after them (a phrase heard in both
              chunks and kept twice; a common pair such as "of the" may count too).
Target: 0 lost and 0 duplicated at every chunk length; misheard is the engine's own error
near a chunk's edge, shown for comparison.

    .venv/bin/python benchmarks/bench_seams.py [--chunk-s 10,20,30] [--seeds 1,2] [--workers 2]
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench_quality import SENTENCES, VOICES, Runner
from bench_timing import trimmed
from sttpipe_testing.audio import flite_available, silence, speak, write_wav

from localcloud.speech_server import load_engine
from sttpipe.audio import SplitOptions, decode_bytes, split_file
from sttpipe.domain.transcripts import Transcript
from sttpipe.transcript.text import normalize

SEAM_WORDS = 4
NO_PAUSE_QUALIFIES_S = 5.0  # longer than any gap in the recording: every cut is a hard cut


@dataclass
class Tally:
    seams: int = 0
    lost: list[str] = field(default_factory=list)
    misheard: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)


def continuous_speech(seed: int) -> tuple[bytes, list[str]]:
    """(PCM of the sentences back to back, the text's words)."""
    rng = random.Random(seed)
    sentences = list(SENTENCES)
    rng.shuffle(sentences)
    spoken = [trimmed(speak(s, VOICES[rng.randrange(len(VOICES))])) for s in sentences]
    return silence(0.3) + b"".join(spoken), normalize(" ".join(sentences)).split()


def words_by_chunk(transcript: Transcript) -> tuple[list[str], list[int]]:
    """The stitched words, and where in them each chunk after the first begins."""
    words: list[str] = []
    seams: list[int] = []
    previous = None
    for segment in transcript.segments:
        if previous is not None and segment.chunk_index != previous:
            seams.append(len(words))
        previous = segment.chunk_index
        words += normalize(segment.text).split()
    return words, seams


def matched(reference: list[str], hypothesis: list[str]) -> set[int]:
    """Indexes of reference words the hypothesis has, aligned in order."""
    blocks = difflib.SequenceMatcher(None, reference, hypothesis, autojunk=False)
    return {b.a + k for b in blocks.get_matching_blocks() for k in range(b.size)}


def count_seams(
    reference: list[str], whole: list[str], stitched: list[str], seams: list[int], tally: Tally
) -> None:
    heard_whole = matched(reference, whole)
    aligned = difflib.SequenceMatcher(None, reference, stitched, autojunk=False)
    near = {i for s in seams for i in range(s - SEAM_WORDS, s + SEAM_WORDS)}
    tally.seams += len(seams)
    for op, r1, r2, s1, s2 in aligned.get_opcodes():
        if op == "equal" or not near & set(range(s1 - 1, s2 + 1)):
            continue
        # A replacement is a word heard otherwise, one for one; what it lacks or adds beyond
        # that is lost or added.
        paired = min(r2 - r1, s2 - s1)
        tally.misheard += [reference[i] for i in range(r1, r1 + paired) if i in heard_whole]
        tally.lost += [reference[i] for i in range(r1 + paired, r2) if i in heard_whole]
        tally.duplicated += _repeated(stitched, s1 + paired, s2)


def _repeated(words: list[str], start: int, end: int) -> list[str]:
    """The words of words[start:end] in a pair that is also said near them."""
    span = 2 * SEAM_WORDS
    around = [*words[max(0, start - span) : start], "|", *words[end : end + span]]
    pairs = set(itertools.pairwise(around))
    inside = words[max(0, start - 1) : end + 1]
    return [
        words[start + i]
        for i in range(end - start)
        if any(p in pairs for p in itertools.pairwise(inside[i : i + 3]) if words[start + i] in p)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-s", default="10,20,30", help="longest chunk lengths")
    parser.add_argument("--seeds", default="1,2", help="one recording per seed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--overlap-s", type=float, default=SplitOptions().overlap_s, help="audio repeated at a cut"
    )
    args = parser.parse_args()
    if not flite_available():
        sys.exit("needs Debian's flite (apt-get install flite)")
    runner = Runner(load_engine("faster-whisper", workers=args.workers), args.workers)
    lengths = [float(s) for s in args.chunk_s.split(",")]
    tallies = {length: Tally() for length in lengths}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "continuous.wav"
        for seed in (int(s) for s in args.seeds.split(",")):
            pcm, reference = continuous_speech(seed)
            write_wav(path, pcm)
            whole = normalize(runner.transcribe(pcm)[0]).split()
            for length in lengths:
                options = SplitOptions(
                    max_chunk_s=length,
                    min_chunk_s=min(5.0, length),
                    concurrency=1,
                    target_chunk_s=length,
                    min_pause_s=NO_PAUSE_QUALIFIES_S,
                    overlap_s=args.overlap_s,
                )
                pieces = [
                    (c.start_ms, c.end_ms, decode_bytes(c.flac))
                    for c in split_file(path, options)
                    if c.has_speech
                ]
                stitched, seams = words_by_chunk(runner.chunks(pieces))
                count_seams(reference, whole, stitched, seams, tallies[length])
    print(f"overlap at a hard cut: {args.overlap_s:g} s")
    print(f"{'chunk s':>8} {'seams':>6} {'lost':>5} {'duplicated':>10} {'misheard':>8}  words")
    for length, tally in tallies.items():
        words = ", ".join(
            [f"-{w}" for w in tally.lost]
            + [f"+{w}" for w in tally.duplicated]
            + [f"~{w}" for w in tally.misheard]
        )
        print(
            f"{length:8g} {tally.seams:6d} {len(tally.lost):5d} {len(tally.duplicated):10d} "
            f"{len(tally.misheard):8d}  {words}"
        )


if __name__ == "__main__":
    main()
