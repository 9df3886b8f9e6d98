"""A `Transcriber` decorator that answers the API's 413, and a transcript stuck in a loop, by
cutting the chunk in two at a pause.

The splitter keeps chunks far below the API's size limit, but a provider may lower its limit, or
a gateway in front of it may have a smaller one. And Whisper sometimes repeats one sentence to
the end of its window ("The sea was not yet to be seen." thirty times, for a minute of speech):
its own transcribe() then decodes again at a higher temperature, which a text-only endpoint
that takes one temperature per request (vLLM's) does not do. Rather than failing the chunk, or
keeping the loop, the decorator decodes it, cuts it at the best pause near its middle (chosen
as the splitter chooses its cuts), and transcribes each part, re-splitting a part that is still
too large or still loops, down to `max_depth` levels. The parts are stitched as the merge
stitches chunks (`sttpipe.transcript`), so the caller gets one `Transcription` with times
relative to the chunk it sent.
"""

from __future__ import annotations

import time
import zlib
from pathlib import PurePosixPath

from aws_lambda_powertools import Logger

from sttpipe.audio import SAMPLE_RATE, AudioError, decode_bytes, encode_flac, find_pause_cut
from sttpipe.audio.pcm import SAMPLE_WIDTH
from sttpipe.domain.models import ChunkTranscript, Segment
from sttpipe.domain.transcripts import RelativeSegment, Transcription
from sttpipe.speech.base import (
    PayloadTooLargeError,
    SpeechError,
    Transcriber,
)
from sttpipe.transcript import assemble

logger = Logger(child=True)

# Whisper's own test for a decode stuck in a loop (openai/whisper transcribe.py,
# compression_ratio_threshold): text that gzip shrinks more than this repeats itself. Whisper
# applies it to one 30 s window's text; here, to every stretch of about that much text, since a
# long text compresses better for its length alone.
LOOP_COMPRESSION_RATIO = 2.4
LOOP_WINDOW_BYTES = 600


class ResplittingTranscriber:
    """Wraps any `Transcriber`; only a `PayloadTooLargeError` from it changes what happens.

    max_depth: how many times a chunk may be halved (3: down to eighths).
    min_part_s: no part shorter than this; a chunk too short to cut keeps its 413.
    overlap_s: when the chunk has no pause at all, the second part starts this much before the
        middle, so that the word cut there is whole in one part; the stitching drops the words
        the parts then share, by aligning them (as after the splitter's own hard cuts).
    """

    def __init__(
        self,
        inner: Transcriber,
        *,
        max_depth: int = 3,
        min_part_s: float = 1.0,
        overlap_s: float = 1.0,
    ) -> None:
        if max_depth < 1 or min_part_s <= 0 or overlap_s < 0:
            raise ValueError("need max_depth >= 1, min_part_s > 0 and overlap_s >= 0")
        self._inner = inner
        self._max_depth = max_depth
        self._min_part_s = min_part_s
        self._overlap_s = overlap_s

    def transcribe(
        self,
        audio: bytes,
        filename: str,
        *,
        language: str | None,
        prompt: str | None = None,
        remaining_s: float | None = None,
    ) -> Transcription:
        # One budget for every call the chunk takes, re-splits included.
        deadline = None if remaining_s is None else time.monotonic() + remaining_s
        return self._transcribe(audio, filename, language, prompt, deadline, depth=0)

    def _transcribe(
        self,
        audio: bytes,
        filename: str,
        language: str | None,
        prompt: str | None,
        deadline: float | None,
        depth: int,
    ) -> Transcription:
        try:
            result = self._inner.transcribe(
                audio,
                filename,
                language=language,
                prompt=prompt,
                remaining_s=None if deadline is None else max(0.0, deadline - time.monotonic()),
            )
        except PayloadTooLargeError as too_large:
            if depth >= self._max_depth:
                logger.warning(
                    "%s is still too large for the speech API after %d re-splits; giving up",
                    filename,
                    depth,
                    extra={"chunk_file": filename, "bytes": len(audio), "depth": depth},
                )
                raise
            cut = self._cut(audio, filename, "is too large for the speech API", depth)
            if cut is None:
                raise
            attempts = too_large.attempts  # the 413 itself cost calls too
        else:
            if depth >= self._max_depth or not loops(result.text):
                return result
            cut = self._cut(audio, filename, "came back as a repetition loop", depth)
            if cut is None:
                return result  # the loop is all there is
            attempts = result.attempts
        pcm, spans = cut
        parts: list[tuple[int, int, Transcription]] = []
        for number, (start, end) in enumerate(spans, 1):
            try:
                result = self._transcribe(
                    encode_flac(pcm[start * SAMPLE_WIDTH : end * SAMPLE_WIDTH]),
                    f"{PurePosixPath(filename).stem}-part{number}.flac",
                    language,
                    prompt,
                    deadline,
                    depth + 1,
                )
            except SpeechError as exc:
                exc.attempts += attempts  # the calls this chunk took before the failing part
                raise
            attempts += result.attempts
            parts.append((start, end, result))
        return _stitch(parts, attempts)

    def _cut(
        self, audio: bytes, filename: str, why: str, depth: int
    ) -> tuple[bytes, list[tuple[int, int]]] | None:
        """The chunk's PCM and the two (start, end) sample ranges to send instead of it, which
        `why` asks for; None when it cannot be decoded or is too short to cut."""
        try:
            pcm = decode_bytes(audio)
        except AudioError as exc:
            logger.warning(
                "%s %s and cannot be decoded to re-split it: %s",
                filename,
                why,
                exc.reason,
                extra={
                    "chunk_file": filename,
                    "bytes": len(audio),
                    "depth": depth,
                    "error": exc.reason,
                },
            )
            return None
        samples = len(pcm) // SAMPLE_WIDTH
        cut = find_pause_cut(pcm, min_part_s=self._min_part_s)
        if cut is not None:
            spans, kind = [(0, cut), (cut, samples)], "at a pause"
        else:
            cut = samples // 2
            overlap = round(self._overlap_s * SAMPLE_RATE)
            if cut - overlap < self._min_part_s * SAMPLE_RATE:
                logger.warning(
                    "%s %s and is too short to cut (%.1f s)",
                    filename,
                    why,
                    samples / SAMPLE_RATE,
                    extra={
                        "chunk_file": filename,
                        "bytes": len(audio),
                        "depth": depth,
                        "duration_s": round(samples / SAMPLE_RATE, 3),
                    },
                )
                return None
            spans, kind = [(0, cut), (cut - overlap, samples)], "through sound (no pause)"
        logger.warning(
            "%s (%d bytes) %s: cutting its %.1f s in two %s at %.2f s and sending the parts "
            "(depth %d of %d)",
            filename,
            len(audio),
            why,
            samples / SAMPLE_RATE,
            kind,
            cut / SAMPLE_RATE,
            depth + 1,
            self._max_depth,
            extra={
                "chunk_file": filename,
                "bytes": len(audio),
                "duration_s": round(samples / SAMPLE_RATE, 3),
                "cut_s": round(cut / SAMPLE_RATE, 3),
                "at_pause": kind == "at a pause",
                "depth": depth + 1,
                "max_depth": self._max_depth,
            },
        )
        return pcm, spans


def loops(text: str) -> bool:
    """Whether a transcript repeats itself as Whisper does when its decoding is stuck."""
    data = text.encode()
    step = LOOP_WINDOW_BYTES // 2
    return any(
        len(window) / len(zlib.compress(window)) > LOOP_COMPRESSION_RATIO
        for at in range(0, max(1, len(data) - step), step)
        if len(window := data[at : at + LOOP_WINDOW_BYTES]) == LOOP_WINDOW_BYTES
    )


def _stitch(parts: list[tuple[int, int, Transcription]], attempts: int) -> Transcription:
    """One transcription of the parts (sample ranges of the chunk), as the merge would join them.

    A part answered with text only counts as one segment over its own range, which places the
    text more closely than the whole chunk's range would.
    """
    chunks = []
    for index, (start, end, result) in enumerate(parts):
        start_ms, end_ms = start * 1000 // SAMPLE_RATE, -(-end * 1000 // SAMPLE_RATE)
        chunks.append(
            ChunkTranscript(
                index=index,
                start_ms=start_ms,
                end_ms=end_ms,
                text=result.text.strip(),
                segments=[
                    Segment(
                        start_ms=start_ms + round(s.start_s * 1000),
                        end_ms=min(end_ms, start_ms + round(s.end_s * 1000)),
                        text=s.text.strip(),
                        chunk_index=index,
                    )
                    for s in result.segments
                ],
            )
        )
    # Known hallucinations are the merge's business, with the job's configured list.
    joined = assemble(chunks, [], hallucinations=())
    return Transcription(
        text=joined.text,
        segments=tuple(
            RelativeSegment(s.start_ms / 1000, s.end_ms / 1000, s.text) for s in joined.segments
        ),
        language=next((r.language for _, _, r in parts if r.language), None),
        attempts=attempts,
    )
