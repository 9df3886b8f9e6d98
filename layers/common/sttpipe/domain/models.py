"""The pipeline's domain: jobs, chunks and what flows between the functions.

Everything that crosses a process boundary (SQS bodies, Step Functions input and output,
objects in S3) is one of these pydantic models, so every hop validates what it receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class JobStatus(StrEnum):
    AWAITING_UPLOAD = "AWAITING_UPLOAD"
    SPLITTING = "SPLITTING"
    TRANSCRIBING = "TRANSCRIBING"
    MERGING = "MERGING"
    COMPLETED = "COMPLETED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.PARTIAL, JobStatus.FAILED)


class ChunkState(StrEnum):
    PENDING = "PENDING"
    DONE = "DONE"
    FAILED = "FAILED"
    SILENT = "SILENT"  # no speech found: never sent to the speech API


class LanguageSource(StrEnum):
    """Where a job's language comes from."""

    REQUESTED = "requested"  # named by the upload, or the stack's default language
    DETECT = "detect"  # none named: to be detected once, from the first speech, and pinned
    DETECTED = "detected"  # detected from the first speech and sent with every chunk
    PER_CHUNK = "per_chunk"  # mixed languages allowed: each chunk's call detects its own


class Job(BaseModel):
    job_id: str
    tenant_id: str = "default"
    filename: str
    content_type: str | None = None
    language: str | None = None
    language_source: LanguageSource = LanguageSource.REQUESTED
    # Initial prompt or vocabulary sent with every chunk (part of the cache key).
    prompt: str | None = None
    priority: Priority = Priority.NORMAL
    status: JobStatus = JobStatus.AWAITING_UPLOAD
    upload_key: str
    # The ETag of the upload the job was claimed with: its form is single-use, and an object
    # the form writes again is deleted, never split.
    upload_etag: str | None = None
    created_at: datetime
    updated_at: datetime
    failure_reason: str | None = None
    stats: dict[str, Any] = Field(default_factory=dict)
    # Called (signed, see sttpipe.adapters.webhook) once the job reaches a final status.
    webhook_url: str | None = None
    # How many executions the job has had: 1, plus one per re-run of its failed chunks.
    runs: int = Field(default=1, ge=1)


class JobStats(BaseModel):
    """What a job's transcription took: recorded with its final status, shown by the status API
    and carried in the JSON transcript."""

    duration_s: float
    chunks: int
    chunks_silent: int
    chunks_transcribed: int
    chunks_failed: int
    speech_api_calls: int
    cache_hits: dict[str, int]  # chunks answered from each cache level: L1, L2, L3
    # Set when the whole upload was answered from the cache: the level it came from.
    upload_cache_hit: str | None = None
    split_seconds: float
    transcribe_seconds: float  # summed over chunks, so it may exceed the wall time
    runs: int | None = None  # executions: 1, plus one per re-run (set by the merge)
    merge_seconds: float | None = None

    def as_record(self) -> dict[str, Any]:
        """The JSON object stored with the job (fields that do not apply are left out)."""
        return self.model_dump(mode="json", exclude_none=True)


@dataclass(frozen=True)
class SpeechCapacity:
    """What the speech API can do for a job now: a call takes about fixed_s + per_audio_s per
    second of audio, the slowest of a wave of calls `tail` times that, and `limit` calls may be
    in flight at once across the fleet."""

    fixed_s: float
    per_audio_s: float
    tail: float
    limit: float


class ChunkProgress(BaseModel):
    index: int
    start_ms: int
    end_ms: int
    state: ChunkState
    error: str | None = None


class JobView(BaseModel):
    """A job with its per-chunk progress, as the status API and the CLI show it."""

    job: Job
    chunks: list[ChunkProgress]

    @property
    def chunks_total(self) -> int:
        return len(self.chunks)

    @property
    def chunks_finished(self) -> int:
        return sum(1 for c in self.chunks if c.state is not ChunkState.PENDING)


class ChunkRef(BaseModel):
    """One chunk of audio as the splitter stored it (FLAC, 16 kHz mono)."""

    index: int = Field(ge=0)
    key: str
    start_ms: int = Field(ge=0)
    end_ms: int = Field(gt=0)
    pcm_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # The job's tenant, so that the worker can scope its cache lookups without a database read.
    tenant_id: str = "default"
    # Silence its audio starts with that is not in the recording (see audio.split.LEAD_IN_MS).
    lead_in_ms: int = Field(default=0, ge=0)


class Timing(StrEnum):
    """How a segment's times were obtained."""

    API = "api"  # the speech API's own segment times
    SPEECH = "speech"  # placed on the speech the splitter heard in its chunk (VAD regions)
    EVEN = "even"  # shared out by characters over its chunk: nothing better was known


class Segment(BaseModel):
    """A stretch of text with absolute times in the recording (milliseconds)."""

    start_ms: int
    end_ms: int
    text: str
    chunk_index: int
    timing: Timing = Timing.EVEN


class ChunkTranscript(BaseModel):
    """What the worker stores for one chunk; times are absolute."""

    index: int
    start_ms: int
    end_ms: int
    text: str
    segments: list[Segment] = Field(default_factory=list)
    api_calls: int = 0
    cache_level: str | None = None  # None on a miss, else "L1"/"L2"/"L3"
    seconds: float = 0.0


class TaskError(BaseModel):
    """The error object Step Functions puts in place of a failed task's output."""

    model_config = ConfigDict(populate_by_name=True)

    error: str = Field(alias="Error", default="States.TaskFailed")
    cause: str | None = Field(alias="Cause", default=None)


class ChunkOutcome(BaseModel):
    """One element of the Map state's result: a stored transcript, or the error that ended it."""

    index: int
    result_key: str | None = None
    error: TaskError | None = None


# ---- messages -----------------------------------------------------------------------------


class ChunkTask(BaseModel):
    """Body of a chunk message the state machine puts on a priority queue, or the splitter
    ahead of it (no task token: transcribed into the job's results for the Map's task to find,
    answered to nobody; see Settings.transcribe_ahead)."""

    model_config = ConfigDict(extra="forbid")

    task_token: str | None = Field(default=None, min_length=1)
    job_id: str = Field(min_length=1)
    language: str | None = None
    prompt: str | None = None
    # The execution's run (see ExecutionInput.run); absent from executions of older versions.
    run: int | None = Field(default=None, ge=1)
    chunk: ChunkRef
    # The state machine's DetectLanguage step: transcribe the chunk without a language, pin
    # the language heard on the job and answer it (LanguageDetected) instead of a ChunkOutcome.
    detect_language: bool = False


class LanguageDetected(BaseModel):
    """A detection task's answer: the language pinned for the job's chunks, None when the
    text was too short or too mixed to tell (each chunk then detects its own)."""

    language: str | None


class MergeTask(BaseModel):
    """Body of the message the state machine puts on the merge queue after the Map. The Map's
    results do not travel (they would outgrow the payload limit on long recordings): the merge
    finds each chunk's stored result, or the reason its worker recorded. Executions of older
    versions still send them, and those are used."""

    model_config = ConfigDict(extra="forbid")

    task_token: str = Field(min_length=1)
    job_id: str = Field(min_length=1)
    results: list[ChunkOutcome] = Field(default_factory=list)
    run: int | None = Field(default=None, ge=1)


class ExecutionInput(BaseModel):
    """What a run transcribes and how: its chunks, language, prompt and queue (kept in the
    manifest; the execution itself gets a WorkflowInput, its chunks through S3)."""

    job_id: str
    language: str | None
    prompt: str | None = None
    queue_url: str
    chunks: list[ChunkRef]
    # Which of the job's executions this is (1, then one more per re-run). Every message of the
    # execution carries it, and what a run other than the job's current one says is ignored.
    run: int = Field(default=1, ge=1)
    # No language named and one wanted for the whole job: the first chunk detects it first.
    detect_language: bool = False
    # The job's tenant: its chunk messages' SQS fair-queue group (absent from older manifests).
    tenant_id: str = "default"


class WorkflowInput(BaseModel):
    """Input of one state machine execution, as the splitter or a re-run starts it: how to
    transcribe, and where the run's chunk list is (`keys.chunk_list`)."""

    job_id: str
    language: str | None
    prompt: str | None = None
    queue_url: str
    run: int = Field(ge=1)
    chunks_key: str
    # The chunk the state machine's DetectLanguage step transcribes first, when the run is to
    # detect the job's language and pin it for every chunk.
    detect_from: ChunkRef | None = None
    # The message group of its chunk messages (SQS fair queues).
    tenant_id: str = "default"


class JobFailureNotice(BaseModel):
    """Body the state machine sends (without a token) when the Map or the merge itself failed."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1)
    error: TaskError
    run: int | None = Field(default=None, ge=1)


class JobEndNotice(BaseModel):
    """Body of a message on the webhook queue: run `run` of the job ended in `status`. The
    webhook function delivers it, apart from the merge, so that no receiver can hold up or
    change a job's outcome."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1)
    run: int = Field(ge=1)
    status: JobStatus

    @property
    def delivery_id(self) -> str:
        """The same for every attempt of one notice, distinct for each run's end."""
        return f"{self.job_id}:{self.run}:{self.status.value}"


class WebhookKey(BaseModel):
    """Which of a tenant's webhook secrets is current: the secrets themselves are derived from
    the deployment's signing key (`sttpipe.services.webhook_keys`), never stored."""

    tenant_id: str = Field(min_length=1)
    generation: int = Field(ge=1)  # 1 when first made, one more at every rotation
    rotated_at: datetime


class Manifest(BaseModel):
    """What the splitter made of an upload; the merge reads it back for timing and statistics."""

    execution: ExecutionInput
    duration_s: float
    chunks_total: int
    chunks_silent: int
    split_seconds: float
    # SHA-256 of the uploaded object: the merge stores the finished transcript under it.
    upload_sha256: str | None = None
    # Per chunk with speech, by index: where it has speech, and which stretches of the
    # recording its audio holds (long pauses shortened), [start_ms, end_ms] absolute. The merge
    # places the API's sentences on the speech and maps the API's own times through `sent`.
    speech: dict[int, list[tuple[int, int]]] = Field(default_factory=dict)
    sent: dict[int, list[tuple[int, int]]] = Field(default_factory=dict)
    # The chunks with no speech, by index: (start_ms, end_ms). With execution.chunks they make
    # the job's whole chunk list, which a resumed split records from here.
    silent: dict[int, tuple[int, int]] = Field(default_factory=dict)

    def content_hashes(self) -> list[str]:
        """What the job's cache entries are keyed by: its chunks' PCM hashes and its upload's."""
        hashes = [c.pcm_sha256 for c in self.execution.chunks]
        return hashes + ([self.upload_sha256] if self.upload_sha256 else [])

    def progress(self) -> list[ChunkProgress]:
        """Every chunk of the split as it starts out: PENDING if it has speech, else SILENT."""
        chunks = [
            ChunkProgress(
                index=c.index, start_ms=c.start_ms, end_ms=c.end_ms, state=ChunkState.PENDING
            )
            for c in self.execution.chunks
        ]
        chunks += [
            ChunkProgress(index=i, start_ms=s, end_ms=e, state=ChunkState.SILENT)
            for i, (s, e) in self.silent.items()
        ]
        return sorted(chunks, key=lambda c: c.index)
