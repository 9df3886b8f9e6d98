"""How fast the speech API answers, learnt by the fleet: every worker records each call's audio
seconds and latency in Redis, and the splitter fits a latency model to the recent ones (fixed
cost per call, cost per audio second, how much slower the slow calls are) to size its chunks.

Without Redis, or before enough calls were seen, the configured model holds (by default the one
that reproduces the seed system's 48-60 s for 100 MB: 0.5 s per call + 0.01 s per audio second).
Recording and reading are best effort: a Redis error never fails a chunk or a split.
"""

from __future__ import annotations

import statistics

import redis
from aws_lambda_powertools import Logger

from sttpipe.adapters.redis_connection import RedisClient
from sttpipe.domain.models import SpeechCapacity
from sttpipe.speech.fleet_limit import FleetLimiter
from sttpipe.speech.redis_fallback import speech_key

logger = Logger(child=True)

# Calls kept, and the fewest (with audio of different lengths) a model is fitted to.
KEPT_SAMPLES = 200
MIN_SAMPLES = 8
# The slow calls of a wave: this quantile of latency over the model's prediction.
TAIL_QUANTILE = 0.9

Sample = tuple[float, float]  # (audio seconds, latency seconds)


class LatencyLog:
    """The recent calls, in a capped Redis list shared by the fleet."""

    def __init__(self, client: RedisClient, namespace: str) -> None:
        self._redis = client
        self._key = speech_key(namespace, "latency")

    def record(self, audio_s: float, latency_s: float) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.lpush(self._key, f"{audio_s:.3f} {latency_s:.3f}")
            pipe.ltrim(self._key, 0, KEPT_SAMPLES - 1)
            pipe.execute()
        except redis.RedisError as exc:
            logger.debug("speech latency not recorded", extra={"error": str(exc)})

    def samples(self) -> list[Sample]:
        try:
            raw = self._redis.lrange(self._key, 0, KEPT_SAMPLES - 1)
        except redis.RedisError as exc:
            logger.warning(
                "speech latencies unreadable; the configured model holds", extra={"error": str(exc)}
            )
            return []
        pairs = (item.decode() if isinstance(item, bytes) else str(item) for item in raw)
        return [(float(a), float(b)) for a, b in (p.split() for p in pairs)]


def fit(samples: list[Sample], prior: SpeechCapacity) -> tuple[float, float, float]:
    """(fixed_s, per_audio_s, tail) by least squares, or the prior's with too few samples."""
    if len(samples) < MIN_SAMPLES:
        return prior.fixed_s, prior.per_audio_s, prior.tail
    audio = [a for a, _ in samples]
    mean_a = statistics.fmean(audio)
    mean_l = statistics.fmean(latency for _, latency in samples)
    spread = sum((a - mean_a) ** 2 for a in audio)
    if spread < 1.0:  # all about the same length: the per-second cost cannot be told apart
        per_s = prior.per_audio_s
    else:
        per_s = max(0.0, sum((a - mean_a) * (lat - mean_l) for a, lat in samples) / spread)
    fixed = max(0.0, mean_l - per_s * mean_a)
    ratios = sorted(lat / max(fixed + per_s * a, 1e-3) for a, lat in samples)
    tail = max(1.0, ratios[min(len(ratios) - 1, int(TAIL_QUANTILE * len(ratios)))])
    return fixed, per_s, tail


class FleetSpeechCapacity:
    """The SpeechCapacityGauge port: the latency model fitted to the fleet's recent calls, and
    the fleet's adaptive limit on calls in flight."""

    def __init__(
        self, log: LatencyLog | None, limiter: FleetLimiter, prior: SpeechCapacity
    ) -> None:
        self._log = log
        self._limiter = limiter
        self._prior = prior

    def estimate(self) -> SpeechCapacity:
        samples = self._log.samples() if self._log is not None else []
        fixed, per_s, tail = fit(samples, self._prior)
        return SpeechCapacity(
            fixed_s=fixed, per_audio_s=per_s, tail=tail, limit=self._limiter.current_limit()
        )
