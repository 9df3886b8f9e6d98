"""The tiered transcript cache on the real servers: Redis (L2) and PostgreSQL (L3).

Redis: $STT_TEST_REDIS_URL, else 127.0.0.1:6379; every test works under its own key namespace.
PostgreSQL: $STT_TEST_DATABASE_URL, else 127.0.0.1:5432 db `test`, in a throw-away schema.
The "Redis stopped mid-run" case starts its own redis-server on a free port (never the shared
one). Without a reachable server the cases that need it are skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool
from sttpipe_testing.fakes import (
    FakeTranscriber,
    InMemoryEventPublisher,
    InMemoryJobRepository,
    InMemoryObjectStore,
    InMemoryWorkflow,
)

from localcloud import cli
from localcloud.runtime import LambdaContext
from sttpipe import bootstrap
from sttpipe.adapters.database import create_pool
from sttpipe.adapters.migrations import migrate
from sttpipe.adapters.redis_connection import redis_client
from sttpipe.cache import CacheKey, EntryKind, KeyParams, TieredCache, TieredTranscriptCache
from sttpipe.cache.base import seal, unseal
from sttpipe.cache.memory import MemoryCache
from sttpipe.cache.postgres import PostgresCache
from sttpipe.cache.redis import RedisCache
from sttpipe.cache.transcripts import CHUNKS, CacheAdministration
from sttpipe.config import Settings, get_settings
from sttpipe.domain import keys
from sttpipe.domain.events import CacheInvalidated
from sttpipe.domain.models import (
    ChunkOutcome,
    ChunkProgress,
    ChunkRef,
    ChunkState,
    ChunkTask,
    ChunkTranscript,
    Job,
)
from sttpipe.domain.transcripts import CachedChunk, CacheLevel, Hit
from sttpipe.observability import Metric
from sttpipe.services.transcribing import WorkerService
from sttpipe.speech.base import Transcription

pytestmark = pytest.mark.integration

DATABASE_URL = os.environ.get("STT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("STT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TIMEOUT_S = 0.25


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_conninfo() -> Iterator[str]:
    try:
        admin = psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {DATABASE_URL} ({exc}).")
    schema = f"sttpipe_cache_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            conninfo = make_conninfo(DATABASE_URL, options=f"-c search_path={schema}")
            migrate(conninfo)
            yield conninfo
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def pg_pool(pg_conninfo: str) -> Iterator[ConnectionPool]:
    pool = create_pool(pg_conninfo, max_size=4, name="test-cache", timeout_s=2)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def redis_ok() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({exc}); or set STT_TEST_REDIS_URL.")
    return REDIS_URL


@pytest.fixture
def namespace(redis_ok: str) -> Iterator[str]:
    ns = f"test-{uuid.uuid4().hex[:10]}"
    yield ns
    RedisCache(redis_client(redis_ok, 2), ns, 60).drop_namespace()


class Fleet:
    """Containers sharing one namespace on the real L2 and L3, each with its own L1."""

    def __init__(self, namespace: str, redis_url: str, pool: ConnectionPool) -> None:
        self.namespace = namespace
        self.redis_url = redis_url
        self.pool = pool
        self.events: list[tuple[Metric, CacheLevel | None, int]] = []

    def l2(self, ttl_s: float = 60, url: str | None = None) -> RedisCache:
        return RedisCache(redis_client(url or self.redis_url, TIMEOUT_S), self.namespace, ttl_s)

    def l3(self, ttl_s: float = 600, pool: ConnectionPool | None = None) -> PostgresCache:
        return PostgresCache(pool or self.pool, self.namespace, ttl_s, timeout_s=1.0)

    def container(self, **kw: object) -> TieredCache:
        levels: dict[str, object] = {
            "l1": MemoryCache(1 << 20, ttl_s=60),
            "l2": self.l2(),
            "l3": self.l3(),
            "sync_interval_s": 0,
            "emit": lambda *event: self.events.append(event),
        }
        return TieredCache(**{**levels, **kw})  # type: ignore[arg-type]

    def transcripts(self, **kw: object) -> TieredTranscriptCache:
        return TieredTranscriptCache(
            self.container(**kw), namespace=self.namespace, model="m", response_format="json"
        )


@pytest.fixture
def fleet(namespace: str, redis_ok: str, pg_pool: ConnectionPool) -> Fleet:
    return Fleet(namespace, redis_ok, pg_pool)


def chunk_key(fleet: Fleet, n: int, model: str = "m", version: str = "1") -> CacheKey:
    params = KeyParams(fleet.namespace, "t", model, "en", None, "json", version)
    return CacheKey.build(EntryKind.CHUNK, f"{n:064x}", params)


def value(text: str = "hello") -> CachedChunk:
    return CachedChunk(text=text)


def held(backend: RedisCache | PostgresCache | MemoryCache, key: CacheKey) -> str | None:
    data = backend.get_many([key]).get(key)
    return None if data is None else CHUNKS.decode(unseal(key, data)).text


def never() -> CachedChunk:
    raise AssertionError("computed although it was cached")


# ---- reading, promotion, write-through, expiry ----------------------------------------------


def test_a_miss_writes_through_to_every_level(fleet: Fleet) -> None:
    cache = fleet.container()
    key = chunk_key(fleet, 1)
    assert cache.get_or_compute(key, CHUNKS, lambda: value("fresh"), wait_s=1) == (
        value("fresh"),
        None,
    )
    assert cache.l1 is not None
    assert [held(b, key) for b in (cache.l1, fleet.l2(), fleet.l3())] == ["fresh"] * 3


def test_hits_are_promoted_to_the_levels_above(fleet: Fleet) -> None:
    key = chunk_key(fleet, 2)
    fleet.l3().set_many({key: seal(key, CHUNKS.encode(value("deep")))})

    first = fleet.container()
    assert first.get_or_compute(key, CHUNKS, never, wait_s=0) == (value("deep"), CacheLevel.L3)
    assert held(fleet.l2(), key) == "deep"  # promoted to L2 ...
    assert first.get_or_compute(key, CHUNKS, never, wait_s=0)[1] is CacheLevel.L1  # ... and L1
    # Another container finds it in Redis now.
    assert fleet.container().get(key, CHUNKS) == Hit(value("deep"), CacheLevel.L2)


def test_a_batch_is_read_in_one_pass_from_mixed_levels(fleet: Fleet) -> None:
    cache = fleet.container()
    in_l2, in_l3, nowhere = chunk_key(fleet, 10), chunk_key(fleet, 11), chunk_key(fleet, 12)
    fleet.l2().set_many({in_l2: seal(in_l2, CHUNKS.encode(value("two")))})
    fleet.l3().set_many({in_l3: seal(in_l3, CHUNKS.encode(value("three")))})
    found = cache.get_many([in_l2, in_l3, nowhere], CHUNKS)
    assert {k: (h.value.text, h.level) for k, h in found.items()} == {
        in_l2: ("two", CacheLevel.L2),
        in_l3: ("three", CacheLevel.L3),
    }
    assert cache.counters["misses"] == 1


def test_entries_expire_at_each_level(fleet: Fleet) -> None:
    cache = fleet.container(
        l1=MemoryCache(1 << 20, ttl_s=0.3), l2=fleet.l2(ttl_s=0.3), l3=fleet.l3(ttl_s=0.3)
    )
    key = chunk_key(fleet, 3)
    cache.put(key, value(), CHUNKS)
    assert cache.get(key, CHUNKS) is not None
    time.sleep(0.5)
    assert cache.get(key, CHUNKS) is None
    assert held(fleet.l2(), key) is None and held(fleet.l3(), key) is None
    assert cache.purge_expired() >= 1  # the warmer's housekeeping removes the row


# ---- invalidation ---------------------------------------------------------------------------


def test_invalidating_a_key_reaches_every_level_and_other_containers_l1(fleet: Fleet) -> None:
    here, there = fleet.container(), fleet.container()
    key, other = chunk_key(fleet, 4), chunk_key(fleet, 5)
    here.put_many({key: value("stale"), other: value("kept")}, CHUNKS)
    assert there.get(key, CHUNKS) is not None  # now also in the other container's L1
    assert there.l1 is not None and held(there.l1, key) == "stale"

    here.invalidate([key])

    assert held(fleet.l2(), key) is None and held(fleet.l3(), key) is None
    assert there.get(key, CHUNKS) is None  # its generation check emptied its L1
    assert there.get(other, CHUNKS) is not None and held(fleet.l3(), other) == "kept"


def test_invalidating_a_model_or_a_pipeline_version_leaves_the_others(fleet: Fleet) -> None:
    cache = fleet.container()
    old_model, new_model = chunk_key(fleet, 6, model="a/whisper"), chunk_key(fleet, 6, model="b")
    old_version = chunk_key(fleet, 7, version="0")
    cache.put_many({old_model: value(), new_model: value(), old_version: value()}, CHUNKS)

    assert cache.invalidate_matching(model="a/whisper") == 1
    assert held(fleet.l2(), old_model) is None and held(fleet.l3(), old_model) is None
    assert cache.invalidate_matching(pipeline_version="0") == 1
    assert held(fleet.l2(), old_version) is None and held(fleet.l3(), old_version) is None
    assert held(fleet.l2(), new_model) == "hello" and held(fleet.l3(), new_model) == "hello"
    assert cache.get(old_model, CHUNKS) is None and cache.get(new_model, CHUNKS) is not None


def test_stt_cache_clear_empties_its_namespace_at_every_level_and_no_other(
    fleet: Fleet,
    pg_conninfo: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli, "STATE_FILE", tmp_path / "no-local-cloud-up.json")
    entries = [chunk_key(fleet, 10), chunk_key(fleet, 11, model="b", version="0")]
    fleet.container().put_many({k: value() for k in entries}, CHUNKS)
    elsewhere = Fleet(f"{fleet.namespace}-kept", fleet.redis_url, fleet.pool)
    kept = chunk_key(elsewhere, 12)
    elsewhere.container().put_many({kept: value("kept")}, CHUNKS)
    try:
        argv = ["cache", "clear", "--namespace", fleet.namespace]
        argv += ["--redis-url", fleet.redis_url, "--database-url", pg_conninfo]
        assert cli.main(argv) == cli.EXIT_OK
        assert all(held(fleet.l2(), k) is None and held(fleet.l3(), k) is None for k in entries)
        assert held(elsewhere.l2(), kept) == "kept" and held(elsewhere.l3(), kept) == "kept"
        assert f"cache {fleet.namespace} cleared: 2 entries deleted" in capsys.readouterr().err
    finally:
        elsewhere.l2().drop_namespace()


def test_forgetting_contents_drops_a_tenants_entries_of_them_at_every_level(fleet: Fleet) -> None:
    cache = fleet.container()
    mine = chunk_key(fleet, 8)
    other_model = chunk_key(fleet, 8, model="b")
    other_tenant = CacheKey.build(
        EntryKind.CHUNK, f"{8:064x}", KeyParams(fleet.namespace, "u", "m", "en", None, "json", "1")
    )
    unrelated = chunk_key(fleet, 9)
    cache.put_many(
        {mine: value(), other_model: value(), other_tenant: value(), unrelated: value()}, CHUNKS
    )

    assert cache.forget_contents("t", [f"{8:064x}"]) == 2
    for gone in (mine, other_model):
        assert held(fleet.l2(), gone) is None and held(fleet.l3(), gone) is None
        assert cache.get(gone, CHUNKS) is None
    for kept in (other_tenant, unrelated):
        assert held(fleet.l2(), kept) == "hello" and held(fleet.l3(), kept) == "hello"


# ---- corrupt entries ------------------------------------------------------------------------


def test_a_corrupt_l2_entry_is_ignored_and_rewritten_from_l3(fleet: Fleet) -> None:
    key = chunk_key(fleet, 8)
    fleet.l3().set_many({key: seal(key, CHUNKS.encode(value("good")))})
    raw = redis.Redis.from_url(fleet.redis_url)
    raw.set(key.redis_key, b"\x00garbage")
    cache = fleet.container()
    assert cache.get_or_compute(key, CHUNKS, never, wait_s=0) == (value("good"), CacheLevel.L3)
    assert held(fleet.l2(), key) == "good"
    assert cache.counters["corrupt:L2"] == 1
    assert (Metric.CACHE_CORRUPT_ENTRIES, CacheLevel.L2, 1) in fleet.events


def test_a_corrupt_l3_entry_alone_is_deleted_and_recomputed(fleet: Fleet) -> None:
    key = chunk_key(fleet, 9)
    other = chunk_key(fleet, 99)
    # Well sealed, but another key's entry: never served under this key.
    fleet.l3().set_many({key: seal(other, CHUNKS.encode(value("wrong")))})
    cache = fleet.container()
    assert cache.get_or_compute(key, CHUNKS, lambda: value("right"), wait_s=0) == (
        value("right"),
        None,
    )
    assert held(fleet.l3(), key) == "right"


# ---- single flight --------------------------------------------------------------------------


class SlowTranscriber:
    """Takes a while, like the real API, so that concurrent workers overlap."""

    def __init__(self, inner: FakeTranscriber, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds

    def transcribe(
        self,
        audio: bytes,
        filename: str,
        *,
        language: str | None,
        prompt: str | None = None,
        remaining_s: float | None = None,
    ) -> Transcription:
        time.sleep(self.seconds)
        return self.inner.transcribe(audio, filename, language=language, remaining_s=remaining_s)


def test_concurrent_workers_on_the_same_chunk_make_exactly_one_api_call(fleet: Fleet) -> None:
    speech = FakeTranscriber(default="said once")
    slow = SlowTranscriber(speech, seconds=0.5)
    store, jobs, workflow = InMemoryObjectStore(), InMemoryJobRepository(), InMemoryWorkflow()
    workers = 4
    tasks = []
    now = datetime.now(UTC)
    for _ in range(workers):  # four jobs whose chunk 0 holds the same audio
        job_id = uuid.uuid4().hex
        jobs.add(Job(job_id=job_id, filename="a", upload_key="u", created_at=now, updated_at=now))
        jobs.add_chunks(
            job_id, [ChunkProgress(index=0, start_ms=0, end_ms=9000, state=ChunkState.PENDING)]
        )
        chunk = ChunkRef(
            index=0, key=keys.chunk_audio(job_id, 0), start_ms=0, end_ms=9000, pcm_sha256="ee" * 32
        )
        store.put_bytes(chunk.key, b"fLaC", "audio/flac")
        tasks.append(ChunkTask(task_token=workflow.open_task(), job_id=job_id, chunk=chunk))

    settings = Settings(default_language="en")
    services = [  # one container each: its own L1, the shared Redis and PostgreSQL
        WorkerService(store, jobs, workflow, slow, settings, fleet.transcripts())
        for _ in range(workers)
    ]
    start = threading.Barrier(workers)

    def run(service: WorkerService, task: ChunkTask) -> None:
        start.wait()
        service.process(task, receive_count=1, remaining_s=60)

    threads = [
        threading.Thread(target=run, args=pair) for pair in zip(services, tasks, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(speech.calls) == 1
    levels = []
    for task in tasks:
        outcome = ChunkOutcome.model_validate_json(workflow.answers[task.task_token].output or "")
        result = ChunkTranscript.model_validate_json(store.get_bytes(outcome.result_key or ""))
        assert result.text == "said once"
        levels.append(result.cache_level)
    assert sorted(levels, key=str) == sorted([None, "L2", "L2", "L2"], key=str)


def test_a_lease_whose_holder_died_expires_and_a_waiter_computes(fleet: Fleet) -> None:
    key = chunk_key(fleet, 20)
    assert fleet.l2().lease(key, ttl_s=0.5) is not None  # taken, never released: the holder died
    computed: list[str] = []

    def compute() -> CachedChunk:
        computed.append("mine")
        return value("mine")

    cache = fleet.container(poll_s=0.05)
    assert cache.get_or_compute(key, CHUNKS, compute, wait_s=10) == (value("mine"), None)
    assert computed == ["mine"]


def test_a_waiter_stops_waiting_after_its_bound(fleet: Fleet) -> None:
    key = chunk_key(fleet, 21)
    assert fleet.l2().lease(key, ttl_s=60) is not None  # a holder that is taking very long
    cache = fleet.container(poll_s=0.05)
    assert cache.get_or_compute(key, CHUNKS, lambda: value("own"), wait_s=0.3) == (
        value("own"),
        None,
    )


# ---- a level that goes away -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(port: int) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    for _ in range(100):
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the throw-away redis-server did not start")


@pytest.fixture
def own_redis() -> Iterator[tuple[int, Callable[[], None], Callable[[], None]]]:
    """A throw-away Redis: (port, stop, start again on the same port)."""
    port = free_port()
    processes = [start_redis(port)]

    def stop() -> None:
        processes[-1].terminate()
        processes[-1].wait(5)

    def restart() -> None:
        processes.append(start_redis(port))

    yield port, stop, restart
    for process in processes:
        if process.poll() is None:
            process.terminate()
            process.wait(5)


def test_redis_stopped_mid_run_is_skipped_and_used_again_after_restart(
    fleet: Fleet, own_redis: tuple[int, Callable[[], None], Callable[[], None]]
) -> None:
    port, stop, restart = own_redis
    url = f"redis://127.0.0.1:{port}/0"
    cache = fleet.container(l2=fleet.l2(url=url), cooldown_s=0.5)
    before, during, after = chunk_key(fleet, 30), chunk_key(fleet, 31), chunk_key(fleet, 32)
    cache.put(before, value("before"), CHUNKS)

    stop()
    # Redis gone: lookups and writes still work through L1 and L3, without failing.
    assert cache.get_or_compute(during, CHUNKS, lambda: value("during"), wait_s=5)[1] is None
    assert held(fleet.l3(), during) == "during"
    fresh = fleet.container(l2=fleet.l2(url=url), cooldown_s=0.5)  # a new container: empty L1
    assert fresh.get(before, CHUNKS) == Hit(value("before"), CacheLevel.L3)
    assert cache.counters["unavailable:L2"] == 1  # skipped during the cool-down, not retried
    assert (Metric.CACHE_LEVEL_UNAVAILABLE, CacheLevel.L2, 1) in fleet.events

    restart()  # empty: it kept nothing on disk
    time.sleep(0.6)  # past the cool-down
    cache.put(after, value("after"), CHUNKS)
    assert held(fleet.l2(url=url), after) == "after"  # L2 in use again
    assert cache.counters["unavailable:L2"] == 1


def test_postgres_unreachable_is_skipped_and_the_rest_works(fleet: Fleet) -> None:
    closed = make_conninfo(DATABASE_URL, port=str(free_port()))  # nothing listens there
    pool = create_pool(closed, max_size=1, name="test-closed", timeout_s=0.3)
    try:
        cache = fleet.container(l3=fleet.l3(pool=pool), cooldown_s=60)
        keys_ = [chunk_key(fleet, n) for n in range(40, 43)]
        for key in keys_:
            assert cache.get_or_compute(key, CHUNKS, lambda: value("ok"), wait_s=1)[1] is None
        assert [held(fleet.l2(), k) for k in keys_] == ["ok"] * 3  # L2 still written through
        assert cache.counters["unavailable:L3"] == 1  # one failure, then skipped
        assert fleet.container(l3=fleet.l3(pool=pool)).get(keys_[0], CHUNKS) is not None
    finally:
        pool.close()


# ---- warming and statistics -----------------------------------------------------------------


def test_warming_copies_the_most_used_l3_entries_into_l2(fleet: Fleet) -> None:
    cache = fleet.transcripts()
    popular, used, unused = chunk_key(fleet, 50), chunk_key(fleet, 51), chunk_key(fleet, 52)
    l3 = fleet.l3()
    l3.set_many({k: seal(k, CHUNKS.encode(value())) for k in (popular, used, unused)})
    l3.record_hits({popular: 5, used: 2})

    report = cache.warm(limit=2, min_hits=1)
    assert (report.candidates, report.warmed) == (2, 2)
    l2 = fleet.l2()
    assert held(l2, popular) and held(l2, used) and held(l2, unused) is None
    assert cache.warm(limit=2, min_hits=1).warmed == 0  # already there
    assert cache.stats().entries_warmed == 2


def test_statistics_count_hits_by_level_across_containers(fleet: Fleet) -> None:
    one, two = fleet.transcripts(), fleet.transcripts()
    chunk = ChunkRef(index=0, key="k", start_ms=0, end_ms=1000, pcm_sha256="ab" * 32, tenant_id="t")
    key = one.chunk_key(chunk.pcm_sha256, tenant="t", language="en")
    one.chunk(chunk, lambda: value("x"), language="en")  # miss
    one.chunk(chunk, never, language="en")  # L1
    two.chunk(chunk, never, language="en")  # L2
    stats = two.stats()
    assert stats.counted_by == "fleet"
    assert (stats.hits, stats.misses, stats.writes) == ({"L1": 1, "L2": 1, "L3": 0}, 1, 1)
    assert stats.hit_rate == pytest.approx(2 / 3, abs=1e-3)
    assert stats.stored["L3"]["entries"] == 1 and stats.stored["L3"]["bytes"] > 0
    # The hits went to L3's counters, which the warmer ranks by.
    assert fleet.l3().most_used(10, min_hits=2)[0][0] == key


# ---- the scheduled warmer function ----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
# What EventBridge Scheduler hands the function (`sam local generate-event cloudwatch
# scheduled-event`); the warmer ignores its content.
SCHEDULED_EVENT = {
    "version": "0",
    "id": "cdc73f9d-aea9-11e3-9d5a-835b769c0d9c",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-01-01T00:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/CacheWarmer"],
    "detail": {},
}


def test_the_warmer_handler_promotes_reports_and_emits_its_metric(
    fleet: Fleet,
    pg_conninfo: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    used = chunk_key(fleet, 60)
    l3 = fleet.l3()
    l3.set_many({used: seal(used, CHUNKS.encode(value("warm me")))})
    l3.record_hits({used: 3})
    for name, setting in {
        "STT_DATABASE_URL": pg_conninfo,
        "STT_REDIS_URL": fleet.redis_url,
        "STT_CACHE_NAMESPACE": fleet.namespace,
        "POWERTOOLS_SERVICE_NAME": "cache-warmer",
        "POWERTOOLS_METRICS_NAMESPACE": "STT",
    }.items():
        monkeypatch.setenv(name, setting)
    get_settings.cache_clear()
    bootstrap.container.cache_clear()
    spec = importlib.util.spec_from_file_location(
        "cache_warmer_app", ROOT / "functions" / "cache_warmer" / "app.py"
    )
    assert spec and spec.loader
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    context = LambdaContext(
        function_name="CacheWarmer",
        function_version="$LATEST",
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:CacheWarmer",
        memory_limit_in_mb=256,
        aws_request_id=uuid.uuid4().hex,
        log_group_name="/aws/lambda/CacheWarmer",
        log_stream_name="test",
        deadline_ms=int(time.time() * 1000) + 120_000,
    )
    try:
        report = app.handler(SCHEDULED_EVENT, context)
    finally:
        cache = bootstrap.transcript_cache()
        if cache is not None:
            cache.tiered.close()
        bootstrap.container.cache_clear()
        get_settings.cache_clear()

    assert report == {"candidates": 1, "warmed": 1, "purged": report["purged"]}
    assert held(fleet.l2(), used) == "warm me"
    emitted = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    assert [r["CacheEntriesWarmed"] for r in emitted if "CacheEntriesWarmed" in r] == [[1.0]]


def test_the_api_view_of_the_cache_announces_what_it_drops(fleet: Fleet) -> None:
    events = InMemoryEventPublisher()
    cache = fleet.transcripts()
    admin = CacheAdministration(cache, events)
    cache.tiered.put_many({chunk_key(fleet, 10): value(), chunk_key(fleet, 11): value()}, CHUNKS)

    assert admin.forget("t", [f"{10:064x}"]) == 1
    assert admin.invalidate(model="m") == 1
    forgotten, invalidated = events.events
    assert isinstance(forgotten, CacheInvalidated) and isinstance(invalidated, CacheInvalidated)
    assert (forgotten.tenant_id, forgotten.entries) == ("t", 1)
    assert invalidated.entries == 1 and "model m" in invalidated.reason
