"""PostgresJobRepository on the real server, and the same contract run on InMemoryJobRepository.

PostgreSQL: $STT_TEST_DATABASE_URL, else 127.0.0.1:5432 db `test` (trust auth). Each session
works in its own throw-away schema (search_path), so parallel runs do not clash. Without a
reachable server the PostgreSQL cases are skipped with the reason; the in-memory ones still run.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr
from sttpipe_testing.fakes import InMemoryJobRepository, InMemoryWebhookKeys

from sttpipe.adapters.database import conninfo_from_secret, create_pool
from sttpipe.adapters.migrations import migrate
from sttpipe.adapters.postgres import (
    PostgresJobRepository,
    PostgresWebhookKeys,
    job_repository_from_settings,
)
from sttpipe.config import Settings
from sttpipe.domain.models import (
    ChunkProgress,
    ChunkState,
    Job,
    JobStatus,
    LanguageSource,
    Priority,
)
from sttpipe.ports import JobNotFound, JobRepository, WebhookKeyStore

DATABASE_URL = os.environ.get("STT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PENDING = ChunkState.PENDING


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_conninfo() -> Iterator[str]:
    """A conninfo whose search_path is a fresh schema, migrated."""
    try:
        admin = psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(
            f"PostgreSQL is not reachable at {DATABASE_URL} ({exc}). Start it, e.g. "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, "
            "or point STT_TEST_DATABASE_URL at one."
        )
    schema = f"sttpipe_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            conninfo = make_conninfo(DATABASE_URL, options=f"-c search_path={schema}")
            migrate(conninfo)
            yield conninfo
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def pg_repo(pg_conninfo: str) -> Iterator[PostgresJobRepository]:
    repo = PostgresJobRepository(create_pool(pg_conninfo, max_size=4))
    yield repo
    repo.close()


@pytest.fixture(
    params=["memory", pytest.param("postgres", marks=pytest.mark.integration)],
)
def repo(request: pytest.FixtureRequest) -> JobRepository:
    if request.param == "memory":
        return InMemoryJobRepository()
    pg: PostgresJobRepository = request.getfixturevalue("pg_repo")
    return pg


@pytest.fixture
def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"  # keeps the cases apart in the shared schema


def new_job(tenant: str = "default", created_at: datetime = T0, **kw: object) -> Job:
    fields: dict[str, object] = {
        "job_id": uuid.uuid4().hex,
        "tenant_id": tenant,
        "filename": "talk.mp3",
        "upload_key": "uploads/x/talk.mp3",
        "created_at": created_at,
        "updated_at": created_at,
    }
    fields.update(kw)
    return Job.model_validate(fields)


def chunks(n: int) -> list[ChunkProgress]:
    return [
        ChunkProgress(
            index=i, start_ms=i * 30_000, end_ms=(i + 1) * 30_000, state=ChunkState.PENDING
        )
        for i in range(n)
    ]


def status_of(repo: JobRepository, job_id: str) -> tuple[JobStatus, str | None]:
    view = repo.get(job_id)
    assert view is not None
    return view.job.status, view.job.failure_reason


# ---- the contract, on both implementations --------------------------------------------------


def test_add_and_get_round_trip(repo: JobRepository, tenant: str) -> None:
    job = new_job(
        tenant,
        content_type="audio/mpeg",
        language="ru",
        prompt="Grafana, Kubernetes",
        priority=Priority.HIGH,
        stats={"nested": {"ok": True}, "n": [1, 2]},
    )
    repo.add(job)
    view = repo.get(job.job_id)
    assert view is not None and view.chunks == []
    assert view.job == job
    assert repo.get("no-such-job") is None


def test_adding_an_existing_job_keeps_the_stored_one(repo: JobRepository, tenant: str) -> None:
    job = new_job(tenant)
    repo.add(job)
    repo.add(job.model_copy(update={"filename": "other.wav"}))
    view = repo.get(job.job_id)
    assert view is not None and view.job.filename == "talk.mp3"


def test_chunks_progress(repo: JobRepository, tenant: str) -> None:
    job = new_job(tenant)
    repo.add(job)
    repo.add_chunks(job.job_id, list(reversed(chunks(4))))
    repo.set_chunk_state(job.job_id, 2, ChunkState.DONE)
    repo.set_chunk_state(job.job_id, 0, ChunkState.FAILED, error="HTTP 500")
    repo.set_chunk_state(job.job_id, 3, ChunkState.SILENT)
    repo.add_chunks(job.job_id, chunks(4))  # a redelivered split keeps the progress
    view = repo.get(job.job_id)
    assert view is not None
    assert [(c.index, c.state, c.error) for c in view.chunks] == [
        (0, ChunkState.FAILED, "HTTP 500"),
        (1, ChunkState.PENDING, None),
        (2, ChunkState.DONE, None),
        (3, ChunkState.SILENT, None),
    ]
    assert (view.chunks_total, view.chunks_finished) == (4, 3)


def test_unknown_jobs_and_chunks_raise(repo: JobRepository, tenant: str) -> None:
    with pytest.raises(JobNotFound):
        repo.set_status("nope", JobStatus.SPLITTING)
    with pytest.raises(JobNotFound):
        repo.finish("nope", JobStatus.COMPLETED, stats={})
    with pytest.raises(JobNotFound):
        repo.add_chunks("nope", chunks(1))
    job = new_job(tenant)
    repo.add(job)
    with pytest.raises(JobNotFound):
        repo.set_chunk_state(job.job_id, 0, ChunkState.DONE)


def test_status_moves_until_final_then_stays(repo: JobRepository, tenant: str) -> None:
    job = new_job(tenant)
    repo.add(job)
    for status in (JobStatus.SPLITTING, JobStatus.TRANSCRIBING, JobStatus.MERGING):
        repo.set_status(job.job_id, status)
        assert status_of(repo, job.job_id) == (status, None)
    repo.set_status(job.job_id, JobStatus.FAILED, reason="splitter: not audio")
    repo.set_status(job.job_id, JobStatus.COMPLETED)  # at-least-once: refused quietly
    repo.set_status(job.job_id, JobStatus.TRANSCRIBING)
    assert status_of(repo, job.job_id) == (JobStatus.FAILED, "splitter: not audio")
    view = repo.get(job.job_id)
    assert view is not None and view.job.updated_at > job.updated_at


def test_an_upload_is_claimed_once(repo: JobRepository, tenant: str) -> None:
    job = new_job(tenant)
    repo.add(job)
    assert repo.claim_upload(job.job_id, '"etag-1"') is True
    assert repo.claim_upload(job.job_id, '"etag-2"') is False  # the form's second use
    view = repo.get(job.job_id)
    assert view is not None
    assert (view.job.status, view.job.upload_etag) == (JobStatus.SPLITTING, '"etag-1"')
    with pytest.raises(JobNotFound):
        repo.claim_upload("no-such-job", '"etag"')


def test_a_detected_language_is_pinned_once_and_only_by_the_current_run(
    repo: JobRepository, tenant: str
) -> None:
    job = new_job(tenant, language_source=LanguageSource.DETECT)
    repo.add(job)
    assert repo.pin_language(job.job_id, "ru", run=2) is False  # not the job's run
    assert repo.pin_language(job.job_id, "en", run=1) is True
    assert repo.pin_language(job.job_id, "de", run=1) is False  # pinned already
    view = repo.get(job.job_id)
    assert view is not None
    assert (view.job.language, view.job.language_source) == ("en", LanguageSource.DETECTED)
    requested = new_job(tenant, language="fr")
    repo.add(requested)
    assert repo.pin_language(requested.job_id, "en", run=1) is False  # named by the upload
    with pytest.raises(JobNotFound):
        repo.pin_language("no-such-job", "en", run=1)


def test_finish_records_stats_and_never_reopens_a_final_job(
    repo: JobRepository, tenant: str
) -> None:
    job = new_job(tenant)
    repo.add(job)
    repo.finish(job.job_id, JobStatus.MERGING, stats={"step": 1})
    assert status_of(repo, job.job_id) == (JobStatus.MERGING, None)
    repo.finish(job.job_id, JobStatus.PARTIAL, stats={"chunks_failed": 1}, reason="1 of 4 failed")
    repo.finish(job.job_id, JobStatus.MERGING, stats={"step": 2})
    view = repo.get(job.job_id)
    assert view is not None
    assert (view.job.status, view.job.failure_reason) == (JobStatus.PARTIAL, "1 of 4 failed")
    assert view.job.stats == {"chunks_failed": 1}
    repo.finish(job.job_id, JobStatus.COMPLETED, stats={"chunks_failed": 0})  # a re-merge
    view = repo.get(job.job_id)
    assert view is not None
    assert (view.job.status, view.job.stats) == (JobStatus.COMPLETED, {"chunks_failed": 0})


def test_list_jobs_pages_newest_first(repo: JobRepository, tenant: str) -> None:
    # Three share a created_at: the job_id breaks the tie, so no page repeats or skips one.
    times = [T0 + timedelta(minutes=m) for m in (0, 1, 1, 1, 2, 3, 4)]
    jobs = [new_job(tenant, created_at=t) for t in times]
    for job in jobs:
        repo.add(job)
    repo.add(new_job("someone-else", created_at=T0 + timedelta(hours=1)))
    expected = [j.job_id for j in sorted(jobs, key=lambda j: (j.created_at, j.job_id))][::-1]

    seen: list[str] = []
    before: str | None = None
    while page := repo.list_jobs(tenant, 3, before):
        assert len(page) <= 3
        seen += [j.job_id for j in page]
        before = page[-1].job_id
    assert seen == expected
    assert repo.list_jobs(tenant, 100)[0] == jobs[-1]


def test_list_jobs_with_a_foreign_or_unknown_cursor_is_empty(
    repo: JobRepository, tenant: str
) -> None:
    mine, theirs = new_job(tenant), new_job("someone-else", created_at=T0 + timedelta(days=1))
    repo.add(mine)
    repo.add(theirs)
    assert repo.list_jobs(tenant, 10, before=theirs.job_id) == []
    assert repo.list_jobs(tenant, 10, before="no-such-job") == []
    with pytest.raises(ValueError):
        repo.list_jobs(tenant, 0)


def ended_job(repo: JobRepository, tenant: str, status: JobStatus, states: list[ChunkState]) -> Job:
    """A job whose chunks ended in `states` (FAILED ones with an error), then in `status`."""
    job = new_job(tenant)
    repo.add(job)
    repo.add_chunks(job.job_id, chunks(len(states)))
    for index, state in enumerate(states):
        error = f"chunk {index}: HTTP 500" if state is ChunkState.FAILED else None
        repo.set_chunk_state(job.job_id, index, state, error=error)
    repo.finish(job.job_id, status, stats={"chunks": len(states)}, reason="it ended")
    return job


def test_reopen_takes_a_job_back_with_only_its_unfinished_chunks(
    repo: JobRepository, tenant: str
) -> None:
    done, failed, silent = ChunkState.DONE, ChunkState.FAILED, ChunkState.SILENT
    job = ended_job(repo, tenant, JobStatus.PARTIAL, [done, failed, silent, PENDING, failed])

    assert repo.reopen(job.job_id) == 2

    view = repo.get(job.job_id)
    assert view is not None
    assert (view.job.status, view.job.failure_reason, view.job.runs) == (
        JobStatus.TRANSCRIBING,
        None,
        2,
    )
    assert view.job.stats == {"chunks": 5}  # the merge of the re-run replaces them
    assert view.job.updated_at > job.updated_at
    assert [(c.state, c.error) for c in view.chunks] == [
        (done, None),
        (PENDING, None),
        (silent, None),
        (PENDING, None),
        (PENDING, None),
    ]
    assert repo.reopen(job.job_id) is None  # running now
    repo.finish(job.job_id, JobStatus.FAILED, stats={}, reason="the re-run failed too")
    assert repo.reopen(job.job_id) == 3
    with pytest.raises(JobNotFound):
        repo.reopen("no-such-job")


def test_an_earlier_runs_finish_or_chunk_answer_changes_nothing(
    repo: JobRepository, tenant: str
) -> None:
    job = ended_job(repo, tenant, JobStatus.PARTIAL, [ChunkState.DONE, ChunkState.FAILED])
    assert repo.reopen(job.job_id) == 2

    # Run 1's merge and a chunk answer of it, delivered again once the re-run has begun.
    assert not repo.finish(job.job_id, JobStatus.PARTIAL, stats={}, reason="run 1", run=1)
    assert not repo.set_chunk_state(job.job_id, 1, ChunkState.FAILED, error="run 1", run=1)
    view = repo.get(job.job_id)
    assert view is not None
    assert (view.job.status, view.job.failure_reason) == (JobStatus.TRANSCRIBING, None)
    assert (view.chunks[1].state, view.chunks[1].error) == (PENDING, None)
    assert repo.reopen(job.job_id) is None  # no third run beside the second

    assert repo.set_chunk_state(job.job_id, 1, ChunkState.DONE, run=2)
    assert repo.finish(job.job_id, JobStatus.COMPLETED, stats={}, run=2)
    assert status_of(repo, job.job_id) == (JobStatus.COMPLETED, None)
    with pytest.raises(JobNotFound):
        repo.set_chunk_state(job.job_id, 7, ChunkState.DONE, run=2)


def test_unsettled_jobs_are_the_running_ones_unchanged_since(
    repo: JobRepository, tenant: str
) -> None:
    now = datetime.now(UTC)
    long_ago = now - timedelta(hours=3)
    made = {}
    for status in (JobStatus.SPLITTING, JobStatus.TRANSCRIBING, JobStatus.COMPLETED):
        job = new_job(tenant, created_at=long_ago)
        repo.add(job)
        if status.is_final:
            repo.finish(job.job_id, status, stats={})
        else:
            repo.set_status(job.job_id, status)
        made[status] = job.job_id

    found = repo.unsettled(unchanged_since=now + timedelta(seconds=1), limit=1000)
    assert {j.job_id for j in found} >= {made[JobStatus.SPLITTING], made[JobStatus.TRANSCRIBING]}
    assert made[JobStatus.COMPLETED] not in {j.job_id for j in found}
    assert [j.updated_at for j in found] == sorted(j.updated_at for j in found)
    recent = repo.unsettled(unchanged_since=now - timedelta(minutes=5), limit=1000)
    assert not {j.job_id for j in recent} & set(made.values())  # they just changed
    assert len(repo.unsettled(unchanged_since=now + timedelta(seconds=1), limit=1)) == 1


def test_content_hashes_are_kept_with_the_job(repo: JobRepository, tenant: str) -> None:
    job = new_job(tenant)
    repo.add(job)
    assert repo.content_hashes(job.job_id) == []
    repo.remember_content(job.job_id, ["b" * 64, "a" * 64])
    repo.remember_content(job.job_id, ["a" * 64, "c" * 64])  # a redelivered split adds again
    assert repo.content_hashes(job.job_id) == ["a" * 64, "b" * 64, "c" * 64]
    repo.delete(job.job_id)
    assert repo.content_hashes(job.job_id) == []
    with pytest.raises(JobNotFound):
        repo.remember_content(job.job_id, ["d" * 64])


@pytest.mark.parametrize(
    "status",
    [
        JobStatus.AWAITING_UPLOAD,
        JobStatus.SPLITTING,
        JobStatus.TRANSCRIBING,
        JobStatus.MERGING,
        JobStatus.COMPLETED,
    ],
)
def test_only_a_partial_or_failed_job_reopens(
    repo: JobRepository, tenant: str, status: JobStatus
) -> None:
    job = ended_job(repo, tenant, status, [ChunkState.DONE, ChunkState.FAILED])
    assert repo.reopen(job.job_id) is None
    view = repo.get(job.job_id)
    assert view is not None
    assert (view.job.status, view.job.failure_reason, view.job.runs) == (status, "it ended", 1)
    assert [c.state for c in view.chunks] == [ChunkState.DONE, ChunkState.FAILED]
    assert view.chunks[1].error == "chunk 1: HTTP 500"


# ---- PostgreSQL only ------------------------------------------------------------------------


def run_threads(*targets: Callable[[], None]) -> None:
    start = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def run(target: Callable[[], None]) -> None:
        start.wait()
        try:
            target()
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.integration
def test_concurrent_final_statuses_first_one_wins_whole(
    pg_repo: PostgresJobRepository, tenant: str
) -> None:
    job = new_job(tenant)
    pg_repo.add(job)
    outcomes = [(JobStatus.FAILED, f"worker {i}") for i in range(4)] + [
        (JobStatus.PARTIAL, f"merge {i}") for i in range(4)
    ]
    run_threads(*[partial(pg_repo.set_status, job.job_id, s, reason=r) for s, r in outcomes])
    winner = status_of(pg_repo, job.job_id)
    assert winner in outcomes  # one caller's pair, never a mix
    pg_repo.set_status(job.job_id, JobStatus.FAILED, reason="late redelivery")
    assert status_of(pg_repo, job.job_id) == winner


@pytest.mark.integration
def test_concurrent_workers_and_a_finish_never_reopen_the_job(
    pg_repo: PostgresJobRepository, tenant: str
) -> None:
    job = new_job(tenant)
    pg_repo.add(job)
    pg_repo.add_chunks(job.job_id, chunks(40))

    def worker(first: int) -> Callable[[], None]:
        def work() -> None:
            for i in range(first, 40, 4):
                pg_repo.set_chunk_state(job.job_id, i, ChunkState.DONE)
                pg_repo.set_status(job.job_id, JobStatus.TRANSCRIBING)

        return work

    def merge() -> None:
        pg_repo.finish(job.job_id, JobStatus.COMPLETED, stats={"chunks": 40})

    run_threads(worker(0), worker(1), worker(2), worker(3), merge)
    view = pg_repo.get(job.job_id)
    assert view is not None
    assert view.job.status is JobStatus.COMPLETED
    assert view.chunks_finished == 40


@pytest.mark.integration
def test_of_concurrent_reopens_exactly_one_wins(
    pg_repo: PostgresJobRepository, tenant: str
) -> None:
    job = ended_job(pg_repo, tenant, JobStatus.PARTIAL, [ChunkState.DONE, ChunkState.FAILED])
    runs: list[int | None] = []
    run_threads(*[lambda: runs.append(pg_repo.reopen(job.job_id))] * 6)
    assert sorted(runs, key=lambda r: r or 0) == [None] * 5 + [2]
    view = pg_repo.get(job.job_id)
    assert view is not None and (view.job.status, view.job.runs) == (JobStatus.TRANSCRIBING, 2)


@pytest.mark.integration
@pytest.mark.usefixtures("pg_conninfo")  # skips the case when there is no server
def test_a_database_from_before_reruns_and_prompts_gains_their_columns() -> None:
    schema = f"sttpipe_old_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(DATABASE_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            conninfo = make_conninfo(DATABASE_URL, options=f"-c search_path={schema}")
            migrate(conninfo)
            job = new_job("old")
            with psycopg.connect(conninfo) as conn:
                # As it was before re-runs and prompts, made by hand from the schema file of
                # then (before numbered migrations: no schema_migrations table).
                conn.execute("ALTER TABLE jobs DROP COLUMN runs, DROP COLUMN prompt")
                conn.execute("DROP TABLE schema_migrations, webhook_keys")
                conn.execute(
                    "INSERT INTO jobs (job_id, filename, upload_key, created_at, updated_at,"
                    " status) VALUES (%s, 'a.mp3', 'k', now(), now(), 'PARTIAL')",
                    (job.job_id,),
                )
            assert migrate(conninfo) == [1, 2]
            repo = PostgresJobRepository(create_pool(conninfo, max_size=1))
            try:
                view = repo.get(job.job_id)
                assert view is not None and view.job.runs == 1 and view.job.prompt is None
                assert repo.reopen(job.job_id) == 2
            finally:
                repo.close()
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.integration
def test_deleting_a_job_deletes_its_chunks(pg_repo: PostgresJobRepository, tenant: str) -> None:
    job = new_job(tenant)
    pg_repo.add(job)
    pg_repo.add_chunks(job.job_id, chunks(3))
    with pg_repo._pool.connection() as conn:  # no delete in the port yet: plain SQL
        conn.execute("DELETE FROM jobs WHERE job_id = %s", (job.job_id,))
        left = conn.execute("SELECT count(*) FROM job_chunks WHERE job_id = %s", (job.job_id,))
        assert left.fetchone() == (0,)


@pytest.fixture(
    params=["memory", pytest.param("postgres", marks=pytest.mark.integration)],
)
def webhook_keys(request: pytest.FixtureRequest) -> WebhookKeyStore:
    if request.param == "memory":
        return InMemoryWebhookKeys()
    pg: PostgresJobRepository = request.getfixturevalue("pg_repo")
    return PostgresWebhookKeys(pg.pool)


def test_a_webhook_key_is_made_once_per_tenant_and_rotated_one_generation_at_a_time(
    webhook_keys: WebhookKeyStore, tenant: str
) -> None:
    assert webhook_keys.current(tenant) is None
    made, created = webhook_keys.get_or_create(tenant)
    assert created and made.generation == 1 and made.tenant_id == tenant
    assert webhook_keys.get_or_create(tenant) == (made, False)
    rotated = webhook_keys.rotate(tenant)
    assert rotated.generation == 2 and rotated.rotated_at >= made.rotated_at
    assert webhook_keys.current(tenant) == rotated
    assert webhook_keys.rotate(f"{tenant}-other").generation == 1  # the first for a new one


def test_concurrent_first_uses_make_one_key(webhook_keys: WebhookKeyStore, tenant: str) -> None:
    made: list[bool] = []
    run_threads(*[lambda: made.append(webhook_keys.get_or_create(tenant)[1])] * 4)
    assert sorted(made) == [False, False, False, True]


@pytest.mark.integration
def test_repository_from_settings_is_one_per_container(pg_conninfo: str) -> None:
    # A conninfo of its own, so that this case's (closed) pool is nobody else's cached one.
    conninfo = make_conninfo(pg_conninfo, application_name=f"sttpipe-{uuid.uuid4().hex[:8]}")
    repo = job_repository_from_settings(
        Settings(database_url=SecretStr(conninfo), database_pool_max=1)
    )
    try:
        again = job_repository_from_settings(
            Settings(database_url=SecretStr(conninfo), database_pool_max=1)
        )
        assert again is repo
        job = new_job("settings")
        repo.add(job)
        assert repo.get(job.job_id) is not None
    finally:
        repo.close()


def test_repository_from_settings_needs_a_database() -> None:
    with pytest.raises(ValueError, match="STT_DATABASE_URL"):
        job_repository_from_settings(Settings(database_url=None, database_secret_id=None))


@pytest.mark.integration
def test_conninfo_from_an_rds_secret(pg_conninfo: str, moto_env: None) -> None:
    # Secrets Manager is moto's; the database it points at is the real one.
    params = conninfo_to_dict(pg_conninfo)
    secret = {
        "engine": "postgres",
        "host": params.get("host", "127.0.0.1"),
        "port": int(params.get("port") or 5432),
        "username": params.get("user", "postgres"),
        "password": params.get("password", ""),
        "dbname": params.get("dbname", "test"),
        "sslmode": "disable",  # the local server has no TLS; RDS gets "require" by default
    }
    with mock_aws():
        boto3.client("secretsmanager").create_secret(
            Name="sttpipe/db", SecretString=json.dumps(secret)
        )
        conninfo = conninfo_from_secret("sttpipe/db")()
    assert conninfo_to_dict(conninfo)["user"] == secret["username"]
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (secret["dbname"],)
