"""Rendering: the SRT and WebVTT written are parsed back and checked; TXT and JSON by content."""

from __future__ import annotations

import json
import re

import pytest

from sttpipe.domain.models import ChunkTranscript, Segment
from sttpipe.domain.transcripts import FailedChunk, Transcript
from sttpipe.transcript import (
    assemble,
    render_json,
    render_srt,
    render_tsv,
    render_txt,
    render_vtt,
)
from sttpipe.transcript.render import clock

SRT_TIME = re.compile(r"^(\d{2,}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2,}):(\d{2}):(\d{2}),(\d{3})$")
VTT_TIME = re.compile(r"^(\d{2,}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2,}):(\d{2}):(\d{2})\.(\d{3})$")


def to_ms(h: str, m: str, s: str, ms: str) -> int:
    assert int(m) < 60 and int(s) < 60
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def parse_cues(body: str, timing: re.Pattern[str]) -> list[tuple[int, int, int, str]]:
    """(number, start_ms, end_ms, text) for each cue; fails on anything malformed."""
    assert body.endswith("\n\n")
    cues = []
    for block in body.strip("\n").split("\n\n"):
        number, times, *text = block.split("\n")
        match = timing.match(times)
        assert match, times
        assert text and all(line.strip() for line in text)
        g = match.groups()
        cues.append((int(number), to_ms(*g[:4]), to_ms(*g[4:]), "\n".join(text)))
    return cues


def check_cues(cues: list[tuple[int, int, int, str]]) -> None:
    assert [c[0] for c in cues] == list(range(1, len(cues) + 1))
    previous_end = 0
    for _, start, end, _ in cues:
        assert previous_end <= start <= end
        previous_end = end


@pytest.fixture
def transcript() -> Transcript:
    return assemble(
        [
            ChunkTranscript(
                index=0,
                start_ms=0,
                end_ms=30_000,
                text="Мы долго шли по дороге, и наконец пришли к старому дому на краю деревни. "
                "Там никого не было. Мы пошли в магазин",
            ),
            ChunkTranscript(
                index=1, start_ms=29_000, end_ms=41_000, text="в магазин и купили хлеба."
            ),
            ChunkTranscript(
                index=3,
                start_ms=3_700_000,
                end_ms=3_705_500,
                text="",
                segments=[
                    Segment(
                        start_ms=3_700_500,
                        end_ms=3_704_250,
                        text="A <b> & C --> D",
                        chunk_index=3,
                    )
                ],
            ),
        ],
        [FailedChunk(index=2, start_ms=40_000, end_ms=70_000, reason="HTTP 500:\nupstream\tdown")],
        language="ru",
    )


def test_srt_parses_back_in_order_with_markers(transcript: Transcript) -> None:
    cues = parse_cues(render_srt(transcript), SRT_TIME)
    check_cues(cues)
    texts = [c[3] for c in cues]
    assert " ".join(texts[:-2]).startswith("Мы долго шли по дороге")
    assert "в магазин в магазин" not in " ".join(texts)
    marker = next(c for c in cues if c[3].startswith("[chunk 2 "))
    assert marker[3] == "[chunk 2 not transcribed (00:00:40-00:01:10): HTTP 500: upstream down]"
    assert marker[2] == 70_000
    assert cues[-1][1:] == (3_700_500, 3_704_250, "A <b> & C --> D")


def test_vtt_has_header_escapes_markup_and_parses_back(transcript: Transcript) -> None:
    vtt = render_vtt(transcript)
    assert vtt.startswith("WEBVTT\n\n")
    cues = parse_cues(vtt.removeprefix("WEBVTT\n\n"), VTT_TIME)
    check_cues(cues)
    assert cues[-1][1:] == (3_700_500, 3_704_250, "A &lt;b&gt; &amp; C --&gt; D")
    srt_cues = parse_cues(render_srt(transcript), SRT_TIME)
    assert [c[1:3] for c in cues] == [c[1:3] for c in srt_cues]


def test_tsv_is_whispers_start_end_text_in_milliseconds(transcript: Transcript) -> None:
    header, *rows, last = render_tsv(transcript).split("\n")
    assert header == "start\tend\ttext" and last == ""
    cells = [row.split("\t") for row in rows]
    assert all(len(c) == 3 for c in cells)  # a tab in a text would add a column
    srt_cues = parse_cues(render_srt(transcript), SRT_TIME)
    assert [(int(s), int(e), t) for s, e, t in cells] == [c[1:] for c in srt_cues]


def test_txt_has_a_paragraph_per_chunk_and_a_marker_line(transcript: Transcript) -> None:
    assert render_txt(transcript).split("\n") == [
        "Мы долго шли по дороге, и наконец пришли к старому дому на краю деревни. "
        "Там никого не было. Мы пошли в магазин",
        "и купили хлеба.",
        "[chunk 2 not transcribed (00:00:40-00:01:10): HTTP 500: upstream down]",
        "A <b> & C --> D",
        "",
    ]


def test_json_carries_segments_markers_language_and_stats(transcript: Transcript) -> None:
    doc = json.loads(render_json(transcript, {"chunks": 4, "api_calls": 3}))
    assert doc["language"] == "ru"
    assert doc["stats"] == {"chunks": 4, "api_calls": 3}
    assert doc["failed_chunks"] == [
        {"index": 2, "start": 40.0, "end": 70.0, "reason": "HTTP 500:\nupstream\tdown"}
    ]
    assert doc["segments"][-1] == {
        "start": 3700.5,
        "end": 3704.25,
        "text": "A <b> & C --> D",
        "chunk": 3,
        "timing": "api",  # how its times were obtained
    }
    assert [s["chunk"] for s in doc["segments"]] == sorted(s["chunk"] for s in doc["segments"])
    assert doc["text"] == " ".join(s["text"] for s in doc["segments"])


def test_long_reasons_are_shortened_in_marker_lines_only() -> None:
    t = Transcript(failed=[FailedChunk(index=0, start_ms=0, end_ms=1000, reason="x" * 5000)])
    (line,) = render_txt(t).splitlines()
    assert len(line) < 300 and line.endswith("…]")
    assert json.loads(render_json(t))["failed_chunks"][0]["reason"] == "x" * 5000


def test_empty_transcript_renders_empty_documents() -> None:
    t = Transcript()
    assert render_txt(t) == ""
    assert render_srt(t) == ""
    assert render_vtt(t) == "WEBVTT\n\n"
    assert json.loads(render_json(t)) == {
        "language": None,
        "language_source": None,
        "text": "",
        "segments": [],
        "failed_chunks": [],
        "stats": {},
    }


@pytest.mark.parametrize(
    ("ms", "srt", "vtt"),
    [
        (0, "00:00:00,000", "00:00:00.000"),
        (61_001, "00:01:01,001", "00:01:01.001"),
        (4 * 3_600_000 + 59 * 60_000 + 59_999, "04:59:59,999", "04:59:59.999"),
        (123 * 3_600_000, "123:00:00,000", "123:00:00.000"),
    ],
)
def test_clock_formats(ms: int, srt: str, vtt: str) -> None:
    assert clock(ms, ",") == srt
    assert clock(ms, ".") == vtt


def test_cues_stay_monotonic_when_a_marker_overlaps_speech() -> None:
    t = Transcript(
        segments=[
            Segment(start_ms=0, end_ms=5000, text="one", chunk_index=0),
            Segment(start_ms=9000, end_ms=12_000, text="three", chunk_index=2),
        ],
        failed=[FailedChunk(index=1, start_ms=4000, end_ms=10_000, reason="timeout")],
    )
    cues = parse_cues(render_srt(t), SRT_TIME)
    check_cues(cues)
    assert [c[3].split()[0] for c in cues] == ["one", "[chunk", "three"]
