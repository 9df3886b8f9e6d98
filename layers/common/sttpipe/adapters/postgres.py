"""The job repository on PostgreSQL (RDS on AWS), with psycopg 3 and a connection pool.

Every status change is one conditional UPDATE, so concurrent workers and redelivered messages
cannot move a job out of a final status: PostgreSQL re-checks the WHERE clause of an UPDATE
after waiting for a concurrent writer of the same row.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from sttpipe.adapters.database import create_pool, resolve_conninfo
from sttpipe.config import Settings
from sttpipe.domain.models import (
    ChunkProgress,
    ChunkState,
    Job,
    JobStatus,
    JobView,
    LanguageSource,
    WebhookKey,
)
from sttpipe.ports import JobNotFound

FINAL_STATUSES = [s.value for s in JobStatus if s.is_final]
# A job ended in one of these may run again for its chunks that did not finish.
RERUNNABLE_STATUSES = [JobStatus.PARTIAL.value, JobStatus.FAILED.value]
# A job in one of these has work in flight, or is stuck: the reconciler's candidates.
UNSETTLED_STATUSES = [
    JobStatus.SPLITTING.value,
    JobStatus.TRANSCRIBING.value,
    JobStatus.MERGING.value,
]
# Chunks a re-run leaves alone: they have their transcript, or need none.
SETTLED_CHUNK_STATES = [ChunkState.DONE.value, ChunkState.SILENT.value]

_JOB_COLUMNS = (
    "job_id, tenant_id, filename, content_type, language, priority, status, upload_key,"
    " created_at, updated_at, failure_reason, stats, webhook_url, runs, prompt, language_source,"
    " upload_etag"
)
_LIST_FIRST_PAGE = f"""
    SELECT {_JOB_COLUMNS} FROM jobs WHERE tenant_id = %(tenant)s
    ORDER BY created_at DESC, job_id DESC LIMIT %(limit)s
"""
# An unknown cursor (or another tenant's job) makes the sub-select NULL and the page empty.
_LIST_NEXT_PAGE = f"""
    SELECT {_JOB_COLUMNS} FROM jobs WHERE tenant_id = %(tenant)s
      AND (created_at, job_id) < (
          SELECT created_at, job_id FROM jobs WHERE job_id = %(before)s AND tenant_id = %(tenant)s)
    ORDER BY created_at DESC, job_id DESC LIMIT %(limit)s
"""


class PostgresJobRepository:
    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    @property
    def pool(self) -> ConnectionPool:
        """Shared with the other stores on the same database (one pool per container)."""
        return self._pool

    def close(self) -> None:
        self._pool.close()

    def add(self, job: Job) -> None:
        """Store a new job; adding an id that exists leaves the stored job untouched."""
        row = job.model_dump()
        row["stats"] = Jsonb(row["stats"])
        placeholders = ", ".join(f"%({c.strip()})s" for c in _JOB_COLUMNS.split(","))
        with self._pool.connection() as conn:
            conn.execute(
                f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({placeholders})"
                " ON CONFLICT (job_id) DO NOTHING",
                row,
            )

    def get(self, job_id: str) -> JobView | None:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            job = cur.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = %s", (job_id,)
            ).fetchone()
            if job is None:
                return None
            chunks = cur.execute(
                "SELECT idx AS index, start_ms, end_ms, state, error FROM job_chunks"
                " WHERE job_id = %s ORDER BY idx",
                (job_id,),
            ).fetchall()
        return JobView(
            job=Job.model_validate(job),
            chunks=[ChunkProgress.model_validate(c) for c in chunks],
        )

    def set_status(self, job_id: str, status: JobStatus, *, reason: str | None = None) -> None:
        """Move a job that is not final yet; a final job stays as it is (at-least-once delivery)."""
        with self._pool.connection() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = %s, failure_reason = %s, updated_at = now()"
                " WHERE job_id = %s AND status <> ALL(%s)",
                (status.value, reason, job_id, FINAL_STATUSES),
            )
            if cur.rowcount == 0:
                self._require_job(conn, job_id)

    def claim_upload(self, job_id: str, etag: str) -> bool:
        with self._pool.connection() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = %s, upload_etag = %s, updated_at = now()"
                " WHERE job_id = %s AND status = %s",
                (JobStatus.SPLITTING.value, etag, job_id, JobStatus.AWAITING_UPLOAD.value),
            )
            if cur.rowcount == 0:
                self._require_job(conn, job_id)
            return cur.rowcount == 1

    def add_chunks(self, job_id: str, chunks: list[ChunkProgress]) -> None:
        """Record a job's chunks; chunks already recorded (a redelivered split) keep their state."""
        if not chunks:
            return
        with self._pool.connection() as conn, conn.cursor() as cur:
            try:
                cur.executemany(
                    "INSERT INTO job_chunks (job_id, idx, start_ms, end_ms, state, error)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (job_id, idx) DO NOTHING",
                    [
                        (job_id, c.index, c.start_ms, c.end_ms, c.state.value, c.error)
                        for c in chunks
                    ],
                )
            except psycopg.errors.ForeignKeyViolation as exc:
                raise JobNotFound(job_id) from exc

    def pin_language(self, job_id: str, language: str, *, run: int) -> bool:
        with self._pool.connection() as conn:
            cur = conn.execute(
                "UPDATE jobs SET language = %s, language_source = %s, updated_at = now()"
                " WHERE job_id = %s AND language_source = %s AND runs = %s",
                (
                    language,
                    LanguageSource.DETECTED.value,
                    job_id,
                    LanguageSource.DETECT.value,
                    run,
                ),
            )
            if cur.rowcount == 0:
                self._require_job(conn, job_id)
            return cur.rowcount == 1

    def set_chunk_state(
        self,
        job_id: str,
        index: int,
        state: ChunkState,
        *,
        error: str | None = None,
        run: int | None = None,
    ) -> bool:
        with self._pool.connection() as conn:
            cur = conn.execute(
                "UPDATE job_chunks c SET state = %(state)s, error = %(error)s, updated_at = now()"
                " FROM jobs j WHERE c.job_id = %(job)s AND c.idx = %(idx)s AND j.job_id = c.job_id"
                " AND (%(run)s::int IS NULL OR j.runs = %(run)s)",
                {"state": state.value, "error": error, "job": job_id, "idx": index, "run": run},
            )
            if cur.rowcount:
                return True
            found = conn.execute(
                "SELECT 1 FROM job_chunks WHERE job_id = %s AND idx = %s", (job_id, index)
            ).fetchone()
            if found is None:
                raise JobNotFound(f"{job_id} chunk {index}")
            return False

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        stats: dict[str, Any],
        reason: str | None = None,
        run: int | None = None,
    ) -> bool:
        """Record the merge's outcome. A final status lands (the merge is the authority and a
        repeated merge writes the same) unless `run` is no longer the job's; a non-final one
        never replaces a final one. The row lock orders it against a concurrent reopen()."""
        with self._pool.connection() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = %(status)s, stats = %(stats)s, failure_reason = %(why)s,"
                " updated_at = now() WHERE job_id = %(job)s"
                " AND (%(final)s OR status <> ALL(%(finals)s))"
                " AND (%(run)s::int IS NULL OR runs = %(run)s)",
                {
                    "status": status.value,
                    "stats": Jsonb(stats),
                    "why": reason,
                    "job": job_id,
                    "final": status.is_final,
                    "finals": FINAL_STATUSES,
                    "run": run,
                },
            )
            if cur.rowcount == 0:
                self._require_job(conn, job_id)
            return bool(cur.rowcount)

    def reopen(self, job_id: str) -> int | None:
        """Move a PARTIAL or FAILED job back to TRANSCRIBING for a re-run, with its unfinished
        chunks PENDING again; returns the new run number, or None when the job was in no status
        to re-run (running, completed, or a concurrent reopen came first).

        One transaction: the conditional UPDATE locks the job's row, so of two concurrent
        reopens the second re-checks the status after the first commits and matches nothing.
        """
        with self._pool.connection() as conn:
            row = conn.execute(
                "UPDATE jobs SET status = %s, failure_reason = NULL, runs = runs + 1,"
                " updated_at = now() WHERE job_id = %s AND status = ANY(%s) RETURNING runs",
                (JobStatus.TRANSCRIBING.value, job_id, RERUNNABLE_STATUSES),
            ).fetchone()
            if row is None:
                self._require_job(conn, job_id)
                return None
            conn.execute(
                "UPDATE job_chunks SET state = %s, error = NULL, updated_at = now()"
                " WHERE job_id = %s AND state <> ALL(%s)",
                (ChunkState.PENDING.value, job_id, SETTLED_CHUNK_STATES),
            )
        return int(row[0])

    def list_jobs(self, tenant_id: str, limit: int, before: str | None = None) -> list[Job]:
        """A tenant's jobs, newest first; `before` is the last job_id of the previous page."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = _LIST_FIRST_PAGE if before is None else _LIST_NEXT_PAGE
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                query, {"tenant": tenant_id, "limit": limit, "before": before}
            ).fetchall()
        return [Job.model_validate(r) for r in rows]

    def unsettled(self, *, unchanged_since: datetime, limit: int) -> list[Job]:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = ANY(%s) AND updated_at < %s"
                " ORDER BY updated_at LIMIT %s",
                (UNSETTLED_STATUSES, unchanged_since, limit),
            ).fetchall()
        return [Job.model_validate(r) for r in rows]

    def remember_content(self, job_id: str, content_sha256s: Sequence[str]) -> None:
        if not content_sha256s:
            return
        with self._pool.connection() as conn, conn.cursor() as cur:
            try:
                cur.executemany(
                    "INSERT INTO job_content (job_id, content_sha256) VALUES (%s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [(job_id, sha) for sha in content_sha256s],
                )
            except psycopg.errors.ForeignKeyViolation as exc:
                raise JobNotFound(job_id) from exc

    def content_hashes(self, job_id: str) -> list[str]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT content_sha256 FROM job_content WHERE job_id = %s ORDER BY content_sha256",
                (job_id,),
            ).fetchall()
        return [r[0] for r in rows]

    def delete(self, job_id: str) -> None:
        with self._pool.connection() as conn:
            # Chunks and content hashes cascade.
            conn.execute("DELETE FROM jobs WHERE job_id = %s", (job_id,))

    @staticmethod
    def _require_job(conn: psycopg.Connection[Any], job_id: str) -> None:
        if conn.execute("SELECT 1 FROM jobs WHERE job_id = %s", (job_id,)).fetchone() is None:
            raise JobNotFound(job_id)


class PostgresWebhookKeys:
    """`WebhookKeyStore` on the `webhook_keys` table, sharing the job repository's pool."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def current(self, tenant_id: str) -> WebhookKey | None:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(_WEBHOOK_KEY_SELECT, {"tenant": tenant_id}).fetchone()
        return WebhookKey.model_validate(row) if row else None

    def get_or_create(self, tenant_id: str) -> tuple[WebhookKey, bool]:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            made = cur.execute(
                "INSERT INTO webhook_keys (tenant_id, generation) VALUES (%(tenant)s, 1)"
                " ON CONFLICT (tenant_id) DO NOTHING"
                " RETURNING tenant_id, generation, rotated_at",
                {"tenant": tenant_id},
            ).fetchone()
            row = made or cur.execute(_WEBHOOK_KEY_SELECT, {"tenant": tenant_id}).fetchone()
        return WebhookKey.model_validate(row), made is not None

    def rotate(self, tenant_id: str) -> WebhookKey:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "INSERT INTO webhook_keys (tenant_id, generation) VALUES (%(tenant)s, 1)"
                " ON CONFLICT (tenant_id) DO UPDATE"
                " SET generation = webhook_keys.generation + 1, rotated_at = now()"
                " RETURNING tenant_id, generation, rotated_at",
                {"tenant": tenant_id},
            ).fetchone()
        return WebhookKey.model_validate(row)


_WEBHOOK_KEY_SELECT = (
    "SELECT tenant_id, generation, rotated_at FROM webhook_keys WHERE tenant_id = %(tenant)s"
)


def webhook_keys_from_settings(settings: Settings) -> PostgresWebhookKeys:
    return PostgresWebhookKeys(job_repository_from_settings(settings).pool)


def job_repository_from_settings(settings: Settings) -> PostgresJobRepository:
    """The container's repository: one pool per database, however often this is called."""
    url = settings.database_url.get_secret_value() if settings.database_url else None
    return _repository(
        url,
        settings.database_secret_id,
        settings.database_host,
        settings.database_name,
        settings.database_pool_max,
    )


@functools.cache
def _repository(
    url: str | None, secret_id: str | None, host: str | None, dbname: str | None, pool_max: int
) -> PostgresJobRepository:
    return PostgresJobRepository(
        create_pool(resolve_conninfo(url, secret_id, host, dbname), pool_max)
    )
