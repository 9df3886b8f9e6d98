"""Redis when it answers, else this container's own: the fall-back that the fleet-wide speech API
limit (sttpipe.speech.fleet_limit) and circuit breaker (sttpipe.speech.breaker) share.

Each keeps its state in Redis, so that every worker container shares it, and has the same rules
in memory per container. A Redis outage must not stop transcription: after a Redis error the
container uses its own backend instead of stalling, and tries Redis again after a cool-down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

import redis
from aws_lambda_powertools import Logger

logger = Logger(child=True)

Clock = Callable[[], float]

T = TypeVar("T")


def speech_key(namespace: str, name: str) -> str:
    """A key of the fleet's speech coordination. All share one hash tag, `{<namespace>:speech}`,
    so that a Lua script's keys are in one slot of a Redis Cluster."""
    return f"{{{namespace}:speech}}:{name}"


class RedisOrLocal(Generic[T]):
    """The shared backend (in Redis), or the local one (this container's) for `cooldown_s`
    after the shared one failed; always the local one without a shared backend.

    Each failure reported starts the cool-down anew and logs `warning`; as Redis is not asked
    during the cool-down, that is once per outage (and once more for each call that was already
    under way on Redis when it failed)."""

    def __init__(
        self,
        shared: T | None,
        local: T,
        *,
        cooldown_s: float,
        warning: str,
        clock: Clock = time.monotonic,
    ) -> None:
        self._shared = shared
        self._local = local
        self._cooldown_s = cooldown_s
        self._warning = warning
        self._clock = clock
        self._shared_down_until = float("-inf")

    @property
    def local(self) -> T:
        """This container's backend: what a call whose Redis request failed falls back to."""
        return self._local

    def current(self) -> T:
        """The backend to use now."""
        if self._shared is None or self._clock() < self._shared_down_until:
            return self._local
        return self._shared

    def failed(self, exc: redis.RedisError) -> None:
        """The shared backend raised `exc`: use the local one for the cool-down."""
        self._shared_down_until = self._clock() + self._cooldown_s
        logger.warning(
            self._warning, extra={"error": str(exc), "retry_redis_in_s": self._cooldown_s}
        )
