"""split_file on real audio: where it cuts, what each chunk holds, and how it fails.

Tone bursts make exact test speech: webrtcvad calls a sine tone speech in every mode, and
digital silence never, so every pause is where the test put it.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import random
import tracemalloc
from pathlib import Path

import pytest
from sttpipe_testing.audio import read_pcm, silence, tone, write_encoded, write_wav

from sttpipe.audio import (
    API_MAX_BYTES,
    BYTES_PER_SECOND,
    MAX_CHUNK_S_LIMIT,
    AudioChunk,
    AudioTooLongError,
    NoSpeechError,
    SplitOptions,
    TruncatedAudioError,
    canonical_pcm_sha256,
    encode_flac,
    probe,
    split_file,
    target_chunk_seconds,
)

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.flac"
SMALL = SplitOptions(max_chunk_s=10, min_chunk_s=3, concurrency=1)


@pytest.fixture(scope="module")
def sample_pcm() -> bytes:
    return read_pcm(SAMPLE)


def split_pcm(tmp_path: Path, pcm: bytes, options: SplitOptions = SMALL) -> list[AudioChunk]:
    path = tmp_path / "input.wav"
    write_wav(path, pcm)
    return list(split_file(path, options))


def flac_pcm(tmp_path: Path, chunk: AudioChunk) -> bytes:
    path = tmp_path / f"chunk{chunk.index}.flac"
    path.write_bytes(chunk.flac)
    return read_pcm(path)


def assert_well_formed(chunks: list[AudioChunk], options: SplitOptions, pcm: bytes) -> None:
    """Indexes, bounds, lengths, and the only overlap being overlap_s after a hard cut."""
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start_ms == 0
    assert chunks[-1].end_ms == math.ceil(len(pcm) / 32)  # the last sample is inside
    for chunk in chunks:
        assert chunk.end_ms - chunk.start_ms <= options.max_chunk_s * 1000
    for chunk in chunks[:-1]:
        assert chunk.end_ms - chunk.start_ms >= options.min_chunk_s * 1000
    for before, after in itertools.pairwise(chunks):
        assert after.start_ms in (before.end_ms, before.end_ms - options.hard_cut_overlap_s * 1000)


# ---- sizing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "concurrency", "expected"),
    [
        (3300, 3, 30.0),  # 55 min: the maximum, 110 chunks
        (64, 3, 64 / 3),  # short file: one chunk per worker
        (64, 1, 64 / 3),  # a single worker still needs ceil(64 / 30) = 3 chunks
        (35, 1, 17.5),  # shared evenly, not 30 + 5
        (12, 8, 6.0),  # more workers than min-length chunks: not below min
        (3, 3, 5.0),  # shorter than the minimum: the minimum
        (60, 2, 30.0),
    ],
)
def test_target_chunk_seconds(duration: float, concurrency: int, expected: float) -> None:
    assert target_chunk_seconds(duration, concurrency, 5.0, 30.0) == pytest.approx(expected)


def test_sizing_decision_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    split_pcm(tmp_path, tone(12), SplitOptions(concurrency=2, min_chunk_s=5))

    (record,) = [r for r in caplog.records if r.getMessage().startswith("chunk target")]
    assert record.__dict__["target_chunk_s"] == 6.0
    assert record.__dict__["duration_s"] == 12.0 and record.__dict__["concurrency"] == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"min_chunk_s": 0},
        {"min_chunk_s": 40},  # above max_chunk_s
        {"max_chunk_s": MAX_CHUNK_S_LIMIT + 1},
        {"overlap_s": -1.0},
        {"vad_aggressiveness": 4},
        {"concurrency": 0},
    ],
)
def test_nonsense_options_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SplitOptions(**bad)  # type: ignore[arg-type]


# ---- where it cuts -----------------------------------------------------------------------


def test_longest_pause_near_the_target_wins_over_the_last_one(tmp_path: Path) -> None:
    # 20 s: target 10 s. A 1 s pause at 7 s and a breath-like 0.45 s one at 9.2 s both lie
    # in the search zone; the longer one is the better boundary.
    breath = tone(1.2) + silence(0.45) + tone(10.35)
    chunks = split_pcm(tmp_path, tone(7) + silence(1) + breath)

    assert 7000 <= chunks[0].end_ms <= 7500  # early in the pause: little silence kept
    # Without the long pause, the short one qualifies as a pause too.
    alone = split_pcm(tmp_path, tone(8) + breath)
    assert 9200 <= alone[0].end_ms <= 9650  # inside the short pause


def test_long_chunks_keep_to_the_planned_count_and_length(tmp_path: Path) -> None:
    # 20 minutes of 3 s sentences and 0.5 s breaths, with a 1.5 s pause every 80 s; the plan
    # asks for 100 s chunks. Preferring the long pauses anywhere within 25 % of the target
    # cut at 80 s, 160 s, ... and made 15 chunks where the plan expected 12.
    minute = b"".join(
        tone(3) + (silence(1.5) if (n + 1) % 23 == 0 else silence(0.5)) for n in range(23)
    )
    pcm = (minute * 15)[: 1200 * BYTES_PER_SECOND]
    options = SplitOptions(max_chunk_s=120, min_chunk_s=5, concurrency=1, target_chunk_s=100)

    chunks = split_pcm(tmp_path, pcm, options)

    assert len(chunks) == 12
    assert all(abs(c.end_ms - (c.index + 1) * 100_000) <= 10_000 for c in chunks[:-1])
    assert_well_formed(chunks, options, pcm)


def test_cuts_between_sentences_and_each_chunk_is_exactly_its_audio(
    tmp_path: Path, sample_pcm: bytes
) -> None:
    chunks = split_pcm(tmp_path, sample_pcm, SMALL)

    assert_well_formed(chunks, SMALL, sample_pcm)
    for chunk, following in itertools.pairwise(chunks):
        assert chunk.end_ms == following.start_ms  # pause cuts: no overlap, nothing lost
    assert chunks[-1].end_ms == math.ceil(len(sample_pcm) / 32)
    for chunk in chunks:
        pcm = flac_pcm(tmp_path, chunk)
        assert canonical_pcm_sha256(pcm) == chunk.pcm_sha256
        # What is sent is exactly the recording's stretches it names, all of its speech in them.
        assert pcm == b"".join(sample_pcm[a * 32 : b * 32] for a, b in chunk.sent)
        assert chunk.start_ms <= chunk.sent[0][0] and chunk.sent[-1][1] <= chunk.end_ms
        assert all(any(a <= s and e <= b for a, b in chunk.sent) for s, e in chunk.speech)


def test_long_pauses_are_shortened_in_what_is_sent(tmp_path: Path) -> None:
    pcm = tone(2) + silence(4) + tone(2) + silence(0.4) + tone(2)
    (chunk,) = split_pcm(tmp_path, pcm, SplitOptions(max_chunk_s=30, min_chunk_s=3, concurrency=1))

    sent = flac_pcm(tmp_path, chunk)
    # The 4 s pause keeps 0.3 s beside each sound (webrtcvad's hangover adds a little); the
    # 0.4 s one stays whole.
    assert len(chunk.sent) == 2
    assert chunk.lead_in_ms == 200  # it starts with sound: silence is put before it
    assert 6.5 <= len(sent) / 32000 - 0.2 <= 7.3
    assert chunk.end_ms - chunk.start_ms == 10_400


def test_unbroken_sound_forces_hard_cuts_with_overlap(tmp_path: Path) -> None:
    source = tone(25)
    chunks = split_pcm(tmp_path, source)

    # SMALL's overlap: 1.5 s, half its shortest chunk.
    assert [(c.start_ms, c.end_ms) for c in chunks] == [(0, 10000), (8500, 18500), (17000, 25000)]
    assert all(c.has_speech for c in chunks)
    first, second = flac_pcm(tmp_path, chunks[0]), flac_pcm(tmp_path, chunks[1])
    # Each starts inside the sound, so its audio starts with 0.2 s of silence (6400 bytes).
    assert [c.lead_in_ms for c in chunks] == [200, 200, 200]
    assert second[:6400] == bytes(6400)
    assert first[-48000:] == second[6400 : 6400 + 48000] == source[8 * 32000 + 16000 : 10 * 32000]


def test_a_hard_cut_falls_between_words_and_so_does_the_next_chunks_start(
    tmp_path: Path,
) -> None:
    # Words of 0.37 s with 60 ms gaps between them: no pause long enough to cut at, and the
    # longest chunk (10 s) ends inside a word. Gaps run 0.37-0.43 s into every 0.43 s.
    source = (tone(0.37) + silence(0.06)) * 60
    chunks = split_pcm(tmp_path, source)

    def in_a_gap(ms: int) -> bool:
        return 370 <= ms % 430 <= 430 or ms % 430 == 0

    assert len(chunks) >= 3
    for before, after in itertools.pairwise(chunks):
        assert 9_000 <= before.end_ms - before.start_ms <= 10_000
        assert in_a_gap(before.end_ms)
        assert in_a_gap(after.start_ms)
        assert before.end_ms - after.start_ms >= SMALL.hard_cut_overlap_s * 1000


def test_long_silence_becomes_chunks_marked_silent(tmp_path: Path) -> None:
    source = tone(4) + silence(26) + tone(4)
    chunks = split_pcm(tmp_path, source)

    assert_well_formed(chunks, SMALL, source)
    silent = [c for c in chunks if not c.has_speech]
    assert silent and all(c.speech_ms == 0 for c in silent)
    for chunk in chunks:  # speech exactly where the tones are
        overlaps_tone = chunk.start_ms < 4000 or chunk.end_ms > 30000
        assert chunk.has_speech == overlaps_tone, chunk
    assert chunks[0].end_ms <= 4500  # the speech chunk does not drag the silence along


def test_faint_noise_is_not_speech(tmp_path: Path) -> None:
    rng = random.Random(0)
    noise = b"".join(
        max(-32768, min(32767, round(rng.gauss(0, 300)))).to_bytes(2, "little", signed=True)
        for _ in range(12 * 16000)
    )

    with pytest.raises(NoSpeechError):
        split_pcm(tmp_path, noise)


def test_silent_file(tmp_path: Path) -> None:
    with pytest.raises(NoSpeechError, match="No speech was found"):
        split_pcm(tmp_path, silence(12))

    chunks = split_pcm(tmp_path, silence(12), dataclasses.replace(SMALL, require_speech=False))
    assert chunks and not any(c.has_speech for c in chunks)
    assert len(chunks[0].flac) < 10 * 32000 / 100  # silence costs almost nothing to store


@pytest.mark.parametrize(
    "options",
    [
        SplitOptions(),
        SplitOptions(max_chunk_s=10, min_chunk_s=3, concurrency=1),
        SplitOptions(max_chunk_s=6, min_chunk_s=2, overlap_s=0.5, vad_aggressiveness=3),
        SplitOptions(max_chunk_s=20, min_chunk_s=10, concurrency=8, min_pause_s=0.5),
    ],
)
def test_chunk_lengths_respect_options(
    tmp_path: Path, sample_pcm: bytes, options: SplitOptions
) -> None:
    # Speech, then a stretch with no pause at all, so that pause and hard cuts both occur.
    source = sample_pcm + tone(options.max_chunk_s * 2.5) + sample_pcm[: 20 * 32000]
    chunks = split_pcm(tmp_path, source, options)

    assert_well_formed(chunks, options, source)
    target = target_chunk_seconds(
        len(source) / 32000, options.concurrency, options.min_chunk_s, options.max_chunk_s
    )
    assert len(chunks) >= len(source) / 32000 / options.max_chunk_s
    assert len(chunks) <= 2 * len(source) / 32000 / target + 2


# ---- identity across containers ----------------------------------------------------------


def test_same_audio_in_wav_and_flac_gives_the_same_chunks(
    tmp_path: Path, sample_pcm: bytes
) -> None:
    wav, flac = tmp_path / "same.wav", tmp_path / "same.flac"
    write_wav(wav, sample_pcm)
    write_encoded(flac, sample_pcm, "flac", "flac")

    from_wav = list(split_file(wav))
    from_flac = list(split_file(flac))

    assert probe(wav).pcm_range is not None and probe(flac).pcm_range is None  # two decoders
    assert [dataclasses.replace(c, flac=b"") for c in from_wav] == [
        dataclasses.replace(c, flac=b"") for c in from_flac
    ]


def test_canonical_hash_and_flac_round_trip(tmp_path: Path) -> None:
    pcm = tone(2) + silence(1)
    chunk = AudioChunk(0, 0, 3000, canonical_pcm_sha256(pcm), encode_flac(pcm), 2000)

    assert flac_pcm(tmp_path, chunk) == pcm
    assert canonical_pcm_sha256(pcm) != canonical_pcm_sha256(pcm[:-2])
    assert len(chunk.flac) < len(pcm) / 2
    with pytest.raises(ValueError):
        canonical_pcm_sha256(b"\x00")  # half a sample


def test_pcm_in_parts_hashes_and_encodes_as_the_whole(tmp_path: Path) -> None:
    """The splitter hands over views of its window: parts must make exactly the whole."""
    pcm = tone(25) + silence(1)  # frames of 10 s, and parts that end inside them
    parts = [memoryview(pcm)[:6], memoryview(pcm)[6:320_006], memoryview(pcm)[320_006:]]
    whole = AudioChunk(0, 0, 26_000, canonical_pcm_sha256(pcm), encode_flac(pcm), 25_000)
    assert canonical_pcm_sha256(*parts) == whole.pcm_sha256
    assert flac_pcm(tmp_path, dataclasses.replace(whole, flac=encode_flac(*parts))) == pcm


def test_longest_allowed_chunk_stays_under_the_api_size_limit() -> None:
    # White noise is the worst case for FLAC; scale its rate up to the longest chunk allowed.
    pcm = random.Random(7).randbytes(10 * BYTES_PER_SECOND)
    flac_bytes_per_second = len(encode_flac(pcm)) / 10

    assert flac_bytes_per_second * MAX_CHUNK_S_LIMIT < API_MAX_BYTES


# ---- errors found only while decoding ----------------------------------------------------


def test_header_that_understated_the_length_stops_decoding(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    write_wav(path, tone(20))
    lying = dataclasses.replace(probe(path), duration_s=8.0)  # as a lying header would say

    chunks = split_file(path, dataclasses.replace(SMALL, max_duration_s=12), info=lying)
    with pytest.raises(AudioTooLongError, match=r"longer than the limit of 12\.0 s"):
        list(chunks)


def test_damage_in_the_middle_is_reported(tmp_path: Path, sample_pcm: bytes) -> None:
    path = tmp_path / "damaged.flac"
    write_encoded(path, sample_pcm, "flac", "flac")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 20_000] = random.Random(2).randbytes(20_000)
    path.write_bytes(data)

    chunks = split_file(path)  # the header and the end are fine: probe passes
    with pytest.raises(TruncatedAudioError, match="damaged or cut off"):
        list(chunks)


def test_a_small_glitch_is_skipped_like_ffmpeg_does(tmp_path: Path, sample_pcm: bytes) -> None:
    path = tmp_path / "glitch.mp3"
    write_encoded(path, sample_pcm, "mp3", "libmp3lame", rate=44100)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 300] = random.Random(3).randbytes(300)
    path.write_bytes(data)

    chunks = list(split_file(path))  # one or two MP3 frames lost: well within tolerance

    assert len(sample_pcm) / 32 - chunks[-1].end_ms < 500


# ---- bounded memory ----------------------------------------------------------------------


def test_memory_does_not_grow_with_the_input(tmp_path: Path, sample_pcm: bytes) -> None:
    path = tmp_path / "long.wav"
    write_wav(path, sample_pcm * 6)  # 6.4 min, 12 MB of PCM
    del sample_pcm

    tracemalloc.start()
    try:
        count = sum(1 for _ in split_file(path, SplitOptions(max_chunk_s=30)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert count >= 13
    # The window, its chunk's FLAC and a frame being encoded (2.4 windows measured): the
    # file's 12 MB never, nor a copy of the chunk's PCM (3.5 windows when it was copied).
    assert peak < 3 * 30 * BYTES_PER_SECOND
