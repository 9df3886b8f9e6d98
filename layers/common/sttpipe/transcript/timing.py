"""Times for text the speech API returned without any: placed on the speech the splitter heard.

The speech API answers a chunk with text only. The splitter knows where in the chunk someone
spoke (webrtcvad's speech regions). A `Timeline` strings those regions together, so that a
position in the *speech* (milliseconds of speech so far) maps to a time in the recording that
skips every pause. Sentences get speech in proportion to their characters, and each boundary
between two sentences moves to a pause when one lies near where the characters put it: people
pause between sentences, so the sentence after the pause starts when its first word does,
however unevenly the chunk's speech and pauses are spread.

Without regions (a manifest written before they were kept) a timeline is the chunk's whole
span: characters share it evenly, as before.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate, pairwise

Region = tuple[int, int]  # [start_ms, end_ms) in the recording

# Costs of an alignment of sentences to the speech (see _align), in units of "one sentence's
# duration entirely wrong": a boundary between two sentences that is not at a pause, and each
# second of a pause passed over inside a sentence (people rarely pause that long mid-sentence),
# counted up to _SKIPPED_PAUSE_MAX_MS.
_INTERIOR_BOUNDARY = 0.3
_SKIPPED_PAUSE = 0.6
_SKIPPED_PAUSE_MAX_MS = 3000.0
# Speech between two pauses that no text covers (the API left a sentence out, or it was not
# speech) costs this much per stretch and per second of it: about what stretching a sentence
# over it would.
_UNHEARD = 0.5
_UNHEARD_PER_SECOND = 0.25
# Leeway for durations: a sentence's expected speech is never taken as shorter than this.
_DURATION_FLOOR_MS = 500.0
# Sentences between two boundaries at pauses, at most (longer runs are shared by characters).
_MAX_RUN = 12


@dataclass(frozen=True)
class Timeline:
    """Regions of speech in order; positions are milliseconds of speech from its start."""

    regions: tuple[Region, ...]

    def __post_init__(self) -> None:
        if not self.regions:
            raise ValueError("a timeline needs at least one region")
        for (start, end), (next_start, _) in pairwise(self.regions):
            if not start <= end <= next_start:
                raise ValueError(f"regions must be ordered and apart: {self.regions}")

    @classmethod
    def of(cls, regions: Sequence[Region], start_ms: int, end_ms: int) -> Timeline:
        """The regions inside [start_ms, end_ms], clipped; the whole span when none is."""
        clipped = tuple(
            (max(s, start_ms), min(e, end_ms)) for s, e in regions if e > start_ms and s < end_ms
        )
        return cls(clipped or ((start_ms, max(start_ms, end_ms)),))

    @property
    def total(self) -> int:
        return self._ends[-1]

    @cached_property
    def _ends(self) -> list[int]:
        """Speech position at the end of each region."""
        return list(accumulate(e - s for s, e in self.regions))

    def gaps(self) -> list[tuple[int, int]]:
        """(speech position, pause length in ms) of each pause between two regions."""
        ends = self._ends
        return [
            (ends[i], self.regions[i + 1][0] - self.regions[i][1])
            for i in range(len(self.regions) - 1)
        ]

    def time(self, position: float, *, starting: bool) -> int:
        """The recording time at a speech position. At a pause, a start is its far side (the
        next word) and an end its near side (the last word)."""
        ends = self._ends
        position = min(max(position, 0.0), float(ends[-1]))
        find = bisect.bisect_right if starting else bisect.bisect_left
        i = min(find(ends, position), len(ends) - 1)
        before = ends[i - 1] if i else 0
        start, end = self.regions[i]
        return min(end, start + round(position - before))

    def slice(self, first: float, last: float) -> Timeline:
        """The part of the timeline between two speech positions."""
        return Timeline.of(
            self.regions, self.time(first, starting=True), self.time(last, starting=False)
        )


def place(lengths: Sequence[int], timeline: Timeline) -> list[tuple[float, float]]:
    """Speech positions [first, last] for consecutive texts of these lengths (characters),
    aligned with the timeline's pauses where the durations agree (see _align)."""
    if not lengths:
        return []
    return _align([max(n, 1) for n in lengths], timeline.gaps(), float(timeline.total))


Lattice = dict[tuple[int, int], tuple[float, tuple[int, int] | None]]


def _align(
    weights: list[int], gaps: list[tuple[int, int]], speech: float
) -> list[tuple[float, float]]:
    """Each text's speech: an alignment of texts to the stretches between pauses.

    Texts are taken in runs; a run ends at a pause (the last one may end where the speech
    does), and inside a run the speech is shared by characters. A run costs how far its speech
    is from what its characters expect at the chunk's own pace (its speech over its
    characters), relative, plus each boundary inside it and each pause it passes over; a
    stretch that no text covers costs as _UNHEARD says. Costs are local, so an error in one
    sentence's length does not carry over to the next ones.
    """
    chars = [0, *accumulate(weights)]
    stops = [float(at) for at, _ in gaps] + [speech]
    skipped = (_SKIPPED_PAUSE * min(p, _SKIPPED_PAUSE_MAX_MS) / 1000 for _, p in gaps)
    skip = [0.0, *accumulate(skipped)]  # cost of passing over the pauses before each
    pace = speech / chars[-1]
    end = (len(weights), len(stops) - 1)
    best = _lattice(chars, stops, skip, pace)
    if end not in best:  # no alignment within the limits: the characters' share
        return list(pairwise([pace * c for c in chars]))
    spans: list[tuple[float, float]] = []
    node, previous = end, best[end][1]
    while previous is not None:
        (j, k2), (i, k) = node, previous
        at, until = (stops[k] if k >= 0 else 0.0), stops[k2]
        share = (until - at) / max(chars[j] - chars[i], 1)
        spans[:0] = [
            (at + share * (chars[m] - chars[i]), at + share * (chars[m + 1] - chars[i]))
            for m in range(i, j)
        ]
        node, previous = previous, best[previous][1]
    return spans


def _lattice(chars: list[int], stops: list[float], skip: list[float], rate: float) -> Lattice:
    """The least cost of each (texts done, stop reached), and the state it came from (stop -1
    is the start), by dynamic programming at `rate` milliseconds of speech per character."""
    n, last = len(chars) - 1, len(stops) - 1
    best: Lattice = {(0, -1): (0.0, None)}
    for i in range(n + 1):
        for k in range(-1, last):
            state = best.get((i, k))
            if state is None:
                continue
            at = stops[k] if k >= 0 else 0.0
            for k2 in range(k + 1, last + 1):  # speech up to stop k2 left without text
                unheard = (k2 - k) * _UNHEARD + (stops[k2] - at) / 1000 * _UNHEARD_PER_SECOND
                _relax(best, (i, k2), state[0] + unheard, (i, k))
            for j in range(i + 1, min(n, i + _MAX_RUN) + 1):
                expected = rate * (chars[j] - chars[i])
                first = bisect.bisect_left(stops, at + 0.3 * expected, k + 1)
                for k2 in range(first, last + 1):
                    actual = stops[k2] - at
                    if actual > 3 * expected + 2 * _DURATION_FLOOR_MS:
                        break
                    cost = (
                        abs(actual - expected) / max(expected, _DURATION_FLOOR_MS)
                        + _INTERIOR_BOUNDARY * (j - i - 1)
                        + skip[k2]
                        - skip[k + 1]
                    )
                    _relax(best, (j, k2), state[0] + cost, (i, k))
    return best


def _relax(
    best: Lattice,
    state: tuple[int, int],
    cost: float,
    previous: tuple[int, int],
) -> None:
    if cost < best.get(state, (float("inf"), None))[0]:
        best[state] = (cost, previous)
