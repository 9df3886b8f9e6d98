"""ResplittingTranscriber, and the audio helpers it uses, on real audio and a fake speech API.

The chunks are real FLAC of tones and silence (webrtcvad calls a tone speech, so the pauses are
exactly where the test puts them). FakeTranscriber stands in for the API only: it answers the
413s and texts a test scripts, and records the audio it was sent, which is then decoded and
compared with what the chunk held.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sttpipe_testing.audio import silence, tone
from sttpipe_testing.fakes import (
    FakeTranscriber,
    InMemoryJobRepository,
    InMemoryObjectStore,
    InMemoryWorkflow,
)

from sttpipe.audio import (
    SAMPLE_RATE,
    InvalidAudioError,
    decode_bytes,
    encode_flac,
    find_pause_cut,
)
from sttpipe.audio.pcm import SAMPLE_WIDTH
from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import (
    ChunkProgress,
    ChunkRef,
    ChunkState,
    ChunkTask,
    ChunkTranscript,
    Job,
)
from sttpipe.domain.transcripts import RelativeSegment, Transcription
from sttpipe.services.transcribing import WorkerService
from sttpipe.speech.base import PayloadTooLargeError, PermanentSpeechError, TransientSpeechError
from sttpipe.speech.resplit import ResplittingTranscriber

SAMPLE_TEXT = Path(__file__).resolve().parents[2] / "samples" / "sample.txt"


def too_large(attempts: int = 1) -> PayloadTooLargeError:
    error = PayloadTooLargeError("speech API answered 413: too large", status_code=413)
    error.attempts = attempts
    return error


def seconds(samples_or_bytes: bytes) -> float:
    return len(samples_or_bytes) / SAMPLE_WIDTH / SAMPLE_RATE


# Two sounds with one pause between them, at 4.0-5.0 s.
TWO_PARTS = tone(4) + silence(1) + tone(3)
# Four sounds with pauses at 3-4, 7-8 and 11-12 s: halves, then quarters, cut at pauses.
FOUR_PARTS = tone(3) + silence(1) + tone(3) + silence(1) + tone(3) + silence(1) + tone(3)


def sent_pcm(fake: FakeTranscriber) -> list[bytes]:
    return [decode_bytes(call.audio) for call in fake.calls]


# ---- the audio helpers ---------------------------------------------------------------------


def test_decode_bytes_inverts_encode_flac() -> None:
    assert decode_bytes(encode_flac(TWO_PARTS)) == TWO_PARTS


def test_decode_bytes_refuses_what_is_not_audio() -> None:
    with pytest.raises(InvalidAudioError):
        decode_bytes(b"this is not audio at all" * 50)


def test_pause_cut_falls_inside_the_pause_keeping_a_little_silence_after_the_sound() -> None:
    cut = find_pause_cut(TWO_PARTS)
    assert cut is not None
    assert cut % (SAMPLE_RATE // 50) == 0  # on a 20 ms frame edge
    # webrtcvad hears a little past the sound's end; the cut keeps 0.2 s after that.
    assert 4.2 <= cut / SAMPLE_RATE <= 4.5


def test_pause_cut_prefers_the_longest_pause_near_the_middle_to_the_nearest() -> None:
    # 11 s: a short pause at 5.0-5.6 s (nearest the middle), a long one at 6.6-7.8 s.
    pcm = tone(5) + silence(0.6) + tone(1) + silence(1.2) + tone(3.2)
    cut = find_pause_cut(pcm)
    assert cut is not None and 6.6 < cut / SAMPLE_RATE < 7.8


def test_no_pause_cut_in_unbroken_sound_or_when_a_part_would_be_too_short() -> None:
    assert find_pause_cut(tone(10)) is None
    assert find_pause_cut(tone(0.6) + silence(0.6) + tone(0.6), min_part_s=1.0) is None
    assert find_pause_cut(tone(0.6) + silence(0.6) + tone(0.6), min_part_s=0.5) is not None
    assert find_pause_cut(b"") is None


# ---- the decorator -------------------------------------------------------------------------


def test_without_a_413_the_inner_answer_passes_through_untouched() -> None:
    answer = Transcription(text="hello", language="en", attempts=2)
    fake = FakeTranscriber([answer])
    audio = encode_flac(TWO_PARTS)

    result = ResplittingTranscriber(fake).transcribe(audio, "c.flac", language="en")

    assert result is answer
    assert [call.audio for call in fake.calls] == [audio]


def test_a_413_cuts_the_chunk_at_its_pause_and_joins_the_parts_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeTranscriber([too_large(), "First sound.", "Second sound."], language="en")
    caplog.set_level(logging.WARNING)

    result = ResplittingTranscriber(fake).transcribe(
        encode_flac(TWO_PARTS), "00007.flac", language="en"
    )

    assert result.text == "First sound. Second sound."
    assert result.language == "en"
    assert result.attempts == 3
    whole, first, second = sent_pcm(fake)
    assert whole == TWO_PARTS
    assert first + second == TWO_PARTS  # nothing lost, nothing repeated
    assert 4.0 < seconds(first) < 5.0  # the cut is in the pause
    assert [c.filename for c in fake.calls] == [
        "00007.flac",
        "00007-part1.flac",
        "00007-part2.flac",
    ]
    # Text-only answers: each part's text spans that part.
    cut_s = seconds(first)
    assert result.segments == (
        RelativeSegment(0.0, pytest.approx(cut_s, abs=0.001), "First sound."),  # type: ignore[arg-type]
        RelativeSegment(pytest.approx(cut_s, abs=0.001), 8.0, "Second sound."),  # type: ignore[arg-type]
    )
    (record,) = [r for r in caplog.records if "too large" in r.getMessage()]
    assert "at a pause" in record.getMessage() and "00007.flac" in record.getMessage()


def test_part_segments_are_moved_to_chunk_time_and_attempts_summed() -> None:
    fake = FakeTranscriber(
        [
            too_large(attempts=2),
            Transcription(
                text="a b",
                segments=(RelativeSegment(0.5, 1.5, "a"), RelativeSegment(2.0, 3.5, "b")),
                language="de",
                attempts=1,
            ),
            Transcription(
                text="c", segments=(RelativeSegment(1.0, 2.5, "c"),), language="de", attempts=3
            ),
        ]
    )
    result = ResplittingTranscriber(fake).transcribe(
        encode_flac(TWO_PARTS), "c.flac", language=None
    )

    cut_s = seconds(sent_pcm(fake)[1])
    assert [(s.start_s, s.end_s, s.text) for s in result.segments] == [
        (0.5, 1.5, "a"),
        (2.0, 3.5, "b"),
        (pytest.approx(cut_s + 1.0, abs=0.001), pytest.approx(cut_s + 2.5, abs=0.001), "c"),
    ]
    assert result.text == "a b c"
    assert result.language == "de"
    assert result.attempts == 2 + 1 + 3


def test_a_part_still_too_large_is_cut_again() -> None:
    fake = FakeTranscriber([too_large(), too_large(), "one", "two", "three four"])

    result = ResplittingTranscriber(fake).transcribe(
        encode_flac(FOUR_PARTS), "c.flac", language="en"
    )

    assert result.text == "one two three four"
    assert result.attempts == 5
    whole, half, quarter1, quarter2, rest = sent_pcm(fake)
    assert half == quarter1 + quarter2 and half + rest == whole == FOUR_PARTS
    assert 7.0 < seconds(half) < 8.0 and 3.0 < seconds(quarter1) < 4.0
    assert fake.calls[2].filename == "c-part1-part1.flac"


def test_depth_is_bounded_and_the_413_kept_with_every_call_counted() -> None:
    fake = FakeTranscriber([too_large() for _ in range(10)])

    with pytest.raises(PayloadTooLargeError) as caught:
        ResplittingTranscriber(fake, max_depth=2).transcribe(
            encode_flac(FOUR_PARTS), "c.flac", language="en"
        )

    assert len(fake.calls) == 3  # the chunk, its first half, that half's first half
    assert caught.value.attempts == 3
    assert caught.value.status_code == 413


def test_sound_without_a_pause_is_cut_in_the_middle_with_an_overlap_the_join_removes() -> None:
    fake = FakeTranscriber([too_large(), "one two three four five six", "six seven eight"])

    result = ResplittingTranscriber(fake, overlap_s=1.0).transcribe(
        encode_flac(tone(12)), "c.flac", language="en"
    )

    whole, first, second = sent_pcm(fake)
    assert (seconds(first), seconds(second)) == (6.0, 7.0)
    assert first[-SAMPLE_RATE * SAMPLE_WIDTH :] == second[: SAMPLE_RATE * SAMPLE_WIDTH]
    assert first + second[SAMPLE_RATE * SAMPLE_WIDTH :] == whole
    assert result.text == "one two three four five six seven eight"


def test_a_413_for_audio_that_cannot_be_decoded_is_raised_as_it_came() -> None:
    error = too_large()
    fake = FakeTranscriber([error])
    with pytest.raises(PayloadTooLargeError) as caught:
        ResplittingTranscriber(fake).transcribe(b"\x00" * 5000, "c.flac", language="en")
    assert caught.value is error
    assert len(fake.calls) == 1


def test_a_413_for_a_chunk_too_short_to_cut_is_raised_as_it_came() -> None:
    error = too_large()
    fake = FakeTranscriber([error])
    with pytest.raises(PayloadTooLargeError) as caught:
        ResplittingTranscriber(fake, min_part_s=1.0).transcribe(
            encode_flac(tone(2.5)), "c.flac", language="en"
        )
    assert caught.value is error
    assert len(fake.calls) == 1


def test_other_errors_are_not_its_business() -> None:
    fake = FakeTranscriber([TransientSpeechError("503", status_code=503)])
    with pytest.raises(TransientSpeechError):
        ResplittingTranscriber(fake).transcribe(encode_flac(TWO_PARTS), "c.flac", language="en")
    assert len(fake.calls) == 1


def test_a_failing_part_fails_the_chunk_with_all_its_calls_counted() -> None:
    fake = FakeTranscriber(
        [too_large(), "first", PermanentSpeechError("400: bad", status_code=400)]
    )
    with pytest.raises(PermanentSpeechError, match="bad") as caught:
        ResplittingTranscriber(fake).transcribe(encode_flac(TWO_PARTS), "c.flac", language="en")
    assert caught.value.attempts == 3


def test_every_call_shares_one_time_budget() -> None:
    fake = FakeTranscriber([too_large(), "a", "b"])
    ResplittingTranscriber(fake).transcribe(
        encode_flac(TWO_PARTS), "c.flac", language="en", prompt="Tones.", remaining_s=30.0
    )
    budgets = [call.remaining_s for call in fake.calls]
    assert all(b is not None for b in budgets)
    assert 30.0 >= budgets[0] >= budgets[1] >= budgets[2] > 0  # type: ignore[operator]
    assert {(c.language, c.prompt) for c in fake.calls} == {("en", "Tones.")}

    unbounded = FakeTranscriber([too_large(), "a", "b"])
    ResplittingTranscriber(unbounded).transcribe(encode_flac(TWO_PARTS), "c.flac", language="en")
    assert [c.remaining_s for c in unbounded.calls] == [None, None, None]


def test_nonsense_settings_are_refused() -> None:
    for bad in ({"max_depth": 0}, {"min_part_s": 0.0}, {"overlap_s": -1.0}):
        with pytest.raises(ValueError):
            ResplittingTranscriber(FakeTranscriber(), **bad)


# ---- in the worker -------------------------------------------------------------------------


def test_worker_stores_the_resplit_chunk_with_absolute_times() -> None:
    job_id = "0123456789abcdef0123456789abcdef"
    store, jobs, workflow = InMemoryObjectStore(), InMemoryJobRepository(), InMemoryWorkflow()
    now = datetime.now(UTC)
    jobs.add(Job(job_id=job_id, filename="a.wav", upload_key="u", created_at=now, updated_at=now))
    chunk = ChunkRef(
        index=3,
        key=keys.chunk_audio(job_id, 3),
        start_ms=60_000,
        end_ms=68_000,
        pcm_sha256="0" * 64,
    )
    jobs.add_chunks(
        job_id, [ChunkProgress(index=3, start_ms=60_000, end_ms=68_000, state=ChunkState.PENDING)]
    )
    store.put_bytes(chunk.key, encode_flac(TWO_PARTS), "audio/flac")
    fake = FakeTranscriber([too_large(), "Left.", "Right."])
    worker = WorkerService(
        store, jobs, workflow, ResplittingTranscriber(fake), Settings(max_receives=3)
    )

    worker.process(
        ChunkTask(task_token=workflow.open_task(), job_id=job_id, language="en", chunk=chunk),
        receive_count=1,
    )

    stored = ChunkTranscript.model_validate_json(store.get_bytes(keys.chunk_result(job_id, 3)))
    assert stored.text == "Left. Right."
    assert stored.api_calls == 3
    left, right = stored.segments
    assert (left.start_ms, right.end_ms) == (60_000, 68_000)
    assert left.end_ms == right.start_ms and 64_000 < left.end_ms < 65_000
    view = jobs.get(job_id)
    assert view is not None and view.chunks[0].state is ChunkState.DONE


# ---- a transcript stuck in a loop ----------------------------------------------------------

LOOP = "The sea was not yet to be seen. " * 30


def test_a_transcript_stuck_in_a_loop_is_made_again_from_the_two_halves() -> None:
    fake = FakeTranscriber([LOOP, "The weather was calm.", "We packed our bags."])

    result = ResplittingTranscriber(fake).transcribe(
        encode_flac(TWO_PARTS), "c.flac", language="en"
    )

    assert result.text == "The weather was calm. We packed our bags."
    assert result.attempts == 3
    whole, first, second = sent_pcm(fake)
    assert first + second == whole  # cut at the pause: nothing sent twice


def test_a_loop_in_audio_too_short_to_cut_is_kept_as_it_came() -> None:
    fake = FakeTranscriber([LOOP])
    result = ResplittingTranscriber(fake, min_part_s=1.0).transcribe(
        encode_flac(tone(1.5)), "c.flac", language="en"
    )
    assert result.text == LOOP and len(fake.calls) == 1


def test_ordinary_long_text_is_not_taken_for_a_loop() -> None:
    said = SAMPLE_TEXT.read_text()  # a minute of real speech, as the engine wrote it
    fake = FakeTranscriber([said])
    result = ResplittingTranscriber(fake).transcribe(
        encode_flac(TWO_PARTS), "c.flac", language="en"
    )
    assert result.text == said and len(fake.calls) == 1
