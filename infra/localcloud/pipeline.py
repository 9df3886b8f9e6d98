"""The whole pipeline on this machine: a scratch PostgreSQL database (RDS), the local speech
server (Cloud.ru) and the template's stack on an emulator with its functions running.

    with LocalPipeline() as pipeline:
        client = PipelineClient(pipeline.api_url)

Parameter overrides come from samconfig.toml's `local` environment (the same ones a Docker
LocalStack deployment uses), then from the caller.
"""

from __future__ import annotations

import json
import logging
import secrets
import tomllib
from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any

from localcloud.cloud import DEFAULT_TEMPLATE, LocalCloud
from localcloud.provision import ExtraSecret
from localcloud.services import ServiceUnavailable, ensure_redis, scratch_database
from localcloud.speech_server import SpeechServer, Switches
from sttpipe.adapters.migrations import migrate
from sttpipe.adapters.redis_connection import redis_client
from sttpipe.cache import CacheUnavailable
from sttpipe.cache.redis import RedisCache

log = logging.getLogger(__name__)

SAMCONFIG = DEFAULT_TEMPLATE.with_name("samconfig.toml")

# Webhook receivers of local jobs run on 127.0.0.1.
LOCAL_FUNCTION_ENV = {"STT_WEBHOOK_ALLOW_INSECURE": "true"}
LOCAL_TENANT = "local"


def samconfig_local() -> tuple[str, dict[str, str]]:
    """Stack name and parameter overrides of samconfig.toml's `local` environment."""
    config = tomllib.loads(SAMCONFIG.read_text())["local"]
    stack_name = config["global"]["parameters"]["stack_name"]
    overrides = config.get("deploy", {}).get("parameters", {}).get("parameter_overrides", "")
    return stack_name, dict(pair.split("=", 1) for pair in overrides.split())


class LocalPipeline:
    """See the module docstring. `speech_switches` sets the speech server's latency and faults,
    `speech_workers` how many requests it decodes at once (default: one per core);
    `parameter_overrides` and `function_env` add to the local defaults; `cache_namespace`
    names the cache's namespace in the local Redis, kept after exit for the next pipeline that
    names it (default: a namespace of its own, dropped at exit); every other keyword
    (emulator, concurrency, log_dir, echo_logs, api_port, visibility_timeout_cap_s, poll,
    prewarm) goes to LocalCloud as it is."""

    def __init__(
        self,
        *,
        engine: str = "faster-whisper",
        speech_switches: Switches | None = None,
        speech_workers: int | None = None,
        parameter_overrides: Mapping[str, str] | None = None,
        function_env: Mapping[str, str] | None = None,
        cache_namespace: str | None = None,
        **cloud_options: Any,
    ) -> None:
        self._engine = engine
        self._switches = speech_switches
        self._speech_workers = speech_workers
        self._overrides = dict(parameter_overrides or {})
        self._function_env = {**LOCAL_FUNCTION_ENV, **(function_env or {})}
        self._cloud_options = cloud_options
        self._exit = ExitStack()
        self.speech: SpeechServer
        self.cloud: LocalCloud
        self.database_url: str
        self.redis_url: str | None = None
        self._keep_cache = cache_namespace is not None
        self.cache_namespace = cache_namespace or f"stt-local-{secrets.token_hex(4)}"

    def __enter__(self) -> LocalPipeline:
        try:
            database = self._exit.enter_context(scratch_database())
            migrate(database.url)
            self.database_url = database.url
            cache_env = self._cache_env()
            api_key = secrets.token_urlsafe(24)
            self.speech = self._exit.enter_context(
                SpeechServer(
                    engine_name=self._engine,
                    api_key=api_key,
                    switches=self._switches,
                    workers=self._speech_workers,
                )
            )
            stack_name, overrides = samconfig_local()
            self.cloud = self._exit.enter_context(
                LocalCloud(
                    stack_name=stack_name,
                    parameter_overrides={
                        **overrides,
                        "SpeechApiBaseUrl": self.speech.base_url,
                        **self._overrides,
                    },
                    secret_values={"SpeechApiKeySecret": api_key},
                    extra_secrets={
                        "database": ExtraSecret(
                            json.dumps(database.rds_secret()), parameter="DatabaseSecretArn"
                        )
                    },
                    function_env={**cache_env, **self._function_env},
                    **self._cloud_options,
                )
            )
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def _cache_env(self) -> dict[str, str]:
        """The cache's L2 on the local Redis, under this pipeline's own namespace (dropped at
        exit, unless it was named) so that pipelines sharing one Redis never see each other's
        entries."""
        env = {"STT_CACHE_NAMESPACE": self.cache_namespace}
        try:
            self.redis_url = ensure_redis()
        except ServiceUnavailable as exc:
            log.warning("the cache runs without Redis (L2): %s", exc)
            return env
        if not self._keep_cache:
            self._exit.callback(_drop_cache_namespace, self.redis_url, self.cache_namespace)
        # A single server without AUTH, though the template's default stack makes a cluster
        # (ElastiCache Serverless) with a user of its own that the local cloud does not.
        return {
            **env,
            "STT_REDIS_URL": self.redis_url,
            "STT_REDIS_CLUSTER": "false",
            "STT_REDIS_AUTH_SECRET_ID": "",  # empty counts as unset
        }

    @property
    def api_url(self) -> str:
        return self.cloud.api_url

    def token(
        self, tenant_id: str = LOCAL_TENANT, *, operator: bool = False, priority: bool = True
    ) -> str:
        """A bearer token the local API gateway accepts, for one tenant: allowed priority
        "high" unless `priority` is false; an operator's may also see the fleet's statistics
        and invalidate the shared cache."""
        groups = (("priority",) if priority else ()) + (("operators",) if operator else ())
        return self.cloud.auth.mint(tenant_id, groups=groups)

    def describe(self) -> dict[str, Any]:
        """Where everything runs, for people and for `stt up`'s state file."""
        token = self.token()
        return {
            "api_url": self.api_url,
            # The token rides in the fragment: it never reaches a server's logs.
            "web_page": f"{self.api_url}/web/#token={token}",
            "token": token,
            "aws_endpoint_url": self.cloud.endpoint_url,
            "speech_api": self.speech.base_url,
            "database": self.database_url,
            "redis": self.redis_url,
            "cache_namespace": self.cache_namespace,
            "logs": str(self.cloud.log_dir),
        }


def _drop_cache_namespace(url: str, namespace: str) -> None:
    try:
        RedisCache(redis_client(url, 2.0), namespace, ttl_s=1).drop_namespace()
    except CacheUnavailable as exc:
        log.warning("could not drop the cache namespace %s: %s", namespace, exc)
