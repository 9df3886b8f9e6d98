"""Composition root: what a Lambda container is made of, and the only module that knows both the
services and the adapters they run on.

`Container` builds every adapter and service on first use and keeps it for the container's later
invocations. Tests hand it fakes: any adapter given to its constructor is used instead of the real
one, and every service is still wired exactly as in production (the event bus and its metrics,
the cache and its metrics, the speech API's decorators). Handlers reach the container through the
functions at the end of this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache, cached_property

from aws_lambda_powertools import Logger

from sttpipe.adapters.eventbridge import EventBridgePublisher
from sttpipe.adapters.metrics import PowertoolsRecorder, cache_metric_sink
from sttpipe.adapters.postgres import PostgresWebhookKeys, job_repository_from_settings
from sttpipe.adapters.redis_connection import RedisClient
from sttpipe.adapters.s3 import S3ObjectStore
from sttpipe.adapters.secrets import signing_key_source
from sttpipe.adapters.sqs import SqsMessageQueues, SqsQueueStats
from sttpipe.adapters.stepfunctions import StepFunctionsWorkflow
from sttpipe.cache.factory import build_transcript_cache, redis_for
from sttpipe.cache.transcripts import CacheAdministration, TieredTranscriptCache
from sttpipe.config import Settings, get_settings
from sttpipe.domain.models import SpeechCapacity
from sttpipe.ports import (
    EventPublisher,
    JobRepository,
    MessageQueues,
    MetricRecorder,
    Notifier,
    ObjectStore,
    QueueStats,
    SpeechCapacityGauge,
    WebhookKeyStore,
    Workflow,
)
from sttpipe.services.deliveries import ChunkDeliveryService
from sttpipe.services.event_metrics import EventMetrics
from sttpipe.services.jobs import JobService
from sttpipe.services.lifecycle import FanOut, PublishingJobRepository
from sttpipe.services.merging import MergeService
from sttpipe.services.reconciling import ReconcilerService
from sttpipe.services.splitting import SplitterService
from sttpipe.services.transcribing import WorkerService
from sttpipe.services.webhook_keys import TenantWebhookSecrets
from sttpipe.services.webhooks import JobEndAnnouncer, WebhookService
from sttpipe.speech.base import Transcriber
from sttpipe.speech.breaker import Breaker, BreakingTranscriber, circuit_breaker
from sttpipe.speech.fleet_limit import (
    FleetLimiter,
    LimitedTranscriber,
    LimitPolicy,
    LocalSlots,
    RedisSlots,
)
from sttpipe.speech.latency import FleetSpeechCapacity, LatencyLog
from sttpipe.speech.metered import MeteredTranscriber, throttle_counter
from sttpipe.speech.resplit import ResplittingTranscriber

logger = Logger()


class Container:
    def __init__(
        self,
        settings: Settings,
        *,
        store: ObjectStore | None = None,
        job_store: JobRepository | None = None,
        workflow: Workflow | None = None,
        queues: MessageQueues | None = None,
        queue_stats: QueueStats | None = None,
        bus: EventPublisher | None = None,
        metrics: MetricRecorder | None = None,
        transcript_cache: TieredTranscriptCache | None = None,
        speech_api: Transcriber | None = None,
        notifier: Notifier | None = None,
        webhook_keys: WebhookKeyStore | None = None,
    ) -> None:
        """`job_store` is the repository underneath the one that announces each transition;
        `bus` receives the lifecycle events besides their metrics; `speech_api` is the client
        the speech decorators wrap."""
        self.settings = settings
        given = {
            "store": store,
            "job_store": job_store,
            "workflow": workflow,
            "queues": queues,
            "queue_stats": queue_stats,
            "bus": bus,
            "metrics": metrics,
            "transcript_cache": transcript_cache,
            "speech_api": speech_api,
            "notifier": notifier,
            "webhook_keys": webhook_keys,
        }
        # A value in the instance's dict is what a cached_property answers from then on.
        self.__dict__.update({name: value for name, value in given.items() if value is not None})

    # ---- adapters ---------------------------------------------------------------------------

    @cached_property
    def store(self) -> ObjectStore:
        return S3ObjectStore(self.settings.bucket)

    @cached_property
    def job_store(self) -> JobRepository:
        return job_repository_from_settings(self.settings)

    @cached_property
    def workflow(self) -> Workflow:
        return StepFunctionsWorkflow(self.settings.state_machine_arn)

    @cached_property
    def queues(self) -> MessageQueues:
        return SqsMessageQueues()

    @cached_property
    def queue_stats(self) -> QueueStats:
        return SqsQueueStats()

    @cached_property
    def metrics(self) -> MetricRecorder:
        return PowertoolsRecorder()

    @cached_property
    def bus(self) -> EventPublisher | None:
        name = self.settings.event_bus_name
        return EventBridgePublisher(name, self.metrics) if name else None

    @cached_property
    def redis(self) -> RedisClient | None:
        """The container's one Redis client: cache L2, fleet limit and circuit breaker."""
        return redis_for(self.settings)

    @cached_property
    def transcript_cache(self) -> TieredTranscriptCache | None:
        """None when STT_CACHE_ENABLED is off."""
        emit = cache_metric_sink(self.metrics)
        return build_transcript_cache(self.settings, self.redis, emit=emit)

    @cached_property
    def webhook_keys(self) -> WebhookKeyStore:
        return PostgresWebhookKeys(job_repository_from_settings(self.settings).pool)

    @cached_property
    def webhook_secrets(self) -> TenantWebhookSecrets:
        """Each tenant's secret, derived from the deployment's signing key."""
        settings = self.settings
        plain = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        return TenantWebhookSecrets(
            self.webhook_keys, signing_key_source(settings.webhook_secret_id, plain)
        )

    @cached_property
    def notifier(self) -> Notifier:
        # Imported here: httpx stays out of the functions that call no one over HTTP.
        from sttpipe.adapters.webhook import WebhookNotifier

        settings = self.settings
        return WebhookNotifier(
            max_attempts=settings.webhook_max_attempts,
            timeout_s=settings.webhook_timeout_s,
            deadline_s=settings.webhook_deadline_s,
            allow_private=settings.webhook_allow_insecure,
        )

    @cached_property
    def announcer(self) -> JobEndAnnouncer | None:
        """None when webhooks are off: the API then refuses uploads that name one."""
        url = self.settings.webhook_queue_url
        return JobEndAnnouncer(self.queues, url) if url else None

    @cached_property
    def speech_api(self) -> Transcriber:
        """The Cloud.ru client on the container's HTTP/2 connection. Its response hooks see
        every attempt, retried ones included: 429s are counted and steer the adaptive limit."""
        from sttpipe.speech.cloudru import build_transcriber, get_http_client  # as notifier's

        hooks = get_http_client(self.settings).event_hooks["response"]
        hooks.append(throttle_counter(self.metrics))
        hooks.append(self.speech_limiter.response_hook)
        return build_transcriber(self.settings)

    @cached_property
    def speech_limiter(self) -> FleetLimiter:
        """The fleet-wide limit on speech calls in flight, on Redis when there is one."""
        settings = self.settings
        policy = LimitPolicy(
            max_limit=settings.speech_limit,
            min_limit=min(settings.speech_limit_min, settings.speech_limit),
            decrease=settings.speech_limit_decrease,
            hold_s=settings.speech_limit_hold_s,
            lease_s=settings.speech_lease_s,
            fair_share=settings.speech_fair_share,
        )
        shared = RedisSlots(self.redis, settings.cache_namespace, policy) if self.redis else None
        return FleetLimiter(shared, LocalSlots(policy), redis_cooldown_s=settings.cache_cooldown_s)

    @cached_property
    def speech_breaker(self) -> Breaker:
        """The circuit breaker on the speech API, shared by the fleet through Redis."""
        settings = self.settings
        return circuit_breaker(
            self.redis,
            settings.cache_namespace,
            failures=settings.speech_breaker_failures,
            cooldown_s=settings.speech_breaker_cooldown_s,
            trial_lease_s=settings.speech_lease_s,
            redis_cooldown_s=settings.cache_cooldown_s,
        )

    @cached_property
    def latency_log(self) -> LatencyLog | None:
        """The speech API's recent latencies, shared by the fleet in Redis."""
        return LatencyLog(self.redis, self.settings.cache_namespace) if self.redis else None

    @cached_property
    def speech_capacity(self) -> SpeechCapacityGauge:
        settings = self.settings
        configured = SpeechCapacity(
            fixed_s=settings.speech_latency_fixed_s,
            per_audio_s=settings.speech_latency_per_audio_s,
            tail=1.0,
            limit=settings.speech_limit,
        )
        return FleetSpeechCapacity(self.latency_log, self.speech_limiter, configured)

    # ---- what the services see --------------------------------------------------------------

    @cached_property
    def events(self) -> EventPublisher:
        """Every lifecycle event is counted as a metric and, with a bus, announced on it."""
        counted = EventMetrics(self.metrics)
        return counted if self.bus is None else FanOut(counted, self.bus)

    @cached_property
    def jobs(self) -> JobRepository:
        """Every transition recorded is announced where it happens."""
        return PublishingJobRepository(self.job_store, self.events)

    @cached_property
    def transcriber(self) -> Transcriber:
        # Outermost first: a 413 re-splits the chunk; an open circuit calls nothing; each call
        # holds a fleet slot; each real call to the API is measured, and its latency learnt.
        return ResplittingTranscriber(
            BreakingTranscriber(
                LimitedTranscriber(
                    MeteredTranscriber(self.speech_api, self.metrics, self.latency_log),
                    self.speech_limiter,
                    max_wait_s=self.settings.speech_slot_wait_s,
                ),
                self.speech_breaker,
            )
        )

    @cached_property
    def cache_administration(self) -> CacheAdministration | None:
        cache = self.transcript_cache
        return None if cache is None else CacheAdministration(cache, self.events)

    # ---- services ---------------------------------------------------------------------------

    @cached_property
    def splitter_service(self) -> SplitterService:
        return SplitterService(
            self.store,
            self.jobs,
            self.workflow,
            self.settings,
            self.transcript_cache,
            record=self.metrics,
            capacity=self.speech_capacity,
            announcer=self.announcer,
            ahead=self.queues if self.transcribes_ahead else None,
        )

    @property
    def transcribes_ahead(self) -> bool:
        """Chunks go to the workers as they are cut only with the cache's Redis, whose
        single-flight lease makes a chunk sent ahead and its task share one call."""
        return self.settings.transcribe_ahead and None not in (self.transcript_cache, self.redis)

    @cached_property
    def worker_service(self) -> WorkerService:
        return WorkerService(
            self.store,
            self.jobs,
            self.workflow,
            self.transcriber,
            self.settings,
            self.transcript_cache,
        )

    @cached_property
    def chunk_delivery_service(self) -> ChunkDeliveryService:
        return ChunkDeliveryService(self.worker_service, self.queues, self.settings, self.metrics)

    @cached_property
    def merge_service(self) -> MergeService:
        return MergeService(
            self.store, self.jobs, self.workflow, self.transcript_cache, announcer=self.announcer
        )

    @cached_property
    def reconciler_service(self) -> ReconcilerService:
        return ReconcilerService(
            self.store,
            self.jobs,
            self.workflow,
            self.settings,
            record=self.metrics,
            announcer=self.announcer,
        )

    @cached_property
    def webhook_service(self) -> WebhookService:
        return WebhookService(self.jobs, self.notifier, self.webhook_secrets.signing_secrets)

    @cached_property
    def job_service(self) -> JobService:
        return JobService(
            self.store,
            self.jobs,
            self.settings,
            queues=self.queue_stats,
            cache=self.cache_administration,
            announcer=self.announcer,
            webhook_secrets=self.webhook_secrets if self.announcer else None,
            workflow=self.workflow,
            known=self.transcript_cache,
        )


# ---- what the handlers call: this container's, made on first use ---------------------------


@cache
def container() -> Container:
    return Container(get_settings())


def prepare(*services: Callable[[], object]) -> None:
    """Build a handler's services in the init phase (at import): Lambda runs it before the
    first event, so a provisioned or pre-warmed environment answers its first event as fast as
    its later ones. What fails here is logged and left to the first event, which builds it
    again and reports why. Outside a function's runtime (tests, tools importing a handler)
    nothing is built."""
    if "AWS_LAMBDA_FUNCTION_NAME" not in os.environ:
        return
    for build in services:
        try:
            build()
        except Exception:
            logger.warning("could not build %s in the init phase", build.__name__, exc_info=True)


def splitter_service() -> SplitterService:
    return container().splitter_service


def chunk_delivery_service() -> ChunkDeliveryService:
    return container().chunk_delivery_service


def merge_service() -> MergeService:
    return container().merge_service


def reconciler_service() -> ReconcilerService:
    return container().reconciler_service


def webhook_service() -> WebhookService:
    return container().webhook_service


def job_service() -> JobService:
    return container().job_service


def metric_recorder() -> MetricRecorder:
    return container().metrics


def transcript_cache() -> TieredTranscriptCache | None:
    return container().transcript_cache
