"""Assemble a job's chunk transcripts into one transcript.

Chunks are taken in index order. Where the splitter had to cut through speech it overlaps the
next chunk by about two seconds, so the words of those seconds come back twice: the tail words
of one chunk are aligned with the head words of the next (difflib, so that a word heard
differently inside the overlap does not break the match) and the two are joined once, at a word
both heard near the middle of the overlap, only when the texts really agree. Known
hallucinations are removed sentence by sentence, and every text is cut into readable cues.

Times: the speech API's segment times where it gave any; else the chunk's sentences are placed
on the speech the splitter heard in it (sttpipe.transcript.timing); else, for chunks whose speech
regions are unknown, the chunk's span is shared out by characters. Each segment says which.
"""

from __future__ import annotations

import difflib
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
# ... and at both together, past the overlap's own words.
_GARBLED_JOINED = 3
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
            before, spans = _drop_repeat(
                before,
                spans,
                previous.end_ms - chunk.start_ms,
                previous.end_ms - previous.start_ms,
            )
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
    before: list[_Span], after: list[_Span], overlap_ms: int, before_ms: int
) -> tuple[list[_Span], list[_Span]]:
    """Join two chunks that share `overlap_ms` of audio where their texts agree: `before`'s
    words up to a word both heard, `after`'s from the next one. Unchanged without agreement."""
    said = _words(before)
    # The overlap holds at most twice the words the chunk says per second on average (more
    # would take a faster speaker than any), and never more than _WORDS_PER_SECOND.
    rate = min(_WORDS_PER_SECOND, max(1.0, 2 * len(said) * 1000 / max(1, before_ms)))
    fits = math.ceil(overlap_ms * rate / 1000)
    tail = said[-(fits + _GARBLED_TAIL) :]
    head = _words(after)[: fits + _GARBLED_HEAD]
    junction = _junction([w.norm for w in tail], [w.norm for w in head], fits)
    if junction is None:
        return before, after
    kept_tail, dropped_head = junction
    if kept_tail < len(tail):
        first_cut = tail[kept_tail]
        kept = before[first_cut.span].trimmed(0, first_cut.token)
        before = before[: first_cut.span] + ([kept] if kept else [])
    last_dropped = head[dropped_head - 1]
    span = after[last_dropped.span]
    rest = span.trimmed(last_dropped.token + 1, len(span.tokens))
    after = ([rest] if rest else []) + after[last_dropped.span + 1 :]
    return before, after


def _junction(tail: list[str], head: list[str], fits: int) -> tuple[int, int] | None:
    """(words of the tail to keep, words of the head to drop), joining at a word both heard.

    The words both heard are the blocks difflib matches between the tail and the head, kept
    where they can be the shared audio: the tail's words after such a word and the head's
    words before it are the rest of the overlap (at most `fits` words) plus what each cut
    garbled (_GARBLED_JOINED words at most). At least two words must agree, or the one word
    that ends the tail and starts the head, so that a lone common word never decides. The
    join is at the agreed word nearest the middle of the overlap, where both chunks heard the
    most context, so that the words either cut garbled fall on the side that is dropped.
    """
    reach = fits + _GARBLED_JOINED
    matcher = difflib.SequenceMatcher(None, tail, head, autojunk=False)
    pairs = [
        (i, j)
        for block in matcher.get_matching_blocks()
        for i, j in zip(
            range(block.a, block.a + block.size), range(block.b, block.b + block.size), strict=True
        )
        if len(tail) - 1 - i + j <= reach
    ]
    if len(pairs) < 2 and pairs != [(len(tail) - 1, 0)]:  # one word: only end to end
        return None
    # Balanced: as many of the overlap's words after the join as before it; on a tie, the
    # earlier chunk keeps more.
    i, j = min(pairs, key=lambda p: (abs(len(tail) - 1 - p[0] - p[1]), -p[0]))
    return i + 1, j + 1


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
