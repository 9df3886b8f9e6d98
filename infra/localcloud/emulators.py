"""AWS endpoints to run the pipeline on: embedded moto, LocalStack on the host, or any URL.

Each emulator is a context manager exposing `.endpoint` (URL, region, fake credentials) and
`.endpoint_url`. Neither needs Docker: moto runs in process or as a server, LocalStack as
`localstack-core` in its own virtualenv, which ./scripts/test installs.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, Self

import boto3
import httpx
from botocore.config import Config

log = logging.getLogger(__name__)

DEFAULT_REGION: Final = "us-east-1"
# LocalStack maps the access key "test" to its default account; moto accepts anything.
FAKE_ACCESS_KEY: Final = "test"
FAKE_SECRET_KEY: Final = "test"
LOCALSTACK_VENV_ENV: Final = "STT_LOCALSTACK_VENV"
DEFAULT_LOCALSTACK_VENV: Final = Path(__file__).resolve().parents[2] / ".venv-localstack"
# The services the pipeline uses (sts answers AWS::AccountId).
LOCALSTACK_SERVICES: Final = (
    "s3",
    "sqs",
    "stepfunctions",
    "secretsmanager",
    "sts",
    # operations: the alarm topic and its key, the domain event bus, alarms and dashboards
    "kms",
    "sns",
    "events",
    "cloudwatch",
)


@dataclass(frozen=True)
class Endpoint:
    """Where AWS calls go, with the fake credentials every emulator accepts."""

    endpoint_url: str
    region: str = DEFAULT_REGION
    access_key_id: str = FAKE_ACCESS_KEY
    secret_access_key: str = FAKE_SECRET_KEY

    def client(self, service: str) -> Any:
        """A new boto3 client (own session, so threads may each make theirs)."""
        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(
                s3={"addressing_style": "path"},  # bucket.localhost does not resolve everywhere
                retries={"mode": "standard", "max_attempts": 3},
            ),
        )

    def environment(self) -> dict[str, str]:
        """Environment variables that point boto3 in another process at this endpoint."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }


class Emulator(Protocol):
    endpoint: Endpoint

    @property
    def endpoint_url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class _Lifecycle(ABC):
    """Context manager plumbing shared by the emulators."""

    endpoint: Endpoint

    @property
    def endpoint_url(self) -> str:
        return self.endpoint.endpoint_url

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoEmulator(_Lifecycle):
    """moto's server in a thread of this process, on 127.0.0.1 and a free port.

    moto keeps its state per process: starting resets it, so every start is a fresh cloud.
    """

    def __init__(self, region: str = DEFAULT_REGION) -> None:
        self.region = region
        self._server: Any = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        # Its werkzeug server logs every request; only errors are worth seeing.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        # moto's Step Functions interpreter calls the services back at localhost:$MOTO_PORT.
        os.environ["MOTO_PORT"] = str(port)
        self.endpoint = Endpoint(f"http://{host}:{port}", self.region)
        with httpx.Client(base_url=self.endpoint_url, timeout=10) as http:
            http.post("/moto-api/reset").raise_for_status()
            http.post(
                "/moto-api/config", json={"stepfunctions": {"execute_state_machine": True}}
            ).raise_for_status()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


class LocalStackEmulator(_Lifecycle):
    """LocalStack (localstack-core, no Docker) in a child process, on 127.0.0.1 only.

    It runs from its own virtualenv (its pins clash with the project's): the path comes from
    $STT_LOCALSTACK_VENV, by default .venv-localstack in the repository. State and logs live in a
    temporary directory that is removed on stop (unless `keep_dir`).
    """

    def __init__(
        self,
        region: str = DEFAULT_REGION,
        *,
        venv: Path | None = None,
        services: tuple[str, ...] = LOCALSTACK_SERVICES,
        startup_timeout_s: float = 90.0,
        keep_dir: bool = False,
    ) -> None:
        self.region = region
        self.venv = venv or Path(os.environ.get(LOCALSTACK_VENV_ENV, DEFAULT_LOCALSTACK_VENV))
        self.services = services
        self.startup_timeout_s = startup_timeout_s
        self.keep_dir = keep_dir
        self.workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None, "start() first"
        return self.workdir / "localstack.log"

    def available(self) -> bool:
        return self.python.exists()

    def start(self) -> None:
        if not self.available():
            raise RuntimeError(
                f"LocalStack is not installed at {self.venv} (set ${LOCALSTACK_VENV_ENV}); "
                "./scripts/test installs it there"
            )
        port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="localstack-"))
        address = f"127.0.0.1:{port}"
        env = {
            **os.environ,
            "GATEWAY_LISTEN": address,
            "GATEWAY_SERVER": "hypercorn",  # the default server binds 0.0.0.0 whatever it is told
            "LOCALSTACK_HOST": address,
            "DNS_ADDRESS": "0",
            "OVERRIDE_IN_DOCKER": "0",
            "DISABLE_EVENTS": "1",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "SQS_ENDPOINT_STRATEGY": "path",  # queue URLs on the gateway address itself
            "SERVICES": ",".join(self.services),
            "LOCALSTACK_VOLUME_DIR": str(self.workdir / "volume"),
            "FILESYSTEM_ROOT": str(self.workdir / "filesystem"),
        }
        self.endpoint = Endpoint(f"http://{address}", self.region)
        with self.log_path.open("wb") as log_file:
            self._process = subprocess.Popen(
                [str(self.python), "-m", "localstack.runtime.main"],
                env=env,
                cwd=self.workdir,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not it
            )
        try:
            self._wait_healthy()
            self._warm_up()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(base_url=self.endpoint_url, timeout=2) as http:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise RuntimeError(f"LocalStack exited early; see {self.log_path}")
                try:
                    states = http.get("/_localstack/health").json()["services"]
                    if all(states.get(s) in ("available", "running") for s in self.services):
                        return
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                time.sleep(0.25)
        raise TimeoutError(
            f"LocalStack not healthy in {self.startup_timeout_s} s; see {self.log_path}"
        )

    def _warm_up(self) -> None:
        # Each service loads lazily on its first call (1-8 s); pay that here, not in a test.
        calls = {
            "s3": lambda c: c.list_buckets(),
            "sqs": lambda c: c.list_queues(),
            "stepfunctions": lambda c: c.list_state_machines(),
            "secretsmanager": lambda c: c.list_secrets(),
            "sts": lambda c: c.get_caller_identity(),
            "kms": lambda c: c.list_keys(),
            "sns": lambda c: c.list_topics(),
            "events": lambda c: c.list_event_buses(),
            "cloudwatch": lambda c: c.list_dashboards(),
        }
        for service in self.services:
            if service in calls:
                calls[service](self.endpoint.client(service))

    def stop(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    log.warning("LocalStack did not stop in 30 s; killing it")
                    self._process.kill()
                    self._process.wait()
            self._process = None
        if self.workdir is not None and not self.keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


class ExternalEndpoint(_Lifecycle):
    """An endpoint someone else runs (e.g. LocalStack in Docker at http://localhost:4566).

    Nothing is started or stopped; `start` only checks it answers.
    """

    def __init__(self, endpoint_url: str, region: str = DEFAULT_REGION) -> None:
        self.endpoint = Endpoint(endpoint_url.rstrip("/"), region)

    def start(self) -> None:
        self.endpoint.client("sts").get_caller_identity()

    def stop(self) -> None:
        pass
