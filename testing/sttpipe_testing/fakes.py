"""In-memory stand-ins for the ports, with the semantics of the real adapters, for unit tests.

They keep everything in dicts behind a lock, hand out copies (so a caller cannot change stored
state by accident) and raise the same port exceptions as S3, PostgreSQL and Step Functions.
`FakeTranscriber` is a unit-test fake only: it returns texts it was given, it hears nothing.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from aws_lambda_powertools.metrics import MetricUnit

from sttpipe.adapters.arriving import ArrivingFile
from sttpipe.adapters.s3 import temp_suffix
from sttpipe.adapters.stepfunctions import (
    MAX_CAUSE_CHARS,
    MAX_ERROR_CHARS,
    execution_arn,
    execution_name,
    truncate,
)
from sttpipe.domain.events import DomainEvent
from sttpipe.domain.models import (
    ChunkProgress,
    ChunkRef,
    ChunkState,
    ExecutionInput,
    Job,
    JobStatus,
    JobView,
    LanguageSource,
    WebhookKey,
    WorkflowInput,
)
from sttpipe.domain.transcripts import Transcription
from sttpipe.observability import Dimension, Metric
from sttpipe.ports import JobNotFound, ObjectNotFound, ObjectStore, TaskNoLongerWaiting
from sttpipe.speech.base import SpeechError

# ---- object store ---------------------------------------------------------------------------


class UploadRejected(Exception):
    """What S3 answers (403/400) to a form upload that breaks its policy."""


class InMemoryObjectStore:
    def __init__(self, bucket: str = "memory-bucket") -> None:
        self.bucket = bucket
        self._objects: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        with self._lock:
            self._objects[key] = (bytes(data), content_type)

    def put_bytes_if_absent(self, key: str, data: bytes, content_type: str) -> bool:
        with self._lock:
            if key in self._objects:
                return False
            self._objects[key] = (bytes(data), content_type)
            return True

    def get_bytes(self, key: str) -> bytes:
        with self._lock:
            if key not in self._objects:
                raise ObjectNotFound(key)
            return self._objects[key][0]

    def content_type(self, key: str) -> str:
        """Test helper: the Content-Type an object was stored with."""
        with self._lock:
            if key not in self._objects:
                raise ObjectNotFound(key)
            return self._objects[key][1]

    @contextmanager
    def download(self, key: str) -> Iterator[ArrivingFile]:
        """The object on disk, all of it there at once."""
        data = self.get_bytes(key)
        with tempfile.NamedTemporaryFile(prefix="sttpipe-", suffix=temp_suffix(key)) as tmp:
            tmp.write(data)
            tmp.flush()
            with ArrivingFile(tmp.name, len(data), tail_from=0) as arriving:
                arriving.finished(data)
                yield arriving

    def size(self, key: str) -> int | None:
        with self._lock:
            return len(self._objects[key][0]) if key in self._objects else None

    def presigned_get(self, key: str, expires_s: int) -> str:
        return f"memory://{self.bucket}/{key}?expires_s={expires_s}"

    def presigned_post(
        self, key: str, content_type: str, max_bytes: int, expires_s: int
    ) -> dict[str, Any]:
        """A form shaped like S3's: a base64 JSON policy beside the fields it constrains."""
        expiry = datetime.now(UTC) + timedelta(seconds=expires_s)
        policy = {
            "expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "conditions": [
                {"bucket": self.bucket},
                {"key": key},
                {"Content-Type": content_type},
                ["content-length-range", 1, max_bytes],
            ],
        }
        encoded = base64.b64encode(json.dumps(policy).encode()).decode()
        return {
            "url": f"memory://{self.bucket}",
            "fields": {"key": key, "Content-Type": content_type, "policy": encoded},
        }

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            doomed = [k for k in self._objects if k.startswith(prefix)]
            for key in doomed:
                del self._objects[key]
            return len(doomed)

    def post_form(self, fields: dict[str, str], data: bytes) -> None:
        """Test helper: upload through a form from presigned_post, enforcing its policy as S3
        does (moto does not)."""
        policy = json.loads(base64.b64decode(fields["policy"]))
        expiry = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if datetime.now(UTC) > expiry:
            raise UploadRejected("policy expired")
        for condition in policy["conditions"]:
            if isinstance(condition, list):
                _, low, high = condition
                if not low <= len(data) <= high:
                    raise UploadRejected(f"size {len(data)} outside [{low}, {high}]")
            else:
                ((name, wanted),) = condition.items()
                if name != "bucket" and fields.get(name) != wanted:
                    raise UploadRejected(f"{name} must be {wanted!r}")
        self.put_bytes(fields["key"], data, fields["Content-Type"])


# ---- job repository -------------------------------------------------------------------------


class TricklingObjectStore(InMemoryObjectStore):
    """Downloads arrive as from S3, while the reader works: the tail at once, then the head in
    blocks, the last `held` bytes of it only once a chunk was stored (or after `wait_s`), so a
    test sees whether the reader worked on the recording before all of it was in."""

    def __init__(self, *, tail: int = 256 << 10, held: int = 64 << 10, wait_s: float = 10) -> None:
        super().__init__()
        self._tail, self._held, self._wait_s = tail, held, wait_s
        self._chunk_stored = threading.Event()
        self.chunk_stored_before_complete: bool | None = None

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        super().put_bytes(key, data, content_type)
        if "/chunks/" in key:
            self._chunk_stored.set()

    @contextmanager
    def download(self, key: str) -> Iterator[ArrivingFile]:
        data = self.get_bytes(key)
        tail_from = max(0, len(data) - self._tail)
        with tempfile.NamedTemporaryFile(prefix="sttpipe-", suffix=temp_suffix(key)) as tmp:
            tmp.write(b"\0" * tail_from + data[tail_from:])
            tmp.flush()
            with ArrivingFile(tmp.name, len(data), tail_from=tail_from) as arriving:
                feeder = threading.Thread(target=self._feed, args=(tmp, data, arriving))
                feeder.start()
                try:
                    yield arriving
                finally:
                    self._chunk_stored.set()
                    feeder.join()

    def _feed(self, tmp: IO[bytes], data: bytes, arriving: ArrivingFile) -> None:
        held_from = max(0, arriving.tail_from - self._held)
        for start in range(0, arriving.tail_from, 16 << 10):
            if start >= held_from and self.chunk_stored_before_complete is None:
                self.chunk_stored_before_complete = self._chunk_stored.wait(self._wait_s)
            end = min(start + (16 << 10), arriving.tail_from)
            os.pwrite(tmp.fileno(), data[start:end], start)
            arriving.arrived(data[start:end])
        arriving.finished(data[arriving.tail_from :])


class InMemoryJobRepository:
    """Same rules as PostgresJobRepository: a final status is never replaced by set_status,
    finish() never replaces a final status with a non-final one, and only reopen() takes a
    PARTIAL or FAILED job back to TRANSCRIBING."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._chunks: dict[str, dict[int, ChunkProgress]] = {}
        self._content: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def add(self, job: Job) -> None:
        with self._lock:
            if job.job_id not in self._jobs:
                self._jobs[job.job_id] = job.model_copy(deep=True)
                self._chunks[job.job_id] = {}

    def get(self, job_id: str) -> JobView | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            chunks = sorted(self._chunks[job_id].values(), key=lambda c: c.index)
            return JobView(job=job.model_copy(deep=True), chunks=[c.model_copy() for c in chunks])

    def set_status(self, job_id: str, status: JobStatus, *, reason: str | None = None) -> None:
        with self._lock:
            job = self._job(job_id)
            if not job.status.is_final:
                self._jobs[job_id] = job.model_copy(
                    update={"status": status, "failure_reason": reason, "updated_at": _now()}
                )

    def claim_upload(self, job_id: str, etag: str) -> bool:
        with self._lock:
            job = self._job(job_id)
            if job.status is not JobStatus.AWAITING_UPLOAD:
                return False
            self._jobs[job_id] = job.model_copy(
                update={"status": JobStatus.SPLITTING, "upload_etag": etag, "updated_at": _now()}
            )
            return True

    def add_chunks(self, job_id: str, chunks: list[ChunkProgress]) -> None:
        if not chunks:
            return
        with self._lock:
            self._job(job_id)
            stored = self._chunks[job_id]
            for chunk in chunks:
                stored.setdefault(chunk.index, chunk.model_copy())

    def set_chunk_state(
        self,
        job_id: str,
        index: int,
        state: ChunkState,
        *,
        error: str | None = None,
        run: int | None = None,
    ) -> bool:
        with self._lock:
            stored = self._chunks.get(job_id, {})
            if index not in stored:
                raise JobNotFound(f"{job_id} chunk {index}")
            if run is not None and self._jobs[job_id].runs != run:
                return False
            stored[index] = stored[index].model_copy(update={"state": state, "error": error})
            return True

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        stats: dict[str, Any],
        reason: str | None = None,
        run: int | None = None,
    ) -> bool:
        with self._lock:
            job = self._job(job_id)
            if run is not None and job.runs != run:
                return False
            if not (status.is_final or not job.status.is_final):
                return False
            self._jobs[job_id] = job.model_copy(
                update={
                    "status": status,
                    "stats": json.loads(json.dumps(stats)),  # as a jsonb round trip would
                    "failure_reason": reason,
                    "updated_at": _now(),
                }
            )
            return True

    def unsettled(self, *, unchanged_since: datetime, limit: int) -> list[Job]:
        running = (JobStatus.SPLITTING, JobStatus.TRANSCRIBING, JobStatus.MERGING)
        with self._lock:
            found = sorted(
                (
                    j
                    for j in self._jobs.values()
                    if j.status in running and j.updated_at < unchanged_since
                ),
                key=lambda j: j.updated_at,
            )
            return [j.model_copy(deep=True) for j in found[:limit]]

    def age(self, job_id: str, seconds: float) -> None:
        """Test helper: make the job's last change `seconds` older."""
        with self._lock:
            job = self._job(job_id)
            updated = job.updated_at - timedelta(seconds=seconds)
            self._jobs[job_id] = job.model_copy(update={"updated_at": updated})

    def pin_language(self, job_id: str, language: str, *, run: int) -> bool:
        with self._lock:
            job = self._job(job_id)
            if job.language_source is not LanguageSource.DETECT or job.runs != run:
                return False
            self._jobs[job_id] = job.model_copy(
                update={
                    "language": language,
                    "language_source": LanguageSource.DETECTED,
                    "updated_at": datetime.now(UTC),
                }
            )
            return True

    def remember_content(self, job_id: str, content_sha256s: Sequence[str]) -> None:
        with self._lock:
            self._job(job_id)
            self._content.setdefault(job_id, set()).update(content_sha256s)

    def content_hashes(self, job_id: str) -> list[str]:
        with self._lock:
            return sorted(self._content.get(job_id, ()))

    def reopen(self, job_id: str) -> int | None:
        with self._lock:
            job = self._job(job_id)
            if job.status not in (JobStatus.PARTIAL, JobStatus.FAILED):
                return None
            runs = job.runs + 1
            self._jobs[job_id] = job.model_copy(
                update={
                    "status": JobStatus.TRANSCRIBING,
                    "failure_reason": None,
                    "runs": runs,
                    "updated_at": _now(),
                }
            )
            stored = self._chunks[job_id]
            for index, chunk in stored.items():
                if chunk.state not in (ChunkState.DONE, ChunkState.SILENT):
                    stored[index] = chunk.model_copy(
                        update={"state": ChunkState.PENDING, "error": None}
                    )
            return runs

    def list_jobs(self, tenant_id: str, limit: int, before: str | None = None) -> list[Job]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        with self._lock:
            jobs = sorted(
                (j for j in self._jobs.values() if j.tenant_id == tenant_id),
                key=lambda j: (j.created_at, j.job_id),
                reverse=True,
            )
            if before is not None:
                cursor = self._jobs.get(before)
                if cursor is None or cursor.tenant_id != tenant_id:
                    return []
                jobs = [j for j in jobs if (j.created_at, j.job_id) < (cursor.created_at, before)]
            return [j.model_copy(deep=True) for j in jobs[:limit]]

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
            self._chunks.pop(job_id, None)
            self._content.pop(job_id, None)

    def _job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job


def _now() -> datetime:
    return datetime.now(UTC)


# ---- workflow -------------------------------------------------------------------------------


def started_run(store: ObjectStore, workflow_input: str) -> ExecutionInput:
    """What an execution started with `workflow_input` transcribes: its input, with the chunk
    list its Map reads from the object store."""
    started = WorkflowInput.model_validate_json(workflow_input)
    chunk_list = json.loads(store.get_bytes(started.chunks_key))
    return ExecutionInput(
        **started.model_dump(exclude={"chunks_key", "detect_from"}),
        chunks=[ChunkRef.model_validate(c) for c in chunk_list],
        detect_language=started.detect_from is not None,
    )


class InMemoryWebhookKeys:
    """Same answers as PostgresWebhookKeys."""

    def __init__(self) -> None:
        self._keys: dict[str, WebhookKey] = {}
        self._lock = threading.Lock()

    def current(self, tenant_id: str) -> WebhookKey | None:
        return self._keys.get(tenant_id)

    def get_or_create(self, tenant_id: str) -> tuple[WebhookKey, bool]:
        with self._lock:
            if tenant_id in self._keys:
                return self._keys[tenant_id], False
            key = WebhookKey(tenant_id=tenant_id, generation=1, rotated_at=_now())
            self._keys[tenant_id] = key
            return key, True

    def rotate(self, tenant_id: str) -> WebhookKey:
        with self._lock:
            old = self._keys.get(tenant_id)
            generation = old.generation + 1 if old else 1
            key = WebhookKey(tenant_id=tenant_id, generation=generation, rotated_at=_now())
            self._keys[tenant_id] = key
            return key


@dataclass(frozen=True)
class TaskAnswer:
    succeeded: bool
    output: str | None = None
    error: str | None = None
    cause: str | None = None


class InMemoryWorkflow:
    """Executions by deterministic name, and callback tokens that are waiting until answered.

    Tests open a token with `open_task()` (the state machine's part), hand it to the code under
    test and read `answers`; answering a token twice, an unknown one or one timed out with
    `time_out()` raises TaskNoLongerWaiting, as Step Functions does.
    """

    def __init__(
        self, state_machine_arn: str = "arn:aws:states:us-east-1:000000000000:stateMachine:memory"
    ) -> None:
        self.state_machine_arn = state_machine_arn
        self.executions: dict[str, str] = {}  # execution ARN -> input
        self.statuses: dict[str, str] = {}  # execution ARN -> status (RUNNING once started)
        self.answers: dict[str, TaskAnswer] = {}
        self.heartbeats: dict[str, int] = {}
        self._waiting: set[str] = set()
        self._lock = threading.Lock()

    def start(self, job_id: str, execution_input: str, run: int = 1) -> str:
        arn = execution_arn(self.state_machine_arn, execution_name(job_id, run))
        with self._lock:
            self.executions.setdefault(arn, execution_input)
            self.statuses.setdefault(arn, "RUNNING")
        return arn

    def execution_status(self, job_id: str, run: int = 1) -> str | None:
        arn = execution_arn(self.state_machine_arn, execution_name(job_id, run))
        with self._lock:
            return self.statuses.get(arn)

    def stop(self, job_id: str, run: int, cause: str) -> None:
        arn = execution_arn(self.state_machine_arn, execution_name(job_id, run))
        with self._lock:
            if self.statuses.get(arn) == "RUNNING":
                self.statuses[arn] = "ABORTED"

    def end_execution(self, job_id: str, run: int = 1, status: str = "FAILED") -> None:
        """Test helper: the execution ended (as Step Functions would record it)."""
        arn = execution_arn(self.state_machine_arn, execution_name(job_id, run))
        with self._lock:
            self.statuses[arn] = status

    def open_task(self, token: str | None = None) -> str:
        token = token or uuid.uuid4().hex
        with self._lock:
            self._waiting.add(token)
        return token

    def time_out(self, token: str) -> None:
        with self._lock:
            self._waiting.discard(token)

    def succeed(self, task_token: str, output: str) -> None:
        json.loads(output)  # Step Functions refuses output that is not JSON (InvalidOutput)
        self._answer(task_token, TaskAnswer(succeeded=True, output=output))

    def fail(self, task_token: str, error: str, cause: str) -> None:
        answer = TaskAnswer(
            succeeded=False,
            error=truncate(error, MAX_ERROR_CHARS),
            cause=truncate(cause, MAX_CAUSE_CHARS),
        )
        self._answer(task_token, answer)

    def heartbeat(self, task_token: str) -> None:
        with self._lock:
            self._require_waiting(task_token)
            self.heartbeats[task_token] = self.heartbeats.get(task_token, 0) + 1

    def _answer(self, token: str, answer: TaskAnswer) -> None:
        with self._lock:
            self._require_waiting(token)
            self._waiting.discard(token)
            self.answers[token] = answer

    def _require_waiting(self, token: str) -> None:
        if token not in self._waiting:
            raise TaskNoLongerWaiting(token)


# ---- speech ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TranscribeCall:
    audio: bytes
    filename: str
    language: str | None
    prompt: str | None
    remaining_s: float | None


class FakeTranscriber:
    """UNIT-TEST FAKE of the speech API: returns the given responses in order, then `default`.

    A response may be a text, a whole Transcription, or a SpeechError to raise (to exercise
    retries). With no response left and no default it fails the test loudly.
    """

    def __init__(
        self,
        responses: Iterable[str | Transcription | SpeechError] = (),
        *,
        default: str | None = None,
        language: str | None = None,
    ) -> None:
        self._responses = deque(responses)
        self._default = default
        self._language = language
        self.calls: list[TranscribeCall] = []
        self._lock = threading.Lock()

    def transcribe(
        self,
        audio: bytes,
        filename: str,
        *,
        language: str | None,
        prompt: str | None = None,
        remaining_s: float | None = None,
    ) -> Transcription:
        with self._lock:
            self.calls.append(TranscribeCall(audio, filename, language, prompt, remaining_s))
            if self._responses:
                response = self._responses.popleft()
            elif self._default is not None:
                response = self._default
            else:
                raise AssertionError("FakeTranscriber: no response left for this call")
        if isinstance(response, SpeechError):
            raise response
        if isinstance(response, Transcription):
            return response
        return Transcription(text=response, language=language or self._language)


class InMemoryEventPublisher:
    """Keeps what was published, in order."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    def publish(self, *events: DomainEvent) -> None:
        self.events.extend(events)


@dataclass(frozen=True)
class RecordedMetric:
    metric: Metric
    value: float
    unit: MetricUnit
    dimensions: dict[Dimension, str]


class InMemoryMetrics:
    """A MetricRecorder that keeps what was recorded, in order."""

    def __init__(self) -> None:
        self.recorded: list[RecordedMetric] = []

    def __call__(
        self,
        metric: Metric,
        value: float,
        unit: MetricUnit = MetricUnit.Count,
        dimensions: Mapping[Dimension, str] | None = None,
    ) -> None:
        self.recorded.append(RecordedMetric(metric, value, unit, dict(dimensions or {})))

    def total(self, metric: Metric) -> float:
        return sum(r.value for r in self.recorded if r.metric is metric)


# ---- queues ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SentMessage:
    queue_url: str
    body: str
    delay_s: int
    attributes: dict[str, str]
    group_id: str | None = None


class InMemoryMessageQueues:
    """Records what was sent and which received messages were hidden for how long."""

    def __init__(self) -> None:
        self.sent: list[SentMessage] = []
        self.hidden: dict[str, int] = {}  # receipt handle -> seconds

    def send(
        self,
        queue_url: str,
        body: str,
        *,
        delay_s: int = 0,
        attributes: Mapping[str, str] | None = None,
        group_id: str | None = None,
    ) -> None:
        self.sent.append(SentMessage(queue_url, body, delay_s, dict(attributes or {}), group_id))

    def hide(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        self.hidden[receipt_handle] = seconds
