"""Assemble a job's chunk transcripts into one transcript.

Chunks are taken in index order. Where the splitter had to cut through speech it overlaps the
next chunk by about a second, so the words of that second come back twice: the tail words of
one chunk are aligned with the head words of the next and the repeat is dropped, only when the
texts really match. Known hallucinations are removed sentence by sentence, and every text is cut
into readable cues.

Times: the speech API's segment times where it gave any; else the chunk's sentences are placed
on the speech the splitter heard in it (sttpipe.transcript.timing); else, for chunks whose speech
regions are unknown, the chunk's span is shared out by characters. Each segment says which.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sttpipe.domain.models import ChunkTranscript, Segment, Timing
from sttpipe.domain.transcripts import FailedChunk, Transcript
from sttpipe.transcript.text import (
    DEFAULT_HALLUCINATIONS,
    HallucinationFilter,
    normalize,
    sentences,
    split_cues,
)
from sttpipe.transcript.timing import Region, Timeline, place

# Speech runs at up to ~5 words a second: no more words than that can sit in the overlap.
_WORDS_PER_SECOND = 5
# Words at the end of a chunk cut through speech, and at the start of the next, that the engine
# may mishear without the words beyond them (measured with benchmarks/bench_seams.py: "brief
# fella" for "tree fell" at an end, "there they are the" for "the old" at a start).
_GARBLED_TAIL = 2
_GARBLED_HEAD = 4
# Sentences apart by a pause this long never share a cue: no cue lingers through a silence.
_CUE_BREAKING_PAUSE_MS = 500


@dataclass
class _Span:
    """A run of words (tokens keep their punctuation) while chunks are being stitched, spoken
    over the speech positions [first, last] of its timeline."""

    timeline: Timeline
    first: float
    last: float
    tokens: list[str]
    timing: Timing

    @property
    def start_ms(self) -> int:
        return self.timeline.time(self.first, starting=True)

    @property
    def end_ms(self) -> int:
        return self.timeline.time(self.last, starting=False)

    def trimmed(self, lo: int, hi: int) -> _Span | None:
        """Tokens [lo, hi) without punctuation-only tokens at either edge, time shrunk to fit."""
        while lo < hi and not normalize(self.tokens[lo]):
            lo += 1
        while hi > lo and not normalize(self.tokens[hi - 1]):
            hi -= 1
        if lo >= hi:
            return None
        full = len(" ".join(self.tokens))
        before = len(" ".join(self.tokens[:lo])) + (1 if lo else 0)
        upto = len(" ".join(self.tokens[:hi]))
        length = self.last - self.first
        return _Span(
            self.timeline,
            self.first + length * before / full,
            self.first + length * upto / full,
            self.tokens[lo:hi],
            self.timing,
        )

    def cues(self, index: int) -> list[Segment]:
        """The span cut into readable cues, each placed on the span's speech."""
        speech = self.timeline.slice(self.first, self.last)
        return [
            Segment(start_ms=start, end_ms=end, text=text, chunk_index=index, timing=self.timing)
            for start, end, text in split_cues(" ".join(self.tokens), speech)
        ]


@dataclass(frozen=True)
class _Word:
    span: int  # index of its _Span in the chunk
    token: int  # index of its token in that span
    norm: str


def assemble(
    chunks: list[ChunkTranscript],
    failed: list[FailedChunk],
    *,
    language: str | None = None,
    hallucinations: Iterable[str] = DEFAULT_HALLUCINATIONS,
    speech: Mapping[int, Sequence[Region]] | None = None,
    sent: Mapping[int, Sequence[Region]] | None = None,
) -> Transcript:
    """One transcript from the chunks' results and the failed chunks.

    By chunk index, `speech` holds the speech regions the splitter found in each chunk and
    `sent` the stretches of the recording its audio holds (absolute times). A chunk's segments
    (the API's own times) are at its start plus their time in the audio as sent; without `sent`
    that audio is taken to be the whole chunk."""
    noise = HallucinationFilter(hallucinations)
    by_index: dict[int, ChunkTranscript] = {}
    for chunk in chunks:
        by_index.setdefault(chunk.index, chunk)  # a redelivered result is the same result
    ordered = [by_index[i] for i in sorted(by_index)]

    stitched: list[tuple[int, list[_Span]]] = []
    previous: ChunkTranscript | None = None
    for chunk in ordered:
        spans = _spans(
            chunk, noise, (speech or {}).get(chunk.index, ()), (sent or {}).get(chunk.index, ())
        )
        if previous is not None and chunk.start_ms < previous.end_ms:
            index, before = stitched[-1]
            before, spans = _drop_repeat(before, spans, previous.end_ms - chunk.start_ms)
            stitched[-1] = (index, before)
        stitched.append((chunk.index, spans))
        previous = chunk

    segments = [cue for index, spans in stitched for span in spans for cue in span.cues(index)]
    markers = sorted(
        (f for f in {f.index: f for f in failed}.values() if f.index not in by_index),
        key=lambda f: f.index,
    )
    return Transcript(language=language, segments=_monotonic(segments), failed=markers)


def _spans(
    chunk: ChunkTranscript,
    noise: HallucinationFilter,
    regions: Sequence[Region],
    sent: Sequence[Region],
) -> list[_Span]:
    """The chunk's segments as spans, known hallucinations cut out.

    A sentence gets its share of its segment's speech (sttpipe.transcript.timing.place), so
    that a dropped hallucination takes its time with it; the sentences around it stay apart.
    """
    heard = [(s, e) for s, e in regions if e > chunk.start_ms and s < chunk.end_ms]
    audio = Timeline.of(sent, chunk.start_ms, chunk.end_ms)  # the audio as sent, in the recording

    def recorded(at_ms: int) -> int:
        return audio.time(at_ms - chunk.start_ms, starting=True)

    timed = [
        (Timeline.of(heard, recorded(s.start_ms), recorded(s.end_ms)), s.text, Timing.API)
        for s in chunk.segments
    ] or [
        (
            Timeline.of(heard, chunk.start_ms, chunk.end_ms),
            chunk.text,
            Timing.SPEECH if heard else Timing.EVEN,
        )
    ]
    spans: list[_Span] = []
    for timeline, text, timing in timed:
        parts = sentences(text)
        lengths = [len(part) + 1 for part in parts[:-1]] + [len(part) for part in parts[-1:]]
        joinable = False  # whether the last span holds this segment's previous sentence
        for part, (first, last) in zip(parts, place(lengths, timeline), strict=True):
            pause = timeline.time(first, starting=True) - timeline.time(first, starting=False)
            if not normalize(part) or noise.is_hallucination(part):
                joinable = False
            elif joinable and pause < _CUE_BREAKING_PAUSE_MS:
                spans[-1].tokens += part.split()
                spans[-1].last = last
            else:
                spans.append(_Span(timeline, first, last, part.split(), timing))
                joinable = True
    return spans


def _words(spans: list[_Span]) -> list[_Word]:
    return [
        _Word(s, t, norm)
        for s, span in enumerate(spans)
        for t, token in enumerate(span.tokens)
        if (norm := normalize(token))
    ]


def _drop_repeat(
    before: list[_Span], after: list[_Span], overlap_ms: int
) -> tuple[list[_Span], list[_Span]]:
    """Remove the words `after` repeats from the end of `before`, if the texts show a repeat."""
    fits = math.ceil(overlap_ms * _WORDS_PER_SECOND / 1000)
    reach = 2 + fits
    tail = _words(before)[-reach:]
    head = _words(after)[:reach]
    match = _align([w.norm for w in tail], [w.norm for w in head], fits)
    if match is None:
        return before, after
    cut_tail, length, cut_head = match
    if cut_tail:
        first_cut = tail[len(tail) - cut_tail]
        kept = before[first_cut.span].trimmed(0, first_cut.token)
        before = before[: first_cut.span] + ([kept] if kept else [])
    last_repeat = head[cut_head + length - 1]
    span = after[last_repeat.span]
    rest = span.trimmed(last_repeat.token + 1, len(span.tokens))
    after = ([rest] if rest else []) + after[last_repeat.span + 1 :]
    return before, after


def _align(tail: list[str], head: list[str], fits: int) -> tuple[int, int, int] | None:
    """(words to cut from the tail's end, repeated words, words before them in the head).

    The longest run that ends the tail and starts the head is the repeat. Up to _GARBLED_TAIL
    words at the tail's end and _GARBLED_HEAD at the head's start may differ: the cut clips
    them and the engine hears them without the words beyond. That tolerance needs a repeat of
    two words or more (three past one misheard word), so a lone common word never decides, and
    past one misheard word at the head the repeat must end within the `fits` words the overlap
    can hold, so that a formula said in every chunk is not taken for one.
    """
    best: tuple[tuple[int, int], tuple[int, int, int]] | None = None
    for cut_tail in range(_GARBLED_TAIL + 1):
        for cut_head in range(_GARBLED_HEAD + 1):
            shortest = 1 + int(cut_tail > 0 or cut_head > 0) + int(cut_tail + cut_head > 1)
            end = len(tail) - cut_tail
            longest = min(end, len(head) - cut_head)
            if cut_head > 1:
                longest = min(longest, fits - cut_head)
            for n in range(longest, shortest - 1, -1):
                if tail[end - n : end] == head[cut_head : cut_head + n]:
                    rank = (n, -(cut_tail + cut_head))
                    if best is None or rank > best[0]:
                        best = (rank, (cut_tail, n, cut_head))
                    break
    return best[1] if best else None


def _monotonic(segments: list[Segment]) -> list[Segment]:
    """Never start before the previous segment ended (estimated times may cross at a cut)."""
    result: list[Segment] = []
    for segment in segments:
        start = max(segment.start_ms, result[-1].end_ms) if result else segment.start_ms
        end = max(segment.end_ms, start)
        if (start, end) != (segment.start_ms, segment.end_ms):
            segment = segment.model_copy(update={"start_ms": start, "end_ms": end})
        result.append(segment)
    return result
