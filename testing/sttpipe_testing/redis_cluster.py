"""A real Redis Cluster for tests: three `redis-server --cluster-enabled yes` primaries on free
ports of 127.0.0.1, joined with `redis-cli --cluster create`, as ElastiCache Serverless (always
cluster mode) would answer. Nothing is kept on disk beyond the run."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType

import redis
from redis.cluster import RedisCluster

NODES = 3


class ClusterUnavailable(RuntimeError):
    """redis-server or redis-cli is missing, or the cluster did not come up."""


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
    def __init__(self) -> None:
        if not (shutil.which("redis-server") and shutil.which("redis-cli")):
            raise ClusterUnavailable("redis-server and redis-cli are needed for a Redis Cluster")
        self._dir = tempfile.TemporaryDirectory(prefix="stt-redis-cluster-")
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
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _start(self) -> None:
        for port in self.ports:
            node_dir = Path(self._dir.name) / str(port)
            node_dir.mkdir()
            node = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir)]
            node += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            node += ["--save", "", "--appendonly", "no"]  # nothing kept
            self._servers.append(
                subprocess.Popen(
                    ["redis-server", *node], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        for port in self.ports:
            self._wait(partial(self._answers, port))
        subprocess.run(
            ["redis-cli", "--cluster", "create"]
            + [f"127.0.0.1:{p}" for p in self.ports]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self._wait(self._slots_served)

    @staticmethod
    def _answers(port: int) -> bool:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())

    def _slots_served(self) -> bool:
        info = redis.Redis(port=self.ports[0], socket_timeout=1).cluster("info")
        return bool(info["cluster_state"] == "ok")

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
        return RedisCluster.from_url(self.url, socket_timeout=2.0)

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
