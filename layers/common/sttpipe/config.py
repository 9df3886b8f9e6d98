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

    # Job database (RDS PostgreSQL): a libpq URL locally, a Secrets Manager secret on AWS
    # (the JSON RDS writes: host, port, username, password, dbname).
    database_url: SecretStr | None = None
    database_secret_id: str | None = None
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

    # Splitting.
    max_chunk_s: float = Field(default=30.0, gt=1.0)
    min_chunk_s: float = Field(default=5.0, gt=0.0)
    # Chunks of one job the speech API can take at once (it throttles above 2-3 parallel
    # calls); a short file is cut into about this many chunks so that none waits for another.
    worker_concurrency: int = Field(default=4, ge=1)

    # How many receives a chunk message gets before the worker gives up on it; keep equal to
    # the priority queues' redrive maxReceiveCount in template.yaml.
    max_receives: int = 3

    def queue_url(self, priority: Priority) -> str:
        return {
            Priority.HIGH: self.queue_url_high,
            Priority.NORMAL: self.queue_url_normal,
            Priority.LOW: self.queue_url_low,
        }[priority]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
