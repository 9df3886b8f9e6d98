"""Chunks sized for speed: as many as the speech API finishes soonest, given its latency model
and the fleet's limit, within the chunk length bounds; the model learnt from the fleet's calls."""

from __future__ import annotations

from pathlib import Path

import pytest
from sttpipe_testing.audio import read_pcm, tone, write_wav

from sttpipe.audio import encode_flac
from sttpipe.audio.pcm import flac_seconds
from sttpipe.domain.models import SpeechCapacity
from sttpipe.services.sizing import plan_chunks
from sttpipe.speech.latency import MIN_SAMPLES, fit

SEED_MODEL = SpeechCapacity(fixed_s=0.5, per_audio_s=0.01, tail=1.0, limit=4)
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.flac"


def plan(duration_s: float, capacity: SpeechCapacity = SEED_MODEL, max_s: float = 300.0):
    return plan_chunks(duration_s, capacity, min_chunk_s=5, max_chunk_s=max_s, overhead_s=0.25)


def test_a_long_recording_fills_whole_waves_of_the_fleet() -> None:
    # 55 minutes, 4 calls at once, chunks of at most 300 s: 12 chunks in 3 waves.
    chosen = plan(3300)

    assert (chosen.chunks, chosen.waves) == (12, 3)
    assert chosen.target_s == pytest.approx(275)
    assert "12 chunk(s) of about 275 s in 3 wave(s) of 4 call(s)" in chosen.reason
    # The same recording at the old 30 s chunks takes about twice as long by this model.
    assert plan(3300, max_s=30).expected_s > 1.9 * chosen.expected_s


def test_a_larger_fleet_gets_more_and_shorter_chunks() -> None:
    wider = plan(3300, SpeechCapacity(0.5, 0.01, 1.0, limit=10))

    assert 18 <= wider.chunks <= 20 and wider.waves == 2
    assert wider.expected_s < plan(3300).expected_s


def test_a_short_recording_gives_every_call_a_chunk_but_none_below_the_shortest() -> None:
    assert plan(64).chunks == 4  # one wave of 16 s chunks
    assert plan(12).chunks == 2  # 6 s each: 5 s is the shortest allowed
    assert plan(3).chunks == 1


def test_more_calls_are_not_spent_for_a_negligible_gain() -> None:
    # 5 s per call dwarfs the audio's cost: 40 chunks would gain 5%, so it stays at a few.
    costly = plan(600, SpeechCapacity(fixed_s=5.0, per_audio_s=0.001, tail=1.0, limit=40))

    assert costly.chunks <= 3


def test_a_throttled_fleet_is_planned_for_what_it_can_do_now() -> None:
    throttled = plan(3300, SpeechCapacity(0.5, 0.01, 1.0, limit=1.7))

    assert throttled.reason.endswith("chunks 5-300 s)")
    assert "wave(s) of 1 call(s)" in throttled.reason and throttled.chunks == 11


def test_the_latency_model_is_fitted_to_the_fleets_calls() -> None:
    calls = [(seconds, 0.8 + 0.02 * seconds) for seconds in (10, 30, 60, 120, 240, 300) * 2]

    assert fit(calls, SEED_MODEL) == pytest.approx((0.8, 0.02, 1.0))
    # Some calls twice as slow as the rest: waves last as long as their slow calls.
    slow = calls + [(seconds, 2 * (0.8 + 0.02 * seconds)) for seconds in (60, 240)]
    assert fit(slow, SEED_MODEL)[2] > 1.3


def test_too_few_calls_or_equal_lengths_keep_the_configured_model() -> None:
    few = [(30.0, 1.0)] * (MIN_SAMPLES - 1)
    assert fit(few, SEED_MODEL) == (0.5, 0.01, 1.0)
    same_length = [(30.0, 2.0)] * MIN_SAMPLES
    fixed, per_s, tail = fit(same_length, SEED_MODEL)
    assert per_s == 0.01 and fixed == pytest.approx(1.7) and tail == 1.0


def test_the_duration_of_a_flac_is_read_from_its_header() -> None:
    assert flac_seconds(encode_flac(tone(2.5))) == pytest.approx(2.5)
    assert flac_seconds(SAMPLE.read_bytes()) == pytest.approx(len(read_pcm(SAMPLE)) / 32000)
    assert flac_seconds(b"RIFF....WAVEfmt ") is None
    assert flac_seconds(b"") is None


def test_the_splitter_cuts_as_planned(tmp_path: Path) -> None:
    from sttpipe.audio import SplitOptions, split_file

    path = tmp_path / "talk.wav"
    write_wav(path, read_pcm(SAMPLE))
    options = SplitOptions(max_chunk_s=300, min_chunk_s=5, target_chunk_s=plan(64).target_s)

    chunks = list(split_file(path, options))

    assert len(chunks) == 4
