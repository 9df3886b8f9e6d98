"""The small interfaces through which the services talk to the world.

Each has a real adapter in `sttpipe.adapters` (S3, PostgreSQL, Step Functions, Cloud.ru) and an
in-memory fake in `sttpipe_testing.fakes` for unit tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit

from sttpipe.domain.events import DomainEvent
from sttpipe.domain.models import (
    ChunkProgress,
    ChunkRef,
    ChunkState,
    Job,
    JobStatus,
    JobView,
    SpeechCapacity,
    WebhookKey,
)
from sttpipe.domain.transcripts import CachedChunk, CachedUpload, CacheLevel, Hit
from sttpipe.observability import Dimension, Metric


class ObjectNotFound(LookupError):
    """The object store has no object under the key asked for."""


class JobNotFound(LookupError):
    """The repository has no such job (or no such chunk of it)."""


class TaskNoLongerWaiting(Exception):
    """A callback task was answered after it timed out, closed or never existed.

    With at-least-once delivery this is expected now and then: log it and drop the message.
    """


class Download(Protocol):
    """An object arriving on local disk: a binary file, and its SHA-256 once complete."""

    name: str
    size: int

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...

    @property
    def sha256(self) -> str | None:
        """The whole object's SHA-256 once all of it arrived; None before."""
        ...

    def wait_until_complete(self) -> str:
        """Wait for the last byte; the whole object's SHA-256."""
        ...


class ObjectStore(Protocol):
    def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    def put_bytes_if_absent(self, key: str, data: bytes, content_type: str) -> bool:
        """Store the object only if there is none under `key` yet (one atomic conditional
        write); False when another writer was first."""
        ...

    def get_bytes(self, key: str) -> bytes: ...

    def download(self, key: str) -> AbstractContextManager[Download]:
        """Stream the object into a temporary file and yield it open for reading at once: a
        read waits for the bytes it asks for, so the caller works while the rest arrives."""
        ...

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when it does not exist."""
        ...

    def presigned_get(self, key: str, expires_s: int) -> str: ...

    def presigned_post(
        self, key: str, content_type: str, max_bytes: int, expires_s: int
    ) -> dict[str, Any]: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix`; returns how many there were."""
        ...


class JobRepository(Protocol):
    def add(self, job: Job) -> None: ...

    def get(self, job_id: str) -> JobView | None: ...

    def set_status(self, job_id: str, status: JobStatus, *, reason: str | None = None) -> None: ...

    def claim_upload(self, job_id: str, etag: str) -> bool:
        """Move a job AWAITING_UPLOAD to SPLITTING for the upload with this ETag. False when it
        was no longer awaiting one; raises JobNotFound."""
        ...

    def add_chunks(self, job_id: str, chunks: list[ChunkProgress]) -> None: ...

    def set_chunk_state(
        self,
        job_id: str,
        index: int,
        state: ChunkState,
        *,
        error: str | None = None,
        run: int | None = None,
    ) -> bool:
        """Record a chunk's state; with `run`, only while that run is the job's current one.
        False when a newer run owns the job; raises JobNotFound for an unknown chunk."""
        ...

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        stats: dict[str, Any],
        reason: str | None = None,
        run: int | None = None,
    ) -> bool:
        """Record a job's outcome: a final status always lands (unless `run` is given and a
        newer run owns the job), a non-final one never replaces a final one. False when it did
        not land."""
        ...

    def pin_language(self, job_id: str, language: str, *, run: int) -> bool:
        """Record the language detected for a job that named none (LanguageSource.DETECT), while
        `run` is its current run. False when it had a language or another run owns the job;
        raises JobNotFound."""
        ...

    def remember_content(self, job_id: str, content_sha256s: Sequence[str]) -> None:
        """Keep the hashes the job's cache entries are keyed by (its upload's, its chunks'), so
        that deleting the job can find them for as long as the job exists."""
        ...

    def content_hashes(self, job_id: str) -> list[str]:
        """The hashes remembered for the job, sorted; none for an unknown job."""
        ...

    def reopen(self, job_id: str) -> int | None:
        """Take a PARTIAL or FAILED job back to TRANSCRIBING for a re-run, in one atomic step:
        no failure reason, its chunks that are not DONE or SILENT PENDING again with no error,
        one run more. Returns the new run number, or None when the job is in no status to re-run
        (running, completed, or a concurrent reopen came first)."""
        ...

    def list_jobs(self, tenant_id: str, limit: int, before: str | None = None) -> list[Job]: ...

    def unsettled(self, *, unchanged_since: datetime, limit: int) -> list[Job]:
        """Jobs of every tenant in SPLITTING, TRANSCRIBING or MERGING whose status has not
        changed since `unchanged_since`, oldest first: what the reconciler checks."""
        ...

    def delete(self, job_id: str) -> None:
        """Remove the job and its chunks; a job that does not exist is no error."""
        ...


class Workflow(Protocol):
    """The state machine side: start a job's execution, answer its callback tasks."""

    def start(self, job_id: str, execution_input: str, run: int = 1) -> str:
        """Start the job's execution for its `run` (1 the first, higher for re-runs) and return
        its ARN. Named after the job and the run: starting the same run again starts nothing."""
        ...

    def succeed(self, task_token: str, output: str) -> None: ...

    def fail(self, task_token: str, error: str, cause: str) -> None: ...

    def heartbeat(self, task_token: str) -> None: ...

    def stop(self, job_id: str, run: int, cause: str) -> None:
        """Stop the job's execution for `run` (ABORTED): its chunks still queued find no task
        waiting and are dropped uncalled. Nothing when it never started or already ended."""
        ...

    def execution_status(self, job_id: str, run: int = 1) -> str | None:
        """The status of the job's execution for `run` (RUNNING, SUCCEEDED, FAILED, TIMED_OUT,
        ABORTED), or None when it was never started."""
        ...


class MessageQueues(Protocol):
    """SQS as the worker uses it: puts messages on queues (deferred chunks back on theirs, given-up
    ones on the DLQ) and holds a received message back before its next delivery."""

    def send(
        self,
        queue_url: str,
        body: str,
        *,
        delay_s: int = 0,
        attributes: Mapping[str, str] | None = None,
        group_id: str | None = None,
    ) -> None:
        """`attributes` become String message attributes (the body is a validated schema);
        `group_id` is the tenant on a standard queue (SQS fair queues: one tenant's backlog
        does not delay another's messages)."""
        ...

    def hide(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        """Keep a received message invisible for `seconds` from now: its retry's backoff."""
        ...


class EventPublisher(Protocol):
    """Announces domain events (sttpipe.domain.events); EventBridge on AWS."""

    def publish(self, *events: DomainEvent) -> None: ...


class QueueStats(Protocol):
    """Depth of the work queues (SQS), for the operators' statistics endpoint."""

    def depths(self, queue_urls: Mapping[str, str]) -> dict[str, dict[str, int]]:
        """name -> {"visible": n, "in_flight": n, "delayed": n} for each named queue URL."""
        ...


class TranscriptCache(Protocol):
    """What was transcribed before, content-addressed ("never pay twice for the same audio").

    Entries are keyed by the audio's hash and everything else that decides a transcription
    (model, language, prompt, response format, pipeline version), under the tenant unless
    tenants share entries. Lookups never fail: a level that is down is a miss."""

    def chunk(
        self,
        chunk: ChunkRef,
        compute: Callable[[], CachedChunk],
        *,
        language: str | None,
        prompt: str | None = None,
        wait_s: float | None = None,
    ) -> tuple[CachedChunk, CacheLevel | None]:
        """The chunk's cached transcription and its level, or `compute()`'s (level None),
        computed once across the fleet: a worker computing the same audio is waited for, up to
        `wait_s` (default: the configured lease wait)."""
        ...

    def upload(
        self, upload_sha256: str, *, tenant: str, language: str | None, prompt: str | None = None
    ) -> Hit[CachedUpload] | None:
        """A whole upload's finished transcript, by the SHA-256 of the uploaded object."""
        ...

    def store_upload(
        self,
        upload_sha256: str,
        value: CachedUpload,
        *,
        tenant: str,
        language: str | None,
        prompt: str | None = None,
    ) -> None: ...


class CacheAdmin(Protocol):
    """What the HTTP API may do to the transcript cache (sttpipe.cache) besides reading it."""

    def forget(self, scope: str, content_sha256s: Sequence[str]) -> int:
        """Drop the entries of these contents (chunk PCM or upload hashes) at every level."""
        ...

    def invalidate(self, *, model: str | None = None, pipeline_version: str | None = None) -> int:
        """Drop every entry of a model and/or pipeline version; returns how many went."""
        ...

    def stats(self) -> dict[str, Any]: ...


class SpeechCapacityGauge(Protocol):
    """How fast the speech API answers and how many calls the fleet may make: what the
    splitter sizes a job's chunks by."""

    def estimate(self) -> SpeechCapacity: ...


class WebhookNotDelivered(Exception):
    """This attempt to deliver a webhook failed for a reason that may pass (network, timeout,
    408, 429, 5xx): deliver the notice again later."""


class Notifier(Protocol):
    """Tells a job's owner that it finished (the per-job completion webhook)."""

    def job_finished(self, job: Job, delivery_id: str, secrets: Sequence[str]) -> None:
        """Deliver the job's end to its webhook, signed by each of `secrets` (the tenant's
        current one, and its previous one just after a rotation). Raises WebhookNotDelivered
        when the attempt failed for a reason that may pass; a receiver's refusal (4xx) is
        logged, not raised."""
        ...


class WebhookKeyStore(Protocol):
    """Each tenant's current webhook key generation."""

    def current(self, tenant_id: str) -> WebhookKey | None: ...

    def get_or_create(self, tenant_id: str) -> tuple[WebhookKey, bool]:
        """The tenant's key, made (generation 1, True) if it had none."""
        ...

    def rotate(self, tenant_id: str) -> WebhookKey:
        """The next generation (the first for a tenant that has none)."""
        ...


class MetricRecorder(Protocol):
    """Where code that is not a handler reports a metric; keeps it free of Powertools."""

    def __call__(
        self,
        metric: Metric,
        value: float,
        unit: MetricUnit = MetricUnit.Count,
        dimensions: Mapping[Dimension, str] | None = None,
    ) -> None: ...
