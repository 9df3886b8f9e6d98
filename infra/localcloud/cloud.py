"""`LocalCloud`: the whole pipeline on one machine, from template.yaml.

    with LocalCloud(parameter_overrides={"SpeechApiBaseUrl": speech.base_url},
                    extra_secrets={"database": ExtraSecret(db_json, "DatabaseSecretArn")},
                    secret_values={"SpeechApiKeySecret": "local-key"}) as cloud:
        s3 = cloud.boto3_client("s3")
        httpx.post(f"{cloud.api_url}/uploads", ...)

On entering: starts the emulator (moto by default, "localstack", or an http(s) URL of one that
is already running), provisions the template's resources on it, starts the function host and the
local API gateway. On leaving, stops them in reverse order.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final

from localcloud.api_gateway import ApiGateway
from localcloud.auth import LocalJwtAuth, RouteAuth
from localcloud.emulators import (
    DEFAULT_REGION,
    Emulator,
    ExternalEndpoint,
    LocalStackEmulator,
    MotoEmulator,
)
from localcloud.function_host import FunctionHost
from localcloud.provision import ExtraSecret, Stack, provision

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE: Final = Path(__file__).resolve().parents[2] / "template.yaml"
DEFAULT_STACK_NAME: Final = "sttpipe-local"


def make_emulator(kind: str, region: str = DEFAULT_REGION) -> Emulator:
    """ "moto", "localstack", or the URL of an endpoint someone else runs."""
    if kind == "moto":
        return MotoEmulator(region)
    if kind == "localstack":
        return LocalStackEmulator(region)
    if kind.startswith(("http://", "https://")):
        return ExternalEndpoint(kind, region)
    raise ValueError(f"unknown emulator {kind!r}: use moto, localstack or an http(s) URL")


class LocalCloud:
    """The template's stack on an emulator, with its functions and HTTP API running locally.

    emulator: "moto", "localstack", an endpoint URL, or an `Emulator` the caller started (it is
        then neither started nor stopped here, so one LocalStack can serve many clouds).
    parameter_overrides: template parameter values.
    secret_values: logical id of a template secret -> its value (e.g. the speech API key).
    extra_secrets: secrets created before parameters are bound; see `ExtraSecret`. Their ARNs
        are in `stack.extra_secret_arns`.
    function_env: added to every function's environment.
    concurrency: processes per function at most (int, or logical id -> int).
    log_dir: one log file per function (<LogicalId>.log); a new temporary directory if None.
    visibility_timeout_cap_s: TEST ONLY, caps the queues' visibility timeouts (see provision),
        and the workers' retry backoff, which is a visibility change too.
    poll: False leaves the SQS event sources alone: functions run only when `host.invoke` is
        called (how the tests feed events/ files to handlers, like `sam local invoke -e`).
    prewarm: start every function's processes, in parallel, before the cloud reports itself up.
    """

    def __init__(
        self,
        template_path: Path = DEFAULT_TEMPLATE,
        *,
        emulator: str | Emulator = "moto",
        stack_name: str = DEFAULT_STACK_NAME,
        region: str = DEFAULT_REGION,
        parameter_overrides: Mapping[str, str] | None = None,
        secret_values: Mapping[str, str] | None = None,
        extra_secrets: Mapping[str, ExtraSecret] | None = None,
        function_env: Mapping[str, str] | None = None,
        concurrency: int | Mapping[str, int] = 2,
        log_dir: Path | None = None,
        echo_logs: bool = False,
        api_port: int = 0,
        visibility_timeout_cap_s: int | None = None,
        poll: bool = True,
        prewarm: bool = False,
    ) -> None:
        self.template_path = template_path
        self._owns_emulator = isinstance(emulator, str)
        self.emulator = make_emulator(emulator, region) if isinstance(emulator, str) else emulator
        self.stack_name = stack_name
        self.parameter_overrides = dict(parameter_overrides or {})
        self.secret_values = dict(secret_values or {})
        self.extra_secrets = dict(extra_secrets or {})
        self.function_env = dict(function_env or {})
        if visibility_timeout_cap_s is not None:
            self.function_env.setdefault("STT_RETRY_BACKOFF_MAX_S", str(visibility_timeout_cap_s))
        self.concurrency = concurrency
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="sttpipe-logs-"))
        self.echo_logs = echo_logs
        self.api_port = api_port
        self.visibility_timeout_cap_s = visibility_timeout_cap_s
        self.poll = poll
        self.prewarm = prewarm
        self._exit = ExitStack()
        self._stack: Stack | None = None
        self._host: FunctionHost | None = None
        self._gateway: ApiGateway | None = None
        # Signs local tokens for the template's JWT authorizer: `cloud.auth.mint(tenant)`.
        self.auth = LocalJwtAuth()

    def __enter__(self) -> LocalCloud:
        try:
            if self._owns_emulator:
                self._exit.enter_context(self.emulator)
            self._stack = provision(
                self.template_path,
                self.emulator.endpoint,
                stack_name=self.stack_name,
                parameter_overrides=self.parameter_overrides,
                secret_values=self.secret_values,
                extra_secrets=self.extra_secrets,
                visibility_timeout_cap_s=self.visibility_timeout_cap_s,
            )
            self._host = FunctionHost(
                self._stack,
                self.log_dir,
                concurrency=self.concurrency,
                extra_env=self.function_env,
                echo_logs=self.echo_logs,
                prewarm=self.prewarm,
            )
            self._exit.callback(self._host.stop)
            if self.poll:
                self._host.start()
            self._gateway = self._exit.enter_context(
                ApiGateway(
                    self._host,
                    port=self.api_port,
                    auth=self.auth,
                    route_auth=RouteAuth.from_template(self.template_path),
                )
            )
        except BaseException:
            self._exit.close()
            raise
        log.info(
            "local cloud up: %s, API %s, logs in %s", self.endpoint_url, self.api_url, self.log_dir
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    @property
    def stack(self) -> Stack:
        assert self._stack is not None, "use LocalCloud as a context manager"
        return self._stack

    @property
    def host(self) -> FunctionHost:
        assert self._host is not None, "use LocalCloud as a context manager"
        return self._host

    @property
    def endpoint_url(self) -> str:
        return self.emulator.endpoint_url

    @property
    def api_url(self) -> str:
        return self.gateway.url

    @property
    def gateway(self) -> ApiGateway:
        assert self._gateway is not None, "use LocalCloud as a context manager"
        return self._gateway

    def boto3_client(self, service: str) -> Any:
        """A boto3 client for the emulator (fake credentials, the stack's region)."""
        return self.emulator.endpoint.client(service)
