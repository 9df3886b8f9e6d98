"""The container's one Redis client, shared by the cache (L2), the fleet's speech limit, the
circuit breaker and the latency log: on a single Redis, or on a Redis Cluster (ElastiCache
Serverless is always one; STT_REDIS_CLUSTER); as an ElastiCache user when a secret names one
(STT_REDIS_AUTH_SECRET_ID)."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.credentials import CredentialProvider
from redis.retry import Retry

# The container's one client: on a single Redis, or on a Redis Cluster.
RedisClient = redis.Redis | RedisCluster


class SecretCredentials(CredentialProvider):
    """An ElastiCache user's name and password from a Secrets Manager secret (JSON `username`,
    `password`), read each time a connection is made: Powertools caches it for five minutes,
    so a changed password reaches new connections without a cold start or a call per connection.
    """

    def __init__(self, secret_id: str) -> None:
        self.secret_id = secret_id

    def get_credentials(self) -> tuple[str, str]:
        # Imported here so that importing this module does not pull in boto3.
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        from sttpipe.adapters.secrets import read_secret

        try:
            secret = read_secret(self.secret_id, transform="json")
            return str(secret["username"]), str(secret["password"])
        except (GetParameterError, KeyError, TypeError) as exc:
            # A RedisError: every caller then does without Redis, as when it is unreachable.
            raise redis.AuthenticationError(
                f"cannot read the Redis user's secret {self.secret_id!r}: {exc!r}"
            ) from exc


def redis_client(
    url: str,
    timeout_s: float,
    *,
    cluster: bool = False,
    credentials: CredentialProvider | None = None,
) -> RedisClient:
    """A client whose every call fails within about `timeout_s` when Redis is down or slow;
    it signs in with `credentials` (AUTH username password) when given."""
    if cluster:
        return RedisCluster.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            client_name="sttpipe-cache",
            credential_provider=credentials,
        )
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
        client_name="sttpipe-cache",
        credential_provider=credentials,
    )
