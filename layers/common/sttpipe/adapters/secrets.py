"""Secrets the functions read at run time, through Powertools Parameters (cached)."""

from __future__ import annotations

from collections.abc import Callable


def signing_key_source(secret_id: str | None, plain: str | None) -> Callable[[], str]:
    """The deployment's webhook signing key, from which each tenant's secret is derived:
    Secrets Manager (cached for five minutes) when configured, else a local setting."""
    if secret_id:

        def read() -> str:
            from aws_lambda_powertools.utilities import parameters

            value = parameters.get_secret(secret_id, max_age=300)
            return value.decode() if isinstance(value, bytes) else str(value)

        return read
    if plain:
        return lambda: plain
    raise ValueError("no webhook secret: set STT_WEBHOOK_SECRET_ID (or STT_WEBHOOK_SECRET locally)")
