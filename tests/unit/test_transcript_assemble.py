"""Assembling chunk transcripts: order, overlap de-duplication, hallucinations, cue splitting."""

# ruff: noqa: RUF001 - Russian test sentences are meant to be Cyrillic

from __future__ import annotations

import itertools

import pytest

from sttpipe.domain.models import ChunkTranscript, Segment
from sttpipe.domain.transcripts import FailedChunk, Transcript
from sttpipe.transcript import assemble, split_cues
from sttpipe.transcript.text import HallucinationFilter, normalize
from sttpipe.transcript.timing import Timeline


def chunk(
    index: int, start_ms: int, end_ms: int, text: str, segments: list[Segment] | None = None
) -> ChunkTranscript:
    return ChunkTranscript(
        index=index, start_ms=start_ms, end_ms=end_ms, text=text, segments=segments or []
    )


def check_timeline(t: Transcript) -> None:
    previous_end = 0
    for s in t.segments:
        assert previous_end <= s.start_ms <= s.end_ms
        previous_end = s.end_ms


# ---- cues -----------------------------------------------------------------------------------


def test_split_cues_keeps_every_word_in_order_within_limits() -> None:
    text = (
        "Сегодня мы поговорим о том, как устроен конвейер распознавания речи, "
        "зачем он режет запись на куски и почему паузы важнее, чем ровные интервалы. "
        "Это короткое предложение. И ещё одно!"
    )
    cues = split_cues(text, Timeline.of((), 10_000, 40_000))
    assert " ".join(c[2] for c in cues) == text
    assert all(len(c[2]) <= 84 for c in cues)
    assert all(end - start <= 7000 for start, end, _ in cues)
    assert cues[0][0] == 10_000 and cues[-1][1] == 40_000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cues))  # contiguous


def test_split_cues_prefers_sentence_then_clause_boundaries() -> None:
    text = "First short sentence. " + "Second one runs on, with a clause or two, " * 2 + "end."
    cues = split_cues(text, Timeline.of((), 0, 9_000))
    assert [c[2] for c in cues] == [
        "First short sentence.",
        "Second one runs on, with a clause or two, Second one runs on, with a clause or two,",
        "end.",
    ]
    assert split_cues("Да. Нет. Может быть.", Timeline.of((), 0, 3000)) == [
        (0, 3000, "Да. Нет. Может быть.")
    ]


def test_split_cues_times_follow_character_share() -> None:
    # Two sentences of equal length over 4 s (well inside both limits, so kept whole).
    cues = split_cues("Aaaa bbbb. Cccc dddd.", Timeline.of((), 1000, 5000), max_chars=10)
    assert [c[2] for c in cues] == ["Aaaa bbbb.", "Cccc dddd."]
    assert cues[0][0] == 1000 and cues[1][1] == 5000
    assert abs(cues[0][1] - 3000) <= 200


def test_split_cues_caps_a_slow_single_word_at_max_duration() -> None:
    assert split_cues("Да.", Timeline.of((), 0, 30_000)) == [(0, 7000, "Да.")]


def test_split_cues_of_empty_text() -> None:
    assert split_cues("   ", Timeline.of((), 0, 1000)) == []


# ---- hallucinations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "Продолжение следует...",
        "ПРОДОЛЖЕНИЕ СЛЕДУЕТ",
        "Субтитры сделал DimaTorzok",
        "Субтитры создавал DimaTorzok.",
        "Редактор субтитров А.Семкин Корректор А.Егорова",
        "Thank you for watching!",
        "Thanks for watching.",
        "Subtitles by the Amara.org community",
    ],
)
def test_default_hallucinations_are_recognised(line: str) -> None:
    assert HallucinationFilter().is_hallucination(line)


@pytest.mark.parametrize(
    "line",
    [
        "Он сказал, что продолжение следует завтра.",
        "Субтитры к фильму были плохими.",
        "Thank you for coming.",
        "...",
    ],
)
def test_real_sentences_are_not_hallucinations(line: str) -> None:
    assert not HallucinationFilter().is_hallucination(line)


def test_normalize_folds_case_yo_and_punctuation() -> None:
    assert normalize("  Ещё — «ЁЖ», ok?! ") == "еще еж ok"


def test_assemble_drops_hallucinated_sentences_and_silent_chunks() -> None:
    t = assemble(
        [
            chunk(0, 0, 10_000, "Добрый день. Продолжение следует..."),
            chunk(1, 10_000, 20_000, "Субтитры сделал DimaTorzok"),
            chunk(2, 20_000, 25_000, "Thank you for watching!"),
        ],
        [],
    )
    assert [s.text for s in t.segments] == ["Добрый день."]
    assert t.segments[0].end_ms <= 5_000  # the dropped sentence took its share of time along


def test_sentences_around_a_hallucination_are_not_joined_into_one_cue() -> None:
    t = assemble([chunk(0, 0, 6000, "Да. Нет. Продолжение следует. Может быть.")], [])
    assert [s.text for s in t.segments] == ["Да. Нет.", "Может быть."]
    assert t.segments[0].end_ms <= 2000 <= t.segments[1].start_ms


def test_hallucination_list_is_configurable() -> None:
    chunks = [chunk(0, 0, 5000, "Продолжение следует. Hello there.")]
    assert assemble(chunks, [], hallucinations=[]).text == "Продолжение следует. Hello there."
    assert assemble(chunks, [], hallucinations=[r"hello there"]).text == "Продолжение следует."


# ---- ordering, times, markers ---------------------------------------------------------------


def test_chunks_are_ordered_by_index_and_keep_segment_times() -> None:
    second = chunk(
        1,
        5000,
        9000,
        "ignored when segments exist",
        segments=[
            Segment(start_ms=5200, end_ms=6800, text="Second part.", chunk_index=1),
            Segment(start_ms=7000, end_ms=8900, text="Third part.", chunk_index=1),
        ],
    )
    t = assemble([second, chunk(0, 0, 5000, "First part.")], [], language="en")
    assert t.language == "en"
    assert [(s.start_ms, s.end_ms, s.text, s.chunk_index) for s in t.segments] == [
        (0, 5000, "First part.", 0),
        (5200, 6800, "Second part.", 1),
        (7000, 8900, "Third part.", 1),
    ]


def test_failed_chunks_become_ordered_markers_without_duplicates() -> None:
    t = assemble(
        [chunk(0, 0, 5000, "Hello."), chunk(0, 0, 5000, "Hello.")],
        [
            FailedChunk(index=3, start_ms=15_000, end_ms=20_000, reason="b"),
            FailedChunk(index=1, start_ms=5000, end_ms=10_000, reason="a"),
            FailedChunk(index=0, start_ms=0, end_ms=5000, reason="stale"),  # has a result
        ],
    )
    assert t.text == "Hello."
    assert [(f.index, f.reason) for f in t.failed] == [(1, "a"), (3, "b")]


# ---- overlap --------------------------------------------------------------------------------


def test_overlap_repeat_is_dropped_from_the_next_chunk() -> None:
    t = assemble(
        [
            chunk(0, 0, 30_000, "Потом мы пошли в магазин"),
            chunk(1, 29_000, 40_000, "в магазин и купили хлеба."),
        ],
        [],
    )
    assert t.text == "Потом мы пошли в магазин и купили хлеба."
    check_timeline(t)


def test_overlap_tolerates_a_word_clipped_by_either_cut() -> None:
    t = assemble(
        [
            # "до" is what the first chunk's cut left of "дома"; "лочную" is what the second
            # chunk's start left of "булочную".
            chunk(0, 0, 30_000, "Мы зашли в булочную на самом углу до"),
            chunk(1, 29_000, 40_000, "лочную на самом углу дома и купили хлеба."),
        ],
        [],
    )
    assert t.text == "Мы зашли в булочную на самом углу дома и купили хлеба."


def test_overlap_tolerates_a_few_words_misheard_at_the_next_chunks_start() -> None:
    # Heard by bench_seams.py at a hard cut: the second chunk, starting 1.7 s before the cut,
    # heard "day at work" as "they at once" without the words before it.
    t = assemble(
        [
            chunk(0, 0, 9_100, "It was his first day at work. She painted the"),
            chunk(1, 7_400, 17_000, "they at once she painted the fence red."),
        ],
        [],
    )
    assert t.text == "It was his first day at work. She painted the fence red."


def test_overlap_with_a_word_heard_differently_inside_it_is_joined_once() -> None:
    # Heard by bench_seams.py at a 2 s hard-cut overlap: the first chunk heard "bought" as
    # "butt" and garbled its last word; the words both heard still agree around them, so the
    # chunks are joined at one of those (the middle), not kept twice.
    t = assemble(
        [
            chunk(
                0,
                0,
                10_000,
                "Close the gate so the sheep do not run away. We butt apples and cheese set",
            ),
            chunk(1, 7_500, 17_500, "do not run away. We bought apples and cheese at the market."),
        ],
        [],
    )
    assert (
        t.text
        == "Close the gate so the sheep do not run away. We bought apples and cheese at the market."
    )


def test_overlap_match_ignores_case_and_punctuation() -> None:
    t = assemble(
        [
            chunk(0, 0, 30_000, "We met at the station,"),
            chunk(1, 29_000, 35_000, "The station. Then"),
        ],
        [],
    )
    assert t.text == "We met at the station, Then"


def test_no_textual_match_keeps_both_texts() -> None:
    t = assemble(
        [chunk(0, 0, 30_000, "It was late"), chunk(1, 29_000, 35_000, "lately we walked home")],
        [],
    )
    assert t.text == "It was late lately we walked home"


def test_a_single_word_with_a_clipped_neighbour_is_not_enough_to_drop_anything() -> None:
    t = assemble(
        [chunk(0, 0, 30_000, "and then the"), chunk(1, 29_000, 35_000, "uh then we left")],
        [],
    )
    assert t.text == "and then the uh then we left"


def test_repeats_without_time_overlap_are_kept() -> None:
    t = assemble(
        [chunk(0, 0, 30_000, "Да, да"), chunk(1, 30_000, 35_000, "да, конечно.")],
        [],
    )
    assert t.text == "Да, да да, конечно."


def test_overlap_repeat_spanning_segments_and_emptying_one() -> None:
    first = chunk(
        0,
        0,
        30_000,
        "",
        segments=[
            Segment(start_ms=24_000, end_ms=28_000, text="One two three", chunk_index=0),
            Segment(start_ms=28_000, end_ms=30_000, text="four five", chunk_index=0),
        ],
    )
    second = chunk(
        1,
        29_000,
        40_000,
        "",
        segments=[
            Segment(start_ms=29_000, end_ms=29_800, text="four", chunk_index=1),
            Segment(start_ms=29_800, end_ms=33_000, text="five six seven", chunk_index=1),
        ],
    )
    t = assemble([first, second], [])
    assert t.text == "One two three four five six seven"
    assert [s.chunk_index for s in t.segments] == [0, 0, 1]
    check_timeline(t)
    assert t.segments[-1].start_ms >= 30_000  # moved past the dropped words and the first chunk


def test_a_long_recording_assembles_in_order_with_monotonic_times() -> None:
    chunks = [
        chunk(i, i * 29_000, i * 29_000 + 30_000, f"Фраза номер {i} закончилась здесь и сейчас")
        for i in range(120)
    ]
    t = assemble(chunks, [])
    check_timeline(t)
    assert [s.chunk_index for s in t.segments] == sorted(s.chunk_index for s in t.segments)
    assert "Фраза номер 119" in t.text
