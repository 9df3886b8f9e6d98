"""The functions sign in to Redis as the ElastiCache user the stack makes (CacheUser): real
redis-servers whose `default` user is off, as in the stack's user group, and whose one other
user has the template's access string; the user's name and password in a Secrets Manager
secret (moto), read through STT_REDIS_AUTH_SECRET_ID. Every Redis call of the code runs as that
user, on a single server and on a TLS cluster like ElastiCache Serverless."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import boto3
import pytest
import redis
from moto import mock_aws
from pydantic import SecretStr
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from sttpipe_testing.redis_cluster import LocalRedisCluster, running_cluster

from localcloud.cloud import DEFAULT_TEMPLATE
from localcloud.template import PseudoParameters, Template
from sttpipe.adapters.redis_connection import RedisClient
from sttpipe.cache import CacheKey, CacheUnavailable, EntryKind, KeyParams
from sttpipe.cache.factory import redis_for
from sttpipe.cache.redis import RedisCache
from sttpipe.config import Settings
from sttpipe.speech.breaker import circuit_breaker
from sttpipe.speech.fleet_limit import FleetLimiter, LimitPolicy, LocalSlots, RedisSlots
from sttpipe.speech.latency import LatencyLog

_STACK = Template(DEFAULT_TEMPLATE, PseudoParameters("demo", "us-east-1", "111122223333"), {})
USER = _STACK.properties("CacheUser")
USERNAME = json.loads(
    _STACK.properties("CacheUserSecret")["GenerateSecretString"]["SecretStringTemplate"]
)["username"]
PASSWORD = "a-generated-password-of-64-characters-stands-here-0123456789abc"
# The template's access string names the keys of the default namespace.
NAMESPACE = Settings.model_fields["cache_namespace"].default
USERS = [f"user {USERNAME} {USER['AccessString']} >{PASSWORD}"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of its own (the shared one on 6379 lets anyone in); its URL."""
    if not shutil.which("redis-server"):
        if os.environ.get("CI"):
            raise RuntimeError("redis-server is needed")  # installed by scripts/test
        pytest.skip("redis-server is needed")
    acl = tmp_path_factory.mktemp("redis-auth") / "users.acl"
    acl.write_text("\n".join(["user default off", *USERS]) + "\n")
    port = _free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        ["redis-server", *args, "--aclfile", str(acl)], stdout=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
        except redis.AuthenticationError:
            break  # up, and asking who is calling
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.terminate()
                raise
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)


def _secret(name: str, username: str = USERNAME, password: str = PASSWORD) -> str:
    """A secret as the stack's CacheUserSecret holds it; its ARN."""
    secret = {"username": username, "password": password}
    made = boto3.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(secret))
    return str(made["ARN"])


def _every_redis_call_of_the_code(client: RedisClient) -> None:
    """The cache's L2 (entries, leases, generation, statistics), the fleet's speech limit,
    the breaker and the latency log, with the namespace the stack runs with."""
    assert client.ping()  # redis-py's health check on a single server
    cache = RedisCache(client, NAMESPACE, ttl_s=60)
    params = KeyParams(NAMESPACE, "tenant", "model", "en", None, "json", "1")
    entries = {CacheKey.build(EntryKind.CHUNK, f"{n:064x}", params): b"v%d" % n for n in range(9)}
    cache.set_many(entries)
    assert cache.get_many(list(entries)) == entries
    assert cache.add_new(entries) == 0
    first = next(iter(entries))
    lease = cache.lease(first, 10)
    assert lease is not None and cache.peek(first) == (entries[first], True)
    lease.release()
    cache.delete_many([first])
    assert cache.delete_matching(model="model") == len(entries) - 1
    assert cache.bump_generation() == cache.generation() >= 1
    cache.add_counters({"hits": 2})
    assert cache.counters() == {"hits": 2}
    policy = LimitPolicy(max_limit=2, stale_waiter_s=5.0)
    slots = RedisSlots(client, NAMESPACE, policy)
    assert slots.try_acquire("a1@tenant", 1)
    slots.release("a1@tenant")
    assert slots.feedback(throttled=True) == 1.0
    assert FleetLimiter(slots, LocalSlots(policy), poll_s=0.005).current_limit() == 1.0
    breaker = circuit_breaker(
        client, NAMESPACE, failures=1, cooldown_s=30, trial_lease_s=30, redis_cooldown_s=60
    )
    breaker.before_call()
    breaker.record(failed=True)
    assert breaker.is_open
    log = LatencyLog(client, NAMESPACE)
    log.record(30.0, 1.2)
    assert log.samples() == [(30.0, 1.2)]
    assert cache.drop_namespace() > 0


def test_every_redis_call_of_the_code_runs_as_the_stacks_cache_user(
    server: str, moto_env: None
) -> None:
    with mock_aws():
        settings = Settings(redis_url=SecretStr(server), redis_auth_secret_id=_secret("cache"))
        made = redis_for(settings)
        assert made is not None
        _every_redis_call_of_the_code(made)
        made.close()
    # Without the secret nothing gets in: the server's `default` user is off.
    anonymous = redis_for(Settings(redis_url=SecretStr(server)))
    assert anonymous is not None
    with pytest.raises(redis.AuthenticationError, match="Authentication required"):
        anonymous.ping()


def test_the_cache_user_reaches_only_the_namespaces_keys_and_no_admin_command(
    server: str, moto_env: None
) -> None:
    with mock_aws():
        made = redis_for(Settings(redis_url=SecretStr(server), redis_auth_secret_id=_secret("u")))
        assert made is not None
        made.set(f"{NAMESPACE}:mine", 1)
        for refused in (
            lambda: made.set("another-app:key", 1),
            lambda: made.get(f"{{{NAMESPACE}}}:not-the-speech-tag"),
            made.flushall,
            lambda: made.keys("*"),
            lambda: made.config_get("*"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                refused()
        made.delete(f"{NAMESPACE}:mine")
        made.close()


def test_a_wrong_or_unreadable_secret_is_refused_clearly_and_the_cache_does_without(
    server: str, moto_env: None
) -> None:
    with mock_aws():
        wrong = Settings(
            redis_url=SecretStr(server),
            redis_auth_secret_id=_secret("wrong", password="not-the-users-password-at-all"),
        )
        made = redis_for(wrong)
        assert made is not None
        with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
            made.ping()
        # The cache answers as for an unreachable Redis: its callers fall back to L3.
        cache = RedisCache(made, NAMESPACE, ttl_s=60)
        with pytest.raises(CacheUnavailable, match="invalid username-password pair"):
            cache.generation()
        missing = Settings(redis_url=SecretStr(server), redis_auth_secret_id="no-such-secret")
        made = redis_for(missing)
        assert made is not None
        with pytest.raises(CacheUnavailable, match="cannot read the Redis user's secret"):
            RedisCache(made, NAMESPACE, ttl_s=60).generation()


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[LocalRedisCluster]:
    yield from running_cluster(tls=True, users=USERS)


def test_the_stacks_cache_is_reached_as_its_user_over_tls_on_a_cluster(
    tls_cluster: LocalRedisCluster, moto_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the template's environment for the created cache has it; the test CA stands in for
    # the system store that trusts ElastiCache's certificate.
    monkeypatch.setenv("SSL_CERT_FILE", tls_cluster.ca_file)
    endpoint = f"127.0.0.1:{tls_cluster.ports[0]}"
    with mock_aws():
        settings = Settings(
            redis_endpoint=endpoint, redis_cluster=True, redis_auth_secret_id=_secret("cluster")
        )
        made = redis_for(settings)
        assert isinstance(made, RedisCluster)
        _every_redis_call_of_the_code(made)
        made.close()
        wrong = _secret("cluster-wrong", password="not-the-users-password-at-all")
        with pytest.raises(RedisClusterException, match="invalid username-password pair"):
            redis_for(
                Settings(redis_endpoint=endpoint, redis_cluster=True, redis_auth_secret_id=wrong)
            )
