"""The committed sample recording, and cuts on real (flite) speech never landing in a sentence."""

from __future__ import annotations

import array
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from sttpipe_testing.audio import flite_available, read_pcm, silence, speak, write_wav

from sttpipe.audio import AudioChunk, SplitOptions, probe, split_file

ROOT = Path(__file__).resolve().parents[2]
SAMPLE, SAMPLE_TEXT = ROOT / "samples" / "sample.flac", ROOT / "samples" / "sample.txt"
OPTION_SETS = [
    SplitOptions(),
    SplitOptions(max_chunk_s=10, min_chunk_s=3, concurrency=1),
    SplitOptions(max_chunk_s=6, min_chunk_s=2, vad_aggressiveness=3),
    SplitOptions(max_chunk_s=8, min_chunk_s=4, vad_aggressiveness=0),
]
needs_flite = pytest.mark.skipif(
    not flite_available(), reason="needs flite (apt-get install flite)"
)


def sentence_spans(pcm: bytes) -> list[tuple[int, int]]:
    """Where sound is, in ms, by amplitude alone (not webrtcvad): 10 ms windows louder than
    -44 dBFS, with gaps under 250 ms (between words) bridged."""
    samples = array.array("h", pcm)
    spans: list[list[int]] = []
    for ms in range(0, len(samples) // 16, 10):
        if max(map(abs, samples[ms * 16 : (ms + 10) * 16])) > 200:
            if spans and ms - spans[-1][1] < 250:
                spans[-1][1] = ms + 10
            else:
                spans.append([ms, ms + 10])
    return [(start, end) for start, end in spans]


def assert_no_cut_inside(chunks: list[AudioChunk], spans: list[tuple[int, int]]) -> None:
    for chunk in chunks[:-1]:
        inside = [s for s in spans if s[0] < chunk.end_ms < s[1]]
        assert not inside, f"chunk {chunk.index} ends at {chunk.end_ms} ms inside {inside}"


def test_sample_is_a_minute_of_16k_mono_flac_with_its_text() -> None:
    info = probe(SAMPLE)
    lines = SAMPLE_TEXT.read_text().splitlines()

    assert (info.codec, info.sample_rate, info.channels) == ("flac", 16000, 1)
    assert 55 <= info.duration_s <= 70
    assert info.size_bytes < 1_500_000
    assert len(lines) == 14 and all(line.endswith(".") for line in lines)
    assert len(sentence_spans(read_pcm(SAMPLE))) == len(lines)  # one stretch of sound each


@pytest.mark.parametrize("options", OPTION_SETS)
def test_sample_is_cut_only_between_sentences(options: SplitOptions) -> None:
    spans = sentence_spans(read_pcm(SAMPLE))
    chunks = list(split_file(SAMPLE, options))

    assert len(chunks) >= 64 / options.max_chunk_s
    assert_no_cut_inside(chunks, spans)
    assert all(
        c.has_speech for c in chunks if any(s[0] < c.end_ms and s[1] > c.start_ms for s in spans)
    )


@needs_flite
def test_flite_speech_with_short_pauses_is_cut_between_sentences(tmp_path: Path) -> None:
    sentences = [
        ("slt", "The small boat sailed slowly across the quiet lake."),
        ("rms", "Children played football in the park after school."),
        ("awb", "My neighbour grows tomatoes and beans in her garden."),
        ("kal16", "The library closes early on the first day of the week."),
        ("slt", "We heard the sound of a train in the distance."),
        ("rms", "Please remember to close the window before you leave."),
    ]
    pcm, spans = b"", []
    for voice, text in sentences:
        speech = speak(text, voice)
        spans.append((len(pcm) // 32, (len(pcm) + len(speech)) // 32))
        pcm += speech + silence(0.35)  # short breaks: flite pads sentences a little too
    path = tmp_path / "flite.wav"
    write_wav(path, pcm)

    for options in OPTION_SETS[1:]:
        chunks = list(split_file(path, options))
        assert len(chunks) >= 3
        assert_no_cut_inside(chunks, spans)


@pytest.mark.skipif(
    not (flite_available() and shutil.which("sox")), reason="needs flite and sox (apt-get)"
)
def test_make_sample_regenerates_the_committed_recording(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "make_sample.sh"), str(tmp_path)], check=True)

    assert (tmp_path / "sample.txt").read_text() == SAMPLE_TEXT.read_text()
    # Compare the sound, not the bytes: another libFLAC may pack the same samples differently.
    regenerated = hashlib.sha256(read_pcm(tmp_path / "sample.flac")).hexdigest()
    assert regenerated == hashlib.sha256(read_pcm(SAMPLE)).hexdigest()
