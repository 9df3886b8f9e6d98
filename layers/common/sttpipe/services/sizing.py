"""How many chunks a recording is cut into: as many as make it finish soonest.

Each call to the speech API costs a fixed time plus a time per audio second, and the fleet
makes `limit` calls at once, so the chunks go through in waves; a wave lasts as long as its
slowest call (`tail`), plus the pipeline's own time around each chunk. Few long chunks pay the
fixed cost rarely but leave the fleet idle; many short ones pay it in every wave. The plan takes
the number of chunks, within the longest and shortest chunk allowed, whose expected time is
least (the fewest chunks among near equals), and says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sttpipe.domain.models import SpeechCapacity

NEAR_EQUAL = 0.05


@dataclass(frozen=True)
class ChunkPlan:
    target_s: float  # the chunk length to aim at (the splitter cuts at pauses near it)
    chunks: int
    waves: int
    expected_s: float  # transcription time expected for the whole recording
    reason: str


def plan_chunks(
    duration_s: float,
    capacity: SpeechCapacity,
    *,
    min_chunk_s: float,
    max_chunk_s: float,
    overhead_s: float,
) -> ChunkPlan:
    """The chunking of `duration_s` of audio that the speech API finishes soonest."""
    limit = max(1, math.floor(capacity.limit))
    fewest = max(1, math.ceil(duration_s / max_chunk_s))
    most = max(fewest, math.floor(duration_s / min_chunk_s))

    def expected(chunks: int) -> float:
        waves = math.ceil(chunks / limit)
        call = capacity.fixed_s + capacity.per_audio_s * duration_s / chunks
        return waves * (call * capacity.tail + overhead_s)

    # Past a few waves beyond the fewest, more chunks only add waves. Among plans within
    # NEAR_EQUAL of the best, the fewest chunks: calls are not spent for a negligible gain.
    candidates = range(fewest, min(most, fewest + 3 * limit) + 1)
    soonest = min(expected(n) for n in candidates)
    chunks = next(n for n in candidates if expected(n) <= soonest * (1 + NEAR_EQUAL))
    waves = math.ceil(chunks / limit)
    target_s = duration_s / chunks
    reason = (
        f"{chunks} chunk(s) of about {target_s:.0f} s in {waves} wave(s) of {limit} call(s): "
        f"about {expected(chunks):.1f} s (a call {capacity.fixed_s:.2f} s + "
        f"{capacity.per_audio_s:.3f} s per audio second, slow ones x{capacity.tail:.2f}; "
        f"chunks {min_chunk_s:g}-{max_chunk_s:g} s)"
    )
    return ChunkPlan(target_s, chunks, waves, round(expected(chunks), 3), reason)
