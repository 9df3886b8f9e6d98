"""Cut a recording into chunks at pauses, streaming, in bounded memory.

The pipeline: decode -> canonical PCM -> webrtcvad on 30 ms frames -> a window of at most
`max_chunk_s` -> a cut at the best pause in the window -> FLAC. Only one window of PCM (about
1 MB at 30 s) is held at a time, whatever the length of the input.

Choosing the cut (all positions relative to the window's start):
1. Pauses are runs of non-speech frames at least `min_pause_s` long. A cut inside a pause keeps
   PAUSE_KEEP_S of silence after the last word where the bounds allow; a long silence at the
   start of the window becomes a chunk of its own. (A chunk's `speech_ms` ignores blips
   shorter than MIN_SPEECH_S, which webrtcvad reports in faint noise, so that noise alone is
   never sent to the API. Pauses are found before that smoothing, lest a short word between
   two gaps be cut through.)
2. The window aims at the next multiple of the target length counted from the recording's
   start, so that cuts early or late do not add up: a recording gets the number of chunks its
   plan asked for, each near the planned length. Among pauses that reach into the zone around
   that aim (+- SEARCH_FRACTION of the target, at most SEARCH_MAX_S), take the LONGEST, not the
   last: a sentence break beats a breath or a stop consonant.
3. Otherwise the pause whose cut lies nearest the aim, anywhere from `min_chunk_s` to
   `max_chunk_s`.
4. Otherwise (no pause at all within `max_chunk_s`) a hard cut in the last HARD_CUT_SEARCH_S
   before `max_chunk_s`, at its quietest moment (between two words, most likely, even in speech
   with no pause); the next chunk then starts at least `overlap_s` earlier, at the quietest
   moment of the HARD_CUT_SEARCH_S before that, so that a word the cut clipped is whole in one
   of them and neither starts inside a word where it can help it.
Every chunk but the last of a file is at least `min_chunk_s` long; none is longer than
`max_chunk_s`.

What is sent: a chunk's audio keeps its speech and SENT_PAUSE_PAD_S of the quiet on each side of
it, so every pause longer than twice that is shortened to it. Nobody pays for silence, and
Whisper, which tends to drop speech that follows a long silence in its 30 s windows, hears every
sentence. The chunk says which stretches of the recording it sent (`sent`) and where in it
someone speaks (`speech`), so that times map back to the recording.
"""

from __future__ import annotations

import array
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import webrtcvad
from aws_lambda_powertools import Logger

from sttpipe.audio.decode import pcm_blocks
from sttpipe.audio.errors import (
    AudioTooLongError,
    EmptyAudioError,
    NoSpeechError,
    TruncatedAudioError,
)
from sttpipe.audio.pcm import (
    BYTES_PER_SECOND,
    SAMPLE_RATE,
    SAMPLE_WIDTH,
    canonical_pcm_sha256,
    encode_flac,
)
from sttpipe.audio.probe import (
    AudioInfo,
    AudioSource,
    check_limits,
    human_duration,
    probe,
    truncation_tolerance_s,
)

logger = Logger(child=True)

# webrtcvad takes 10, 20 or 30 ms frames. Chunk bounds fall on frame edges, and with 20 ms
# the usual settings (30 s, 5 s, 1 s, 0.3 s) are whole frames: bounds are exact.
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_WIDTH

# FLAC of incompressible audio is barely larger than its PCM, so any chunk up to this length
# stays under the API's size limit (600 s x 32 kB/s = 19.2 MB < 25 MB).
MAX_CHUNK_S_LIMIT = 600.0

SEARCH_FRACTION = 0.25
SEARCH_MAX_S = 10.0  # speech has a sentence break every few seconds; longer chunks need no more
PAUSE_KEEP_S = 0.2
MIN_SPEECH_S = 0.15
SENT_PAUSE_PAD_S = 0.3
HARD_CUT_SEARCH_S = 1.0
# Silence put before a chunk whose audio starts inside speech (after a hard cut, or a recording
# that starts talking at once): Whisper given no quiet lead-in can stop after a word or two
# (benchmarks/bench_seams.py: a 30 s chunk came back as "the"; with 0.2 s before it, whole).
LEAD_IN_MS = 200


@dataclass(frozen=True)
class SplitOptions:
    """How split_file cuts a recording. The defaults suit Whisper behind a rate-limited API.

    max_chunk_s: longest chunk; 30 s is Whisper's own window. At most MAX_CHUNK_S_LIMIT.
    min_chunk_s: shortest chunk, except the last one of a file.
    overlap_s: audio repeated at the start of the chunk after a hard cut (never after a pause),
        at most half of min_chunk_s.
        2 s: the words at the cut are heard with a second or more of context by both chunks,
        and enough of them to agree on where to join (benchmarks/bench_seams.py: at 1 s,
        11 words lost at 20 s chunks; at 2 s, none dropped by the join).
    concurrency: chunks the workers transcribe at once; a short file is cut into about this
        many so that none sits idle (see target_chunk_seconds). 3: the API throttles above.
    vad_aggressiveness: webrtcvad mode, 0 (least eager to call audio non-speech) to 3.
    min_pause_s: the shortest non-speech stretch that may be cut at. webrtcvad's hangover
        shortens every pause by 0.1-0.3 s, so 0.2 s here is a real pause of about 0.4 s.
    max_duration_s, max_bytes: input limits (None: no limit), checked before decoding starts,
        and the duration again while decoding, since a header can lie.
    require_speech: raise NoSpeechError after the last chunk when none had speech.
    target_chunk_s: the chunk length to aim at, within [min_chunk_s, max_chunk_s] (the caller
        sized the job: sttpipe.services.sizing); None: as target_chunk_seconds says.
    """

    max_chunk_s: float = 30.0
    min_chunk_s: float = 5.0
    overlap_s: float = 2.0
    concurrency: int = 3
    vad_aggressiveness: int = 2
    min_pause_s: float = 0.2
    max_duration_s: float | None = None
    max_bytes: int | None = None
    require_speech: bool = True
    target_chunk_s: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.min_chunk_s <= self.max_chunk_s <= MAX_CHUNK_S_LIMIT:
            raise ValueError(
                f"need 0 < min_chunk_s <= max_chunk_s <= {MAX_CHUNK_S_LIMIT}, "
                f"got {self.min_chunk_s}, {self.max_chunk_s}"
            )
        if self.overlap_s < 0:
            raise ValueError("need overlap_s >= 0")
        if self.vad_aggressiveness not in (0, 1, 2, 3):
            raise ValueError("vad_aggressiveness is 0, 1, 2 or 3")
        if self.concurrency < 1 or self.min_pause_s <= 0:
            raise ValueError("need concurrency >= 1 and min_pause_s > 0")

    @property
    def hard_cut_overlap_s(self) -> float:
        """The overlap a hard cut gets: overlap_s, but at most half the shortest chunk, so that
        splitting always advances."""
        return min(self.overlap_s, self.min_chunk_s / 2)


@dataclass(frozen=True)
class AudioChunk:
    """One chunk of the recording, [start_ms, end_ms] (absolute). `flac` holds the stretches of
    it in `sent`, one after another (its long pauses shortened), and `pcm_sha256` is their
    canonical PCM's hash."""

    index: int
    start_ms: int
    end_ms: int
    pcm_sha256: str
    flac: bytes = field(repr=False)
    speech_ms: int
    # Where in it someone speaks: [start_ms, end_ms] regions, absolute, apart by real pauses.
    speech: tuple[tuple[int, int], ...] = ()
    # The stretches of the recording the FLAC holds, absolute; the whole chunk when silent.
    sent: tuple[tuple[int, int], ...] = ()
    # Silence the FLAC starts with before them (LEAD_IN_MS when the chunk starts in speech).
    lead_in_ms: int = 0

    @property
    def has_speech(self) -> bool:
        """False means: do not send to the speech API (Whisper invents text for silence)."""
        return self.speech_ms > 0


def target_chunk_seconds(duration_s: float, concurrency: int, min_s: float, max_s: float) -> float:
    """The chunk length to aim for, in [min_s, max_s].

    A file needs at least ceil(duration / max_s) chunks. A short one is cut into more, up to
    `concurrency`, so that every worker gets one, but never into chunks shorter than min_s.
    The duration is then shared evenly: 35 s with max 30 gives two chunks of 17.5 s, not 30 + 5.
    """
    if not 0 < min_s <= max_s or concurrency < 1:
        raise ValueError("need 0 < min_s <= max_s and concurrency >= 1")
    fewest = max(1, math.ceil(duration_s / max_s))
    enough_for_all = min(concurrency, math.floor(duration_s / min_s))
    return min(max_s, max(min_s, duration_s / max(fewest, enough_for_all)))


def split_file(
    source: AudioSource,
    options: SplitOptions | None = None,
    *,
    info: AudioInfo | None = None,
) -> Iterator[AudioChunk]:
    """Probe and check limits now (raising AudioError at once), then stream the chunks.

    Pass `info` when the file was probed already. Errors only found while decoding (damage
    mid-file, a header that understated the duration, no speech at all) are raised by the
    iterator, after the chunks before them.
    """
    options = options or SplitOptions()
    info = info or probe(source)
    check_limits(info, options.max_duration_s, options.max_bytes)
    target_s = options.target_chunk_s or target_chunk_seconds(
        info.duration_s, options.concurrency, options.min_chunk_s, options.max_chunk_s
    )
    target_s = min(options.max_chunk_s, max(options.min_chunk_s, target_s))
    logger.info(
        "chunk target %.1f s for %s of audio: about %d chunks for %d workers",
        target_s,
        human_duration(info.duration_s),
        max(1, round(info.duration_s / target_s)),
        options.concurrency,
        extra={
            "duration_s": round(info.duration_s, 3),
            "target_chunk_s": round(target_s, 3),
            "min_chunk_s": options.min_chunk_s,
            "max_chunk_s": options.max_chunk_s,
            "concurrency": options.concurrency,
            "codec": info.codec,
            "container": info.container,
        },
    )
    return _split(source, info, options, target_s)


def find_pause_cut(
    pcm: bytes,
    *,
    min_part_s: float = 1.0,
    vad_aggressiveness: int = 2,
    min_pause_s: float = 0.2,
) -> int | None:
    """The sample at which to cut canonical PCM in two at a pause, or None when it has none.

    The pause is chosen as split_file chooses its cuts, with the middle as the target: the
    longest pause reaching within SEARCH_FRACTION of it, else the pause nearest to it, leaving
    both parts at least `min_part_s` long. The cut falls on a frame edge.
    """
    options = SplitOptions(
        max_chunk_s=MAX_CHUNK_S_LIMIT,  # unused: the whole of `pcm` is one window
        min_chunk_s=min_part_s,
        overlap_s=0.0,
        vad_aggressiveness=vad_aggressiveness,
        min_pause_s=min_pause_s,
    )
    cutter = _Cutter(options, target_s=len(pcm) / BYTES_PER_SECOND / 2)
    cutter._pcm += pcm
    cutter._classify()
    frame = cutter._choose_cut(cutter._flags, final=True)
    return None if frame is None else frame * FRAME_SAMPLES


def _split(
    source: AudioSource, info: AudioInfo, options: SplitOptions, target_s: float
) -> Iterator[AudioChunk]:
    started = time.perf_counter()
    cutter = _Cutter(options, target_s)
    max_samples = None if options.max_duration_s is None else options.max_duration_s * SAMPLE_RATE
    decoded = 0
    for block in pcm_blocks(source, info):
        decoded += len(block) // SAMPLE_WIDTH
        if max_samples is not None and decoded > max_samples:
            raise AudioTooLongError(
                f"The recording is longer than the limit of "
                f"{human_duration(options.max_duration_s or 0)} (its header said otherwise)."
            )
        yield from cutter.feed(block)
    decoded_s = decoded / SAMPLE_RATE
    if decoded == 0:
        raise EmptyAudioError("The file holds no audio samples.")
    if decoded_s < info.duration_s - truncation_tolerance_s(info.duration_s):
        raise TruncatedAudioError(
            f"The file is damaged or cut off: its header promises "
            f"{human_duration(info.duration_s)} of audio but only {human_duration(decoded_s)} "
            "could be decoded."
        )
    yield from cutter.finish()
    elapsed_s = time.perf_counter() - started
    logger.info(
        "split %s into %d chunks (%d without speech, %d hard cuts) in %.2f s",
        human_duration(decoded_s),
        cutter.chunks,
        cutter.silent_chunks,
        cutter.hard_cuts,
        elapsed_s,
        extra={
            "decoded_s": round(decoded_s, 3),
            "chunks": cutter.chunks,
            "silent_chunks": cutter.silent_chunks,
            "hard_cuts": cutter.hard_cuts,
            "elapsed_s": round(elapsed_s, 3),
        },
    )
    if options.require_speech and cutter.silent_chunks == cutter.chunks:
        raise NoSpeechError("No speech was found in the recording.")


def _frames(seconds: float, rounding: Callable[[float], int] = round) -> int:
    # Six decimals first, so that 0.3 s is 15 frames for ceil as well, not 16.
    return rounding(round(seconds * 1000 / FRAME_MS, 6))


def _joined(runs: list[tuple[int, int]], closer_than: int) -> list[tuple[int, int]]:
    """Sorted runs of frames, those apart by fewer than `closer_than` frames made one."""
    joined: list[tuple[int, int]] = []
    for start, stop in runs:
        if joined and start - joined[-1][1] < closer_than:
            joined[-1] = (joined[-1][0], max(joined[-1][1], stop))
        else:
            joined.append((start, stop))
    return joined


def _runs(flags: bytes | bytearray) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is_speech) for each run of equal flags."""
    pos = 0
    for value, group in itertools.groupby(flags):
        length = sum(1 for _ in group)
        yield pos, pos + length, bool(value)
        pos += length


class _Cutter:
    """The window of PCM and its per-frame speech flags, cut into chunks as it fills."""

    def __init__(self, options: SplitOptions, target_s: float) -> None:
        self._vad = webrtcvad.Vad(options.vad_aggressiveness)
        self._max = _frames(options.max_chunk_s, math.floor)  # never longer than asked
        self._min = _frames(options.min_chunk_s, math.ceil)  # never shorter than asked
        self._period = max(1, _frames(target_s))
        self._search = _frames(min(target_s * SEARCH_FRACTION, SEARCH_MAX_S))
        self._overlap = _frames(options.hard_cut_overlap_s)
        self._min_pause = max(1, _frames(options.min_pause_s))
        self._keep = _frames(PAUSE_KEEP_S)
        self._min_speech = _frames(MIN_SPEECH_S)
        self._pad = _frames(SENT_PAUSE_PAD_S)
        self._hard_search = _frames(HARD_CUT_SEARCH_S)
        self._pcm = bytearray()
        self._flags = bytearray()  # one per whole frame of _pcm (and a padded last one at EOF)
        self._start = 0  # absolute sample of _pcm[0]
        self.chunks = self.silent_chunks = self.hard_cuts = 0

    def feed(self, block: bytes) -> Iterator[AudioChunk]:
        self._pcm += block
        self._classify()
        while len(self._flags) >= self._max:
            cut = self._choose_cut(self._flags[: self._max], final=False)  # a block may overrun
            if cut is None:
                self.hard_cuts += 1
                end = self._quietest(max(self._min, self._max - self._hard_search), self._max)
                latest = max(1, end - self._overlap)
                resume = self._quietest(max(1, latest - self._hard_search), latest)
                yield self._emit(end, resume, "hard")
            else:
                yield self._emit(cut, cut, "pause")

    def _classify(self) -> None:
        """Flag each whole frame of _pcm not flagged yet."""
        # Views must be released before _pcm can be resized.
        with memoryview(self._pcm) as view:
            for i in range(len(self._flags), len(self._pcm) // FRAME_BYTES):
                frame = view[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]
                self._flags.append(self._vad.is_speech(frame, SAMPLE_RATE))
                frame.release()

    def finish(self) -> Iterator[AudioChunk]:
        partial = len(self._pcm) % FRAME_BYTES
        if partial:
            last = bytes(self._pcm[-partial:]) + bytes(FRAME_BYTES - partial)
            self._flags.append(self._vad.is_speech(last, SAMPLE_RATE))
        # The rest is at most max_chunk_s; cut it further only when well over the target.
        while len(self._flags) > self._aim() + self._search:
            cut = self._choose_cut(self._flags, final=True)
            if cut is None:
                break
            yield self._emit(cut, cut, "pause")
        if self._pcm:
            yield self._emit(len(self._flags), len(self._flags), "end")

    def _choose_cut(self, flags: bytearray, *, final: bool) -> int | None:
        """The frame to cut before, or None when no pause qualifies (see the module doc)."""
        n = len(flags)
        upper = n - self._min if final else n  # at EOF: leave a last chunk >= min
        candidates = []  # (pause start, pause end, cut)
        for start, end, is_speech in _runs(flags):
            if is_speech or end - start < self._min_pause:
                continue
            keep = min(self._keep, (end - start) // 2)
            # Where in the pause a cut may go (a pause running past the window: to its end),
            # and where it best goes: just after the last word, or, for silence that opens
            # the window, just before the next one, so that it becomes a chunk of its own.
            low, high = start + keep, (n if end == n else end - keep)
            best = low if start > 0 else high
            low, high = max(low, self._min), min(high, upper)
            if low <= high:
                candidates.append((start, end, min(max(best, low), high)))
        aim = self._aim()
        zone_low, zone_high = aim - self._search, aim + self._search
        in_zone = [p for p in candidates if p[0] < zone_high and p[1] > zone_low]
        if in_zone:
            return max(in_zone, key=lambda p: (p[1] - p[0], -abs(p[2] - aim)))[2]
        if candidates:
            return min(candidates, key=lambda p: (abs(p[2] - aim), p[0] - p[1]))[2]
        return None

    def _quietest(self, low: int, high: int) -> int:
        """The frame boundary in [low, high] with the least energy in the frames on either side
        of it (the latest among equals): where a cut through speech least likely clips a word."""

        def energy(frame: int) -> int:
            frame = min(frame, len(self._pcm) // FRAME_BYTES - 1)
            samples = array.array("h", self._pcm[frame * FRAME_BYTES : (frame + 1) * FRAME_BYTES])
            return sum(s * s for s in samples)

        return min(range(low, high + 1), key=lambda c: (energy(c - 1) + energy(c), -c))

    def _aim(self) -> int:
        """Where in the window to cut: one target length past the multiple of it nearest the
        window's start (the boundary the last cut served), within min_chunk_s..max_chunk_s."""
        start = self._start // FRAME_SAMPLES
        boundary = (round(start / self._period) + 1) * self._period
        return min(max(boundary - start, self._min), self._max)

    def _speech_frames(self, end: int) -> int:
        """Speech frames in [0, end), not counting blips shorter than MIN_SPEECH_S."""
        return sum(
            stop - start
            for start, stop, is_speech in _runs(self._flags[:end])
            if is_speech and stop - start >= self._min_speech
        )

    def _speech_runs(self, end: int) -> list[tuple[int, int]]:
        """The speech in frames [0, end): blips shorter than MIN_SPEECH_S left out, runs apart
        by less than a pause joined."""
        return _joined(
            [
                (start, stop)
                for start, stop, is_speech in _runs(self._flags[:end])
                if is_speech and stop - start >= self._min_speech
            ],
            self._min_pause,
        )

    def _sent_runs(self, speech: list[tuple[int, int]], end: int) -> list[tuple[int, int]]:
        """The frames to send: the speech and SENT_PAUSE_PAD_S around it (all, when silent)."""
        if not speech:
            return [(0, end)]
        padded = [(max(0, a - self._pad), min(end, b + self._pad)) for a, b in speech]
        return _joined(padded, 1)

    def _ms(self, frame: int) -> int:
        return self._ms_of_sample(frame * FRAME_SAMPLES)

    def _ms_of_sample(self, sample: int) -> int:
        return -(-(self._start + sample) * 1000 // SAMPLE_RATE)

    def _emit(self, end: int, resume: int, kind: str) -> AudioChunk:
        """Make a chunk of frames [0, end) and keep [resume, ...) as the next window."""
        samples = min(end * FRAME_SAMPLES, len(self._pcm) // SAMPLE_WIDTH)
        speech = self._speech_runs(end)
        sent = self._sent_runs(speech, end)
        # What the chunk has of quiet before its first speech, made up to LEAD_IN_MS.
        lead_in_ms = max(0, LEAD_IN_MS - speech[0][0] * FRAME_MS) if speech else 0
        lead_in = bytes(lead_in_ms * SAMPLE_RATE // 1000 * SAMPLE_WIDTH)
        # The last frame of a file may be padded: never read past the samples there are. Hashed
        # and encoded from views of the window: the chunk's PCM is never copied whole.
        with memoryview(self._pcm) as window:
            views = [
                window[a * FRAME_BYTES : min(b * FRAME_SAMPLES, samples) * SAMPLE_WIDTH]
                for a, b in sent
            ]
            pcm_sha256 = canonical_pcm_sha256(lead_in, *views)
            flac = encode_flac(lead_in, *views)
            for view in views:
                view.release()  # before the window can shrink
        end_ms = self._ms_of_sample(samples)
        chunk = AudioChunk(
            index=self.chunks,
            start_ms=self._start * 1000 // SAMPLE_RATE,
            end_ms=end_ms,
            pcm_sha256=pcm_sha256,
            flac=flac,
            speech_ms=self._speech_frames(end) * FRAME_MS,
            speech=tuple((self._ms(a), min(self._ms(b), end_ms)) for a, b in speech),
            sent=tuple((self._ms(a), min(self._ms(b), end_ms)) for a, b in sent),
            lead_in_ms=lead_in_ms,
        )
        logger.debug(
            "chunk %d: %d-%d ms, %s cut, %d ms speech",
            chunk.index,
            chunk.start_ms,
            chunk.end_ms,
            kind,
            chunk.speech_ms,
            extra={
                "chunk_index": chunk.index,
                "start_ms": chunk.start_ms,
                "end_ms": chunk.end_ms,
                "cut": kind,
                "speech_ms": chunk.speech_ms,
            },
        )
        self.chunks += 1
        self.silent_chunks += not chunk.has_speech
        del self._pcm[: resume * FRAME_BYTES]
        del self._flags[:resume]
        self._start += resume * FRAME_SAMPLES
        return chunk
