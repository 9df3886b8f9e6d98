"""Secrets the functions read at run time, through Powertools Parameters (cached)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def read_secret(secret_id: str, *, max_age: int = 300, transform: Any = None) -> Any:
    """Powertools' `get_secret`, its client made on boto3's default session: Powertools' own
    default provider makes a session of its own, which loads botocore's endpoint data a second
    time (about 8 MB more in every container)."""
    import boto3
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters import base

    if "secrets" not in base.DEFAULT_PROVIDERS:  # where get_secret looks for its provider
        client = boto3.client("secretsmanager")
        base.DEFAULT_PROVIDERS["secrets"] = parameters.SecretsProvider(boto3_client=client)
    return parameters.get_secret(secret_id, max_age=max_age, transform=transform)


def signing_key_source(secret_id: str | None, plain: str | None) -> Callable[[], str]:
    """The deployment's webhook signing key, from which each tenant's secret is derived:
    Secrets Manager (cached for five minutes) when configured, else a local setting."""
    if secret_id:

        def read() -> str:
            value = read_secret(secret_id)
            return value.decode() if isinstance(value, bytes) else str(value)

        return read
    if plain:
        return lambda: plain
    raise ValueError("no webhook secret: set STT_WEBHOOK_SECRET_ID (or STT_WEBHOOK_SECRET locally)")
