"""A real Redis Cluster for tests: three `redis-server --cluster-enabled yes` primaries on free
ports of 127.0.0.1, joined with `redis-cli --cluster create`, as ElastiCache Serverless (always
cluster mode) would answer; with `tls=True` it speaks only TLS, as ElastiCache Serverless does,
with a certificate from a CA of its own (`ca_file`); with `users` (ACL file lines) its `default`
user is off, as in the stack's cache user group, and clients must sign in as one of them.
Nothing is kept on disk beyond the run."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

NODES = 3


class ClusterUnavailable(RuntimeError):
    """redis-server or redis-cli is missing, or the cluster did not come up."""


def running_cluster(*, tls: bool = False, users: Sequence[str] = ()) -> Iterator[LocalRedisCluster]:
    """A started cluster for a fixture to `yield from`, stopped after. Where redis-server is
    missing the test is skipped, but in CI (scripts/test installs it) that is an error: a
    cluster test must never pass by not running."""
    try:
        started = LocalRedisCluster(tls=tls, users=users)
    except ClusterUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    with started:
        yield started


def _free_port() -> int:
    """A port free with its cluster bus port (10000 above it, so under 55536: the kernel's own
    picks are often too high for that)."""
    while True:
        port = random.randrange(20_000, 30_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


class LocalRedisCluster:
    def __init__(self, *, tls: bool = False, users: Sequence[str] = ()) -> None:
        if not (shutil.which("redis-server") and shutil.which("redis-cli")):
            raise ClusterUnavailable("redis-server and redis-cli are needed for a Redis Cluster")
        if tls and not shutil.which("openssl"):
            raise ClusterUnavailable("openssl is needed for a TLS Redis Cluster's certificates")
        self.tls = tls
        self.users = list(users)
        self._dir = tempfile.TemporaryDirectory(prefix="stt-redis-cluster-")
        # Its own set-up and client() sign in as an administrator when `default` is off.
        self._admin = {"username": "admin", "password": secrets.token_hex(16)} if users else {}
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        self.ports: list[int] = []
        while len(self.ports) < NODES:
            if (port := _free_port()) not in self.ports:
                self.ports.append(port)
        self._servers: list[subprocess.Popen[bytes]] = []
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.ports[0]}/0"

    @property
    def _client_options(self) -> dict[str, Any]:
        tls = {"ssl": True, "ssl_ca_certs": self.ca_file} if self.tls else {}
        return {**tls, **self._admin}

    def _acl_file(self) -> list[str]:
        """The nodes' users: `default` off, the administrator and `users`."""
        path = Path(self._dir.name) / "users.acl"
        admin = f"user {self._admin['username']} on >{self._admin['password']} ~* &* +@all"
        path.write_text("\n".join(["user default off", admin, *self.users]) + "\n")
        return ["--aclfile", str(path)]

    def _make_certificates(self) -> list[str]:
        """A CA and a certificate for 127.0.0.1 signed by it; the nodes' TLS arguments."""
        directory = Path(self._dir.name)
        ca_key, key, request = (str(directory / n) for n in ("ca.key", "node.key", "node.csr"))
        cert, extensions = directory / "node.pem", directory / "node.ext"
        extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        new_key = ("-newkey", "rsa:2048", "-nodes", "-keyout")
        sign = (
            "-CA",
            self.ca_file,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-extfile",
            str(extensions),
        )
        for command in (
            ("req", "-x509", *new_key, ca_key, "-out", self.ca_file, "-subj", "/CN=test CA"),
            ("req", *new_key, key, "-out", request, "-subj", "/CN=localhost"),
            ("x509", "-req", "-in", request, *sign, "-out", str(cert)),
        ):
            subprocess.run(
                ["openssl", *command, "-days", "1"], check=True, capture_output=True, timeout=30
            )
        return ["--tls-cert-file", str(cert), "--tls-key-file", key]

    def _start(self) -> None:
        tls_args = self._make_certificates() if self.tls else []
        acl_args = self._acl_file() if self.users else []
        for port in self.ports:
            node_dir = Path(self._dir.name) / str(port)
            node_dir.mkdir()
            if self.tls:  # TLS only, the cluster bus too; clients need no certificate
                node = ["--port", "0", "--tls-port", str(port), "--tls-cluster", "yes"]
                node += [*tls_args, "--tls-ca-cert-file", self.ca_file, "--tls-auth-clients", "no"]
            else:
                node = ["--port", str(port)]
            node += ["--bind", "127.0.0.1", "--dir", str(node_dir)]
            node += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            node += ["--save", "", "--appendonly", "no", *acl_args]  # nothing kept
            self._servers.append(
                subprocess.Popen(
                    ["redis-server", *node], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        for port in self.ports:
            self._wait(partial(self._answers, port))
        subprocess.run(
            ["redis-cli", "--cluster", "create"]
            + (["--tls", "--cacert", self.ca_file] if self.tls else [])
            + (
                ["--user", self._admin["username"], "--pass", self._admin["password"]]
                if self.users
                else []
            )
            + [f"127.0.0.1:{p}" for p in self.ports]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self._wait(self._slots_served)

    def _answers(self, port: int) -> bool:
        return bool(redis.Redis(port=port, socket_timeout=1, **self._client_options).ping())

    def _slots_served(self) -> bool:
        node = redis.Redis(port=self.ports[0], socket_timeout=1, **self._client_options)
        return bool(node.cluster("info")["cluster_state"] == "ok")

    @staticmethod
    def _wait(ready: Callable[[], object], timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if ready():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise ClusterUnavailable("the Redis Cluster did not come up")
            time.sleep(0.05)

    def client(self) -> RedisCluster:
        return RedisCluster.from_url(self.url, socket_timeout=2.0, **self._client_options)

    def close(self) -> None:
        for server in self._servers:
            server.terminate()
        for server in self._servers:
            server.wait(timeout=10)
        self._dir.cleanup()

    def __enter__(self) -> LocalRedisCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
