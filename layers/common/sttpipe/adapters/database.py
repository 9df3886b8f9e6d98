"""PostgreSQL plumbing shared by the job repository and the cache's L3: where to connect (a URL,
or the RDS secret read through Powertools), a pool sized for one Lambda container. The schema is
in sttpipe.adapters.migrations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from sttpipe.adapters.secrets import read_secret
from sttpipe.config import Settings


def create_pool(
    conninfo: str | Callable[[], str],
    max_size: int = 2,
    *,
    name: str = "sttpipe-jobs",
    timeout_s: float = 10.0,
    connect_kwargs: dict[str, Any] | None = None,
    statement_timeout_s: float | None = None,
) -> ConnectionPool:
    """A pool for one Lambda container: small, and checking connections a freeze may have cut.

    `timeout_s` bounds the wait for a connection; `connect_kwargs` go to every connect (they
    replace the same keys of the conninfo); `statement_timeout_s` cuts off every statement."""
    configure = None
    if statement_timeout_s is not None:
        timeout_ms = max(1, round(statement_timeout_s * 1000))

        def configure(conn: psycopg.Connection[Any]) -> None:
            # A session setting rather than libpq `options`, which would replace the URL's own.
            conn.execute(f"SET statement_timeout = {timeout_ms}")
            conn.commit()

    return ConnectionPool(
        conninfo,
        kwargs=connect_kwargs,
        configure=configure,
        min_size=1,
        max_size=max(1, max_size),
        open=True,
        check=ConnectionPool.check_connection,
        timeout=timeout_s,
        name=name,
    )


def conninfo_from_secret(
    secret_id: str, *, host: str | None = None, dbname: str | None = None
) -> Callable[[], str]:
    """A conninfo that reads the RDS secret each time the pool opens a connection; `host` and
    `dbname` win over the secret's (a secret RDS manages holds only username and password).

    Powertools caches the secret for a few minutes, so a rotated password is picked up by the
    next connections without a cold start and without a Secrets Manager call per connection.
    """

    def conninfo() -> str:
        secret: dict[str, Any] = read_secret(secret_id, transform="json")
        return make_conninfo(
            host=host or secret["host"],
            port=secret.get("port", 5432),
            user=secret["username"],
            password=secret["password"],
            dbname=dbname or secret.get("dbname", "postgres"),
            sslmode=secret.get("sslmode", "require"),
        )

    return conninfo


def conninfo_from_settings(settings: Settings) -> str | Callable[[], str]:
    """The database to connect to: STT_DATABASE_URL, else the RDS secret."""
    url = settings.database_url.get_secret_value() if settings.database_url else None
    return resolve_conninfo(
        url, settings.database_secret_id, settings.database_host, settings.database_name
    )


def resolve_conninfo(
    url: str | None,
    secret_id: str | None,
    host: str | None = None,
    dbname: str | None = None,
) -> str | Callable[[], str]:
    if url:
        return url
    if secret_id:
        return conninfo_from_secret(secret_id, host=host, dbname=dbname)
    raise ValueError("set STT_DATABASE_URL or STT_DATABASE_SECRET_ID")
