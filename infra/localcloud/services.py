"""PostgreSQL and Redis for the local cloud: the stand-ins for RDS and ElastiCache.

Uses the servers already listening on loopback; starts the machine's own ones when they are
installed but stopped; otherwise says exactly what is missing. `python -m localcloud.services
ensure` is what scripts/test runs before pytest.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ServiceUnavailable(RuntimeError):
    """A server the local cloud needs is neither running nor startable here."""


def admin_database_url() -> str:
    return os.environ.get("STT_LOCAL_DATABASE_URL", DEFAULT_DATABASE_URL)


def redis_url() -> str:
    return os.environ.get("STT_LOCAL_REDIS_URL", DEFAULT_REDIS_URL)


def _listening(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def _wait_listening(url: str, default_port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _listening(url, default_port):
            return True
        time.sleep(0.2)
    return False


def ensure_postgres() -> str:
    url = admin_database_url()
    if _listening(url, 5432):
        return url
    clusters = glob.glob("/etc/postgresql/*/main")
    if clusters and shutil.which("pg_ctlcluster"):
        version = clusters[0].split("/")[3]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            check=False,
            capture_output=True,
        )
        if _wait_listening(url, 5432, 15):
            return url
    raise ServiceUnavailable(
        f"PostgreSQL is not reachable at {url} and could not be started here. Install it "
        "(e.g. apt-get install postgresql) and start it, or point STT_LOCAL_DATABASE_URL at one "
        "(a superuser URL: the local cloud creates and drops its own database)."
    )


def ensure_redis() -> str:
    url = redis_url()
    if _listening(url, 6379):
        return url
    if shutil.which("redis-server"):
        port = str(urlsplit(url).port or 6379)
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                port,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=False,
            capture_output=True,
        )
        if _wait_listening(url, 6379, 10):
            return url
    raise ServiceUnavailable(
        f"Redis is not reachable at {url} and could not be started here. Install it "
        "(e.g. apt-get install redis-server) or point STT_LOCAL_REDIS_URL at one."
    )


@dataclass(frozen=True)
class ScratchDatabase:
    url: str
    host: str
    port: int
    username: str
    password: str
    dbname: str

    def rds_secret(self) -> dict[str, object]:
        """The connection as RDS writes it into Secrets Manager."""
        return {
            "engine": "postgres",
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "dbname": self.dbname,
            "sslmode": "disable",  # a loopback server; RDS secrets leave this out (require)
        }


@contextmanager
def scratch_database(prefix: str = "sttpipe") -> Iterator[ScratchDatabase]:
    """A new, empty database for one local cloud, dropped afterwards."""
    admin_url = ensure_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        yield ScratchDatabase(
            url=url,
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            username=parts.username or "postgres",
            password=parts.password or "",
            dbname=name,
        )
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcloud.services",
        description="Check (and start if stopped) the PostgreSQL and Redis the local cloud uses.",
    )
    parser.add_argument("command", choices=["ensure"])
    parser.parse_args(argv)
    problems = []
    for name, ensure in (("PostgreSQL", ensure_postgres), ("Redis", ensure_redis)):
        try:
            print(f"{name}: {ensure()}", file=sys.stderr)
        except ServiceUnavailable as exc:
            problems.append(str(exc))
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
