"""Cue times from the speech the splitter heard: text-only answers are placed on the chunk's
speech regions, so a sentence after a pause starts with its first word, not where its share of
the characters would put it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sttpipe_testing.audio import silence, tone, write_wav

from sttpipe.audio import SplitOptions, split_file
from sttpipe.domain.models import ChunkTranscript, Segment, Timing
from sttpipe.transcript import assemble
from sttpipe.transcript.timing import Timeline, place


def test_a_timeline_skips_its_pauses() -> None:
    timeline = Timeline(((1000, 3000), (5000, 6000)))

    assert timeline.total == 3000
    assert timeline.time(0, starting=True) == 1000
    assert timeline.time(1500, starting=True) == 2500
    # At the pause: a start is the next word, an end the last one.
    assert timeline.time(2000, starting=True) == 5000
    assert timeline.time(2000, starting=False) == 3000
    assert timeline.time(3000, starting=False) == 6000
    assert timeline.gaps() == [(2000, 2000)]
    assert timeline.slice(1500, 2500).regions == ((2500, 3000), (5000, 5500))


def test_a_timeline_of_no_regions_is_the_whole_span() -> None:
    assert Timeline.of([], 0, 10_000).regions == ((0, 10_000),)
    assert Timeline.of([(0, 500), (2000, 4000), (9000, 12_000)], 1000, 10_000).regions == (
        (2000, 4000),
        (9000, 10_000),
    )
    with pytest.raises(ValueError):
        Timeline(((0, 10), (5, 20)))


def test_sentence_boundaries_move_to_the_pauses_near_them() -> None:
    # Three sentences of 20, 40 and 20 characters spoken for 2 s, 3 s and 3 s: by characters
    # alone the boundaries fall at 2 s and 6 s of speech; the pauses are at 2 s and 5 s.
    timeline = Timeline(((0, 2000), (2600, 5600), (6400, 9400)))

    placed = place([20, 40, 20], timeline)

    assert placed == [(0.0, 2000.0), (2000.0, 5000.0), (5000.0, 8000.0)]
    starts = [timeline.time(first, starting=True) for first, _ in placed]
    assert starts == [0, 2600, 6400]


def test_a_boundary_far_from_any_pause_stays_where_the_characters_put_it() -> None:
    timeline = Timeline(((0, 10_000), (10_500, 11_000)))

    (first, second) = place([50, 50], timeline)

    assert first == (0.0, 5250.0) and second == (5250.0, 10_500.0)


def test_no_two_boundaries_share_a_pause() -> None:
    timeline = Timeline(((0, 3000), (4000, 7000)))

    placed = place([10, 1, 10], timeline)  # both boundaries want the one pause

    bounds = [last for _, last in placed[:-1]]
    assert bounds == sorted(set(bounds)) and 3000.0 in bounds


def chunk(text: str, start_ms: int = 0, end_ms: int = 12_000) -> ChunkTranscript:
    return ChunkTranscript(index=0, start_ms=start_ms, end_ms=end_ms, text=text)


def test_assembled_cues_start_with_their_speech_and_say_so() -> None:
    text = "The first sentence is here. A second one follows it."
    regions = [(1500, 4000), (8000, 11_000)]  # a long silence before each sentence

    heard = assemble([chunk(text)], [], speech={0: regions})
    even = assemble([chunk(text)], [])

    assert [(s.start_ms, s.timing) for s in heard.segments] == [
        (1500, Timing.SPEECH),
        (8000, Timing.SPEECH),
    ]
    assert heard.segments[0].end_ms == 4000 and heard.segments[1].end_ms == 11_000
    # Without regions, as before: the span shared by characters, from the chunk's start.
    assert [(s.start_ms, s.timing) for s in even.segments] == [
        (0, Timing.EVEN),
        (6462, Timing.EVEN),  # its share of the characters
    ]


def test_the_apis_own_segment_times_win() -> None:
    timed = ChunkTranscript(
        index=0,
        start_ms=0,
        end_ms=12_000,
        text="Hello there.",
        segments=[Segment(start_ms=700, end_ms=1900, text="Hello there.", chunk_index=0)],
    )
    timed.segments[0].timing = Timing.API

    (segment,) = assemble([timed], [], speech={0: [(2000, 3000)]}).segments

    assert (segment.start_ms, segment.end_ms, segment.timing) == (700, 1900, Timing.API)


def test_a_long_sentence_is_cut_into_cues_at_its_own_pauses() -> None:
    words = " ".join(["word"] * 30)  # 149 characters: two cues
    regions = [(0, 4000), (9000, 13_000)]

    cues = assemble([chunk(f"{words}.", 0, 14_000)], [], speech={0: regions}).segments

    assert len(cues) == 2
    assert cues[1].start_ms == 9000  # after the pause, not in it


def test_the_splitter_keeps_each_chunks_speech_regions(tmp_path: Path) -> None:
    path = tmp_path / "talk.wav"
    write_wav(path, silence(1) + tone(2) + silence(1.5) + tone(3) + silence(0.1) + tone(1))
    options = SplitOptions(max_chunk_s=30, min_chunk_s=3, concurrency=1)

    (only,) = list(split_file(path, options))

    # Two regions: the 0.1 s gap is no pause; webrtcvad's hangover may stretch each end.
    (first, second) = only.speech
    assert 960 <= first[0] <= 1100 and 3000 <= first[1] <= 3400
    assert 4460 <= second[0] <= 4600 and 8500 <= second[1] <= 8700
