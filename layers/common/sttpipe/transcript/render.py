"""Render a transcript as plain text, JSON, SubRip (SRT), WebVTT and TSV (Whisper's)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sttpipe.domain.transcripts import FailedChunk, Transcript

_MAX_REASON_CHARS = 200  # a marker line is for readers; the JSON keeps the whole reason


@dataclass(frozen=True)
class _Item:
    start_ms: int
    end_ms: int
    text: str
    chunk_index: int
    marker: bool


def clock(ms: int, decimal_mark: str) -> str:
    """HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (WebVTT); hours grow past 99 if they must."""
    ms = max(ms, 0)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{decimal_mark}{millis:03d}"


def marker_text(failed: FailedChunk) -> str:
    reason = " ".join(failed.reason.split())
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[: _MAX_REASON_CHARS - 1] + "…"
    span = f"{clock(failed.start_ms, '.')[:8]}-{clock(failed.end_ms, '.')[:8]}"
    return f"[chunk {failed.index} not transcribed ({span}): {reason}]"


def _timeline(transcript: Transcript) -> list[_Item]:
    """Segments and failure markers in time order, never starting before the previous ended."""
    items = [
        _Item(s.start_ms, s.end_ms, " ".join(s.text.split()), s.chunk_index, False)
        for s in transcript.segments
    ] + [_Item(f.start_ms, f.end_ms, marker_text(f), f.index, True) for f in transcript.failed]
    items.sort(key=lambda i: (i.start_ms, i.chunk_index))
    result: list[_Item] = []
    for item in items:
        start = max(item.start_ms, result[-1].end_ms) if result else item.start_ms
        end = max(item.end_ms, start)
        result.append(_Item(start, end, item.text, item.chunk_index, item.marker))
    return result


def render_txt(transcript: Transcript) -> str:
    """One paragraph (line) per chunk, a bracketed line where a chunk failed."""
    lines: list[str] = []
    previous: _Item | None = None
    for item in _timeline(transcript):
        same_paragraph = (
            previous is not None
            and not previous.marker
            and not item.marker
            and previous.chunk_index == item.chunk_index
        )
        if same_paragraph:
            lines[-1] += " " + item.text
        else:
            lines.append(item.text)
        previous = item
    return "\n".join(lines) + "\n" if lines else ""


def render_json(transcript: Transcript, stats: Mapping[str, Any] | None = None) -> str:
    document = {
        "language": transcript.language,
        "language_source": transcript.language_source,
        "text": transcript.text,
        "segments": [
            {
                "start": s.start_ms / 1000,
                "end": s.end_ms / 1000,
                "text": s.text,
                "chunk": s.chunk_index,
                "timing": s.timing.value,
            }
            for s in transcript.segments
        ],
        "failed_chunks": [
            {
                "index": f.index,
                "start": f.start_ms / 1000,
                "end": f.end_ms / 1000,
                "reason": f.reason,
            }
            for f in transcript.failed
        ],
        "stats": dict(stats or {}),
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def render_srt(transcript: Transcript) -> str:
    return "".join(
        f"{n}\n{clock(i.start_ms, ',')} --> {clock(i.end_ms, ',')}\n{i.text}\n\n"
        for n, i in enumerate(_timeline(transcript), start=1)
    )


def render_vtt(transcript: Transcript) -> str:
    cues = "".join(
        f"{n}\n{clock(i.start_ms, '.')} --> {clock(i.end_ms, '.')}\n{_vtt_escape(i.text)}\n\n"
        for n, i in enumerate(_timeline(transcript), start=1)
    )
    return "WEBVTT\n\n" + cues


def render_tsv(transcript: Transcript) -> str:
    """Whisper's TSV: a header, then start and end in whole milliseconds and the text of each
    cue (the timeline has its whitespace collapsed, so no tab or newline is in a text)."""
    rows = "".join(f"{i.start_ms}\t{i.end_ms}\t{i.text}\n" for i in _timeline(transcript))
    return "start\tend\ttext\n" + rows


def _vtt_escape(text: str) -> str:
    # WebVTT cue text is markup: a bare "<" or "&" would start a tag or an entity, "-->" a timing.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
