"""Composition root: builds each service from its real adapters, once per container.

Handlers call these; every client, pool and connection is created on first use and then reused
by every later invocation of the same warm container.
"""

from __future__ import annotations

from functools import cache

from sttpipe.adapters.eventbridge import EventBridgePublisher
from sttpipe.adapters.postgres import job_repository_from_settings
from sttpipe.adapters.s3 import S3ObjectStore
from sttpipe.adapters.sqs import SqsMessageQueues, SqsQueueStats
from sttpipe.adapters.stepfunctions import StepFunctionsWorkflow
from sttpipe.adapters.webhook import WebhookNotifier, webhook_secret_source
from sttpipe.cache import TranscriptCache, build_transcript_cache
from sttpipe.cache.factory import redis_url
from sttpipe.cache.redis import redis_client
from sttpipe.cache.transcripts import CacheAdministration
from sttpipe.config import get_settings
from sttpipe.observability import (
    EventMetrics,
    MeteredTranscriber,
    MetricRecorder,
    PowertoolsRecorder,
    cache_metric_sink,
    throttle_counter,
)
from sttpipe.ports import (
    EventPublisher,
    JobRepository,
    MessageQueues,
    Notifier,
    ObjectStore,
    Workflow,
)
from sttpipe.services.deliveries import ChunkDeliveryService
from sttpipe.services.jobs import JobService
from sttpipe.services.lifecycle import FanOut, PublishingJobRepository
from sttpipe.services.merging import MergeService
from sttpipe.services.splitting import SplitterService
from sttpipe.services.transcribing import WorkerService
from sttpipe.speech.cloudru import build_transcriber, get_http_client
from sttpipe.speech.limits import (
    Breaker,
    BreakingTranscriber,
    FleetLimiter,
    LimitedTranscriber,
    LimitPolicy,
    LocalSlots,
    RedisSlots,
    circuit_breaker,
)
from sttpipe.speech.resplit import ResplittingTranscriber


@cache
def object_store() -> ObjectStore:
    return S3ObjectStore(get_settings().bucket)


@cache
def metric_recorder() -> MetricRecorder:
    return PowertoolsRecorder()


@cache
def job_repository() -> JobRepository:
    settings = get_settings()
    # Every lifecycle transition recorded is counted and announced on the bus.
    listeners: list[EventPublisher] = [EventMetrics(metric_recorder())]
    if settings.event_bus_name:
        listeners.append(EventBridgePublisher(settings.event_bus_name, metric_recorder()))
    return PublishingJobRepository(job_repository_from_settings(settings), FanOut(*listeners))


@cache
def workflow() -> Workflow:
    return StepFunctionsWorkflow(get_settings().state_machine_arn)


@cache
def transcript_cache() -> TranscriptCache | None:
    """None when STT_CACHE_ENABLED is off."""
    return build_transcript_cache(get_settings(), emit=cache_metric_sink(metric_recorder()))


def _cache_administration() -> CacheAdministration | None:
    cache = transcript_cache()
    return None if cache is None else CacheAdministration(cache)


@cache
def splitter_service() -> SplitterService:
    return SplitterService(
        object_store(), job_repository(), workflow(), get_settings(), transcript_cache()
    )


@cache
def message_queues() -> MessageQueues:
    return SqsMessageQueues()


@cache
def speech_limiter() -> FleetLimiter:
    """The fleet-wide limit on speech calls in flight, on the cache's Redis when there is one."""
    settings = get_settings()
    policy = LimitPolicy(
        max_limit=settings.speech_limit,
        min_limit=min(settings.speech_limit_min, settings.speech_limit),
        decrease=settings.speech_limit_decrease,
        hold_s=settings.speech_limit_hold_s,
        lease_s=settings.speech_lease_s,
    )
    url = redis_url(settings)
    shared = (
        RedisSlots(
            redis_client(url, settings.cache_redis_timeout_s), settings.cache_namespace, policy
        )
        if url
        else None
    )
    return FleetLimiter(shared, LocalSlots(policy), redis_cooldown_s=settings.cache_cooldown_s)


@cache
def speech_breaker() -> Breaker:
    """The circuit breaker on the speech API, shared by the fleet through the cache's Redis."""
    settings = get_settings()
    url = redis_url(settings)
    return circuit_breaker(
        redis_client(url, settings.cache_redis_timeout_s) if url else None,
        settings.cache_namespace,
        failures=settings.speech_breaker_failures,
        cooldown_s=settings.speech_breaker_cooldown_s,
        trial_lease_s=settings.speech_lease_s,
        redis_cooldown_s=settings.cache_cooldown_s,
    )


@cache
def worker_service() -> WorkerService:
    settings = get_settings()
    hooks = get_http_client(settings).event_hooks["response"]
    # Both see every attempt, also those retried inside the client: 429s are counted and
    # steer the adaptive limit.
    hooks.append(throttle_counter(metric_recorder()))
    hooks.append(speech_limiter().response_hook)
    # Outermost first: a 413 re-splits the chunk; an open circuit calls nothing; each call
    # holds a fleet slot; each real call to the API is measured.
    transcriber = ResplittingTranscriber(
        BreakingTranscriber(
            LimitedTranscriber(
                MeteredTranscriber(build_transcriber(settings), metric_recorder()),
                speech_limiter(),
                max_wait_s=settings.speech_slot_wait_s,
            ),
            speech_breaker(),
        )
    )
    return WorkerService(
        object_store(), job_repository(), workflow(), transcriber, settings, transcript_cache()
    )


@cache
def chunk_delivery_service() -> ChunkDeliveryService:
    return ChunkDeliveryService(
        worker_service(), message_queues(), get_settings(), metric_recorder()
    )


@cache
def merge_service() -> MergeService:
    return MergeService(
        object_store(), job_repository(), workflow(), transcript_cache(), notifier=notifier()
    )


@cache
def notifier() -> Notifier | None:
    settings = get_settings()
    if not (settings.webhook_secret_id or settings.webhook_secret):
        return None  # webhooks off: the API refuses uploads that name one
    plain = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    return WebhookNotifier(
        webhook_secret_source(settings.webhook_secret_id, plain),
        max_attempts=settings.webhook_max_attempts,
        timeout_s=settings.webhook_timeout_s,
    )


@cache
def job_service() -> JobService:
    return JobService(
        object_store(),
        job_repository(),
        get_settings(),
        queues=SqsQueueStats(),
        cache=_cache_administration(),
        webhooks_enabled=notifier() is not None,
        workflow=workflow(),
    )
