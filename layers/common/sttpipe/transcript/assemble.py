"""Assemble a job's chunk transcripts into one transcript.

Chunks are taken in index order. Where the splitter had to cut through speech it overlaps the
next chunk by about a second, so the words of that second come back twice: the tail words of
one chunk are aligned with the head words of the next and the repeat is dropped, only when the
texts really match. Known hallucinations are removed sentence by sentence, and every text is cut
into readable cues (a chunk with text but no segments counts as one segment over its span).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from sttpipe.domain.models import ChunkTranscript, Segment
from sttpipe.domain.transcripts import FailedChunk, Transcript
from sttpipe.transcript.text import (
    DEFAULT_HALLUCINATIONS,
    HallucinationFilter,
    normalize,
    sentences,
    split_cues,
)

# Speech runs at up to ~5 words a second: no more words than that can sit in the overlap.
_WORDS_PER_SECOND = 5


@dataclass
class _Span:
    """A timed run of words (tokens keep their punctuation) while chunks are being stitched."""

    start_ms: int
    end_ms: int
    tokens: list[str]

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
        span = self.end_ms - self.start_ms
        return _Span(
            self.start_ms + span * before // full,
            self.start_ms + span * upto // full,
            self.tokens[lo:hi],
        )


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
) -> Transcript:
    """One transcript from the chunks' results (times already absolute) and the failed chunks."""
    noise = HallucinationFilter(hallucinations)
    by_index: dict[int, ChunkTranscript] = {}
    for chunk in chunks:
        by_index.setdefault(chunk.index, chunk)  # a redelivered result is the same result
    ordered = [by_index[i] for i in sorted(by_index)]

    stitched: list[tuple[int, list[_Span]]] = []
    previous: ChunkTranscript | None = None
    for chunk in ordered:
        spans = _spans(chunk, noise)
        if previous is not None and chunk.start_ms < previous.end_ms:
            index, before = stitched[-1]
            before, spans = _drop_repeat(before, spans, previous.end_ms - chunk.start_ms)
            stitched[-1] = (index, before)
        stitched.append((chunk.index, spans))
        previous = chunk

    segments = [
        Segment(start_ms=start, end_ms=end, text=text, chunk_index=index)
        for index, spans in stitched
        for span in spans
        for start, end, text in split_cues(" ".join(span.tokens), span.start_ms, span.end_ms)
    ]
    markers = sorted(
        (f for f in {f.index: f for f in failed}.values() if f.index not in by_index),
        key=lambda f: f.index,
    )
    return Transcript(language=language, segments=_monotonic(segments), failed=markers)


def _spans(chunk: ChunkTranscript, noise: HallucinationFilter) -> list[_Span]:
    """The chunk's segments as spans, known hallucinations cut out.

    A sentence gets the share of its segment's time that its characters have, so that a
    dropped hallucination takes its time with it; the sentences around it stay apart.
    """
    timed = chunk.segments or [
        Segment(
            start_ms=chunk.start_ms, end_ms=chunk.end_ms, text=chunk.text, chunk_index=chunk.index
        )
    ]
    spans: list[_Span] = []
    for segment in timed:
        parts = sentences(segment.text)
        total = len(" ".join(parts))
        duration = max(segment.end_ms - segment.start_ms, 0)
        offset = 0
        joinable = False  # whether the last span holds this segment's previous sentence
        for part in parts:
            start = segment.start_ms + duration * offset // total
            offset += len(part) + 1
            end = segment.start_ms + duration * min(offset, total) // total
            if not normalize(part) or noise.is_hallucination(part):
                joinable = False
            elif joinable:
                spans[-1].tokens += part.split()
                spans[-1].end_ms = end
            else:
                spans.append(_Span(start, end, part.split()))
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
    reach = 2 + math.ceil(overlap_ms * _WORDS_PER_SECOND / 1000)
    tail = _words(before)[-reach:]
    head = _words(after)[:reach]
    match = _align([w.norm for w in tail], [w.norm for w in head])
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


def _align(tail: list[str], head: list[str]) -> tuple[int, int, int] | None:
    """(words to cut from the tail's end, repeated words, words before them in the head).

    The longest run that ends the tail and starts the head is the repeat. One word at the cut
    (at the tail's end and/or the head's start) may differ, since the cut clips it; that
    tolerance needs a repeat of two words or more, so a lone common word never decides.
    """
    best: tuple[tuple[int, int], tuple[int, int, int]] | None = None
    for cut_tail in (0, 1):
        for cut_head in (0, 1):
            shortest = 2 if cut_tail or cut_head else 1
            end = len(tail) - cut_tail
            for n in range(min(end, len(head) - cut_head), shortest - 1, -1):
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
