"""Configuration from environment variables (prefix `STT_`), with documented defaults.

docs/configuration.md lists every variable; keep the two in step.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sttpipe.domain.models import Priority


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STT_", extra="ignore", env_ignore_empty=True)

    # Storage and orchestration (set by template.yaml on AWS, by the local cloud locally).
    bucket: str = ""
    state_machine_arn: str = ""
    queue_url_high: str = ""
    queue_url_normal: str = ""
    queue_url_low: str = ""
    # EventBridge bus for the domain events (sttpipe.domain.events); empty publishes none.
    event_bus_name: str = ""

    # Job database (RDS PostgreSQL): a libpq URL locally, a Secrets Manager secret on AWS
    # (the JSON RDS writes: host, port, username, password, dbname).
    database_url: SecretStr | None = None
    database_secret_id: str | None = None
    # Win over the secret's host and dbname: the stack's own database is reached through its
    # RDS Proxy, and the secret RDS manages for it holds only the username and password.
    database_host: str | None = None
    database_name: str | None = None
    database_pool_max: int = 2

    # Speech API (Cloud.ru foundation models, OpenAI-compatible).
    speech_base_url: str = "https://foundation-models.api.cloud.ru/v1"
    speech_model: str = "openai/whisper-large-v3"
    speech_api_key: SecretStr | None = None  # local development only; prefer the secret
    speech_api_key_secret_id: str | None = None
    speech_ca_bundle: str | None = None
    speech_connect_timeout_s: float = 10.0
    speech_read_timeout_s: float = 120.0
    speech_max_attempts: int = 3
    speech_response_format: str = "json"

    # Jobs.
    default_language: str | None = None  # None lets the API detect it
    default_priority: Priority = Priority.NORMAL
    max_upload_bytes: int = 500 * 1024 * 1024
    max_duration_s: int = 4 * 3600
    upload_url_expiry_s: int = 900
    download_url_expiry_s: int = 3600

    # Splitting. A job is cut into the chunks that the speech API finishes soonest
    # (sttpipe.services.sizing), none longer than max_chunk_s nor shorter than min_chunk_s; the
    # longest a chunk may be is 600 s (its FLAC stays under the API's 25 MB).
    max_chunk_s: float = Field(default=300.0, gt=1.0, le=600.0)
    min_chunk_s: float = Field(default=5.0, gt=0.0)
    # The speech API's latency until the fleet has measured it (sttpipe.speech.latency): a call
    # takes speech_latency_fixed_s plus speech_latency_per_audio_s per second of audio.
    speech_latency_fixed_s: float = Field(default=0.5, ge=0)
    speech_latency_per_audio_s: float = Field(default=0.01, ge=0)
    # The pipeline's own time around each chunk (queues, storage, task answers), per wave.
    chunk_overhead_s: float = Field(default=0.25, ge=0)
    # Aim every chunk at this length instead (within the bounds): reproducible chunking for
    # benchmarks and tests. None sizes each job for speed.
    chunk_target_s: float | None = Field(default=None, gt=0)
    # Hand each chunk to the workers as soon as it is cut, before the split ends and the state
    # machine's Map sends its task: the speech API starts on the first chunks while the rest of
    # the recording is still cut, and the Map's tasks find their transcripts waiting. Needs the
    # cache's Redis (its single-flight lease keeps a chunk from being paid for twice).
    transcribe_ahead: bool = True

    # The token group (cognito:groups) whose members may upload with priority "high";
    # operators may too.
    high_priority_group: str = "priority"

    # How many receives a message gets before its function gives up on it (the worker on a
    # chunk, the splitter on an upload, ending its job FAILED); keep equal to the queues'
    # redrive maxReceiveCount in template.yaml.
    max_receives: int = 3

    # How long the deploy's migration (MigrationsFunction) keeps trying to reach the database: a
    # new RDS Proxy's target registers for a few minutes after CloudFormation created it. Keep
    # under the function's timeout (300 s).
    migration_wait_s: float = Field(default=240.0, ge=0)
    # A delivery that failed for a reason that may pass is retried after
    # retry_backoff_base_s * 2**(receive - 1), jittered down to half, at most retry_backoff_max_s,
    # rather than after the queue's visibility timeout (which must cover the function's timeout).
    retry_backoff_base_s: float = Field(default=30.0, ge=0)
    retry_backoff_max_s: float = Field(default=900.0, ge=0)

    # Back-pressure on the speech API (sttpipe.speech.fleet_limit): speech calls in flight across
    # the whole fleet (shared in Redis, per container while Redis is down), cut on 429s by
    # speech_limit_decrease at most once per speech_limit_hold_s, raised by 1/limit per success.
    speech_limit: int = Field(default=4, ge=1)
    speech_limit_min: int = Field(default=1, ge=1)
    speech_limit_decrease: float = Field(default=0.5, gt=0, lt=1)
    speech_limit_hold_s: float = Field(default=2.0, ge=0)
    # Waiters for a slot are served by their tenant's share of the slots (then by arrival).
    speech_fair_share: bool = True
    # A slot not released for this long is a dead worker's; keep above the worker's timeout.
    speech_lease_s: float = Field(default=330.0, gt=0)
    speech_slot_wait_s: float = Field(default=60.0, ge=0)
    # After this many calls in a row failed (5xx, timeout, connection), stop calling for the
    # cool-down; the chunk's message is put back on its queue with a delay meanwhile.
    speech_breaker_failures: int = Field(default=3, ge=1)
    speech_breaker_cooldown_s: float = Field(default=30.0, gt=0)
    # How often one chunk may be put back that way; after that a chunk the API was not called
    # for counts as a failed delivery, so that a long outage still ends the job.
    max_deferrals: int = Field(default=20, ge=0)

    # Worker: SendTaskHeartbeat every this many seconds while a chunk is being transcribed;
    # keep well under the template's ChunkHeartbeatSeconds.
    heartbeat_interval_s: float = Field(default=60.0, gt=0)
    # A chunk message that is malformed or larger than this goes straight to its queue's DLQ.
    max_message_bytes: int = Field(default=16 * 1024, ge=1024)
    dead_letter_url_high: str = ""
    dead_letter_url_normal: str = ""
    dead_letter_url_low: str = ""

    # Transcript cache (sttpipe.cache): L1 this container's memory, L2 Redis (ElastiCache),
    # L3 the job database's chunk_cache table. docs/configuration.md, "Cache", explains each.
    cache_enabled: bool = True
    cache_namespace: str = Field(default="stt", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Off by default: a hit across tenants tells one customer another has the same recording.
    cache_share_across_tenants: bool = False
    redis_url: SecretStr | None = None  # redis:// or rediss://; wins over redis_endpoint
    redis_endpoint: str | None = None  # host:port of ElastiCache (TLS), the template's parameter
    redis_cluster: bool = False  # a Redis Cluster (ElastiCache Serverless, cluster mode enabled)
    # Secrets Manager secret (JSON username, password) of the ElastiCache user; unset: no AUTH
    redis_auth_secret_id: str | None = None
    cache_l1_max_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    cache_l1_ttl_s: float = Field(default=3600.0, gt=0)
    cache_l2_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    cache_l3_ttl_s: float = Field(default=90 * 24 * 3600.0, gt=0)
    cache_redis_timeout_s: float = Field(default=0.25, gt=0)
    cache_db_timeout_s: float = Field(default=0.5, gt=0)
    cache_cooldown_s: float = Field(default=30.0, ge=0)
    cache_sync_interval_s: float = Field(default=5.0, ge=0)
    cache_lease_s: float = Field(default=180.0, gt=0)
    cache_lease_wait_s: float = Field(default=60.0, ge=0)
    cache_warm_limit: int = Field(default=500, ge=0)
    cache_warm_min_hits: int = Field(default=1, ge=0)

    # The reconciler (scheduled): jobs whose status has not changed for reconcile_after_s are
    # checked against their execution, up to reconcile_batch per run. A SPLITTING job with no
    # stored split is ended only after stalled_split_after_s without a delivery of its upload:
    # longer than the upload queue's visibility timeout (5400 s) plus the splitter's (900 s).
    reconcile_after_s: float = Field(default=300.0, ge=0)
    reconcile_batch: int = Field(default=100, ge=1)
    stalled_split_after_s: float = Field(default=7200.0, ge=0)

    # Completion webhooks: the merge (and a job answered from the cache) queues a notice here;
    # webhooks are on where it is set. The webhook function delivers it (sttpipe.adapters.webhook),
    # signed with the HMAC key in Secrets Manager on AWS.
    webhook_queue_url: str | None = None
    webhook_secret_id: str | None = None
    webhook_secret: SecretStr | None = None  # local development only; prefer the secret
    # Per invocation of the webhook function; the queue redelivers after that, then DLQs.
    webhook_max_attempts: int = Field(default=3, ge=1)
    webhook_timeout_s: float = Field(default=5.0, gt=0)  # per connect, read, write
    webhook_deadline_s: float = Field(default=10.0, gt=0)  # per attempt, all included
    # Local only: allow http:// and private addresses (a receiver on 127.0.0.1).
    webhook_allow_insecure: bool = False

    def queue_url(self, priority: Priority) -> str:
        return {
            Priority.HIGH: self.queue_url_high,
            Priority.NORMAL: self.queue_url_normal,
            Priority.LOW: self.queue_url_low,
        }[priority]

    def dead_letter_url(self, priority: Priority) -> str:
        return {
            Priority.HIGH: self.dead_letter_url_high,
            Priority.NORMAL: self.dead_letter_url_normal,
            Priority.LOW: self.dead_letter_url_low,
        }[priority]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
