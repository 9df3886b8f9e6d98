"""Job service behind the HTTP API: issue upload forms, report progress, hand out transcripts,
re-run the failed chunks of a job, delete jobs, and give operators queue and cache statistics.
Every call names the caller's tenant; another tenant's job is treated exactly like one that does
not exist."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator

from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import (
    ChunkProgress,
    ChunkState,
    Job,
    JobStatus,
    JobView,
    LanguageSource,
    Priority,
)
from sttpipe.ports import (
    CacheAdmin,
    JobRepository,
    ObjectStore,
    QueueStats,
    TranscriptCache,
    Workflow,
)
from sttpipe.services.manifests import find_manifest, start_run
from sttpipe.services.merging import complete_from_cache
from sttpipe.services.reconciling import stalled
from sttpipe.services.webhook_keys import IssuedSecret, TenantWebhookSecrets
from sttpipe.services.webhooks import JobEndAnnouncer

# What the speech pipeline can decode (the splitter reads these through PyAV).
ALLOWED_CONTENT_TYPES = frozenset(
    {
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/flac",
        "audio/x-flac",
        "audio/mpeg",
        "audio/mp3",
        "audio/ogg",
        "audio/opus",
        "audio/webm",
        "audio/mp4",
        "audio/x-m4a",
        "audio/aac",
        "video/mp4",
        "video/webm",
        "video/quicktime",
    }
)


# Whisper reads at most 224 prompt tokens; this many characters stay within that in most scripts.
MAX_PROMPT_CHARS = 800


class UploadRequest(BaseModel):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str
    size_bytes: int = Field(gt=0)
    language: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2,3}$",
        description="ISO-639-1 code sent with every chunk. Without one (and no stack default) "
        "the job's first speech is transcribed first, its language detected and sent with every "
        "other chunk.",
    )
    mixed_languages: bool = Field(
        default=False,
        description="The recording switches languages: no language is pinned, each chunk's "
        "call detects its own.",
    )
    prompt: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="Initial prompt or vocabulary (names, terms) sent to the speech API with "
        "every chunk; a different prompt is a different transcription, never a cache hit.",
    )
    priority: Priority | None = None
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Called with a signed POST (HMAC-SHA256, see the README) when the job ends.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="The file's SHA-256 (hex). A recording this tenant already transcribed in "
        "this language with this prompt completes at once: the answer is COMPLETED and has no "
        "upload form.",
    )

    @model_validator(mode="after")
    def _one_language_or_many(self) -> UploadRequest:
        if self.language is not None and self.mixed_languages:
            raise ValueError("name a language or allow mixed_languages, not both")
        return self

    @field_validator("content_type")
    @classmethod
    def _known_audio_type(cls, value: str) -> str:
        base = value.split(";", 1)[0].strip().lower()
        if base not in ALLOWED_CONTENT_TYPES:
            allowed = ", ".join(sorted(ALLOWED_CONTENT_TYPES))
            raise ValueError(f"unsupported content type {value!r}; allowed: {allowed}")
        return base


class UploadTicket(BaseModel):
    job_id: str
    # {"url": ..., "fields": {...}}: an HTML form POST straight to S3; None when the recording
    # was known and the job is already COMPLETED.
    upload: dict[str, Any] | None
    expires_in: int
    status_url: str
    status: JobStatus = JobStatus.AWAITING_UPLOAD
    webhook_secret: str | None = Field(
        default=None,
        description="The tenant's webhook signing secret (Standard Webhooks, `whsec_...`), "
        "made by this request, its first to name a webhook_url: shown here once. "
        "POST /webhook-secret makes a new one.",
    )


class JobStatusView(BaseModel):
    job_id: str
    status: JobStatus
    filename: str
    language: str | None
    prompt: str | None = None
    priority: Priority
    created_at: datetime
    updated_at: datetime
    progress: dict[str, int]
    # Seconds until the transcript is likely ready, from the pace of the chunks so far;
    # None until there is a pace to go by, 0 once the job is final.
    eta_seconds: float | None = None
    chunks: list[ChunkProgress]
    failure_reason: str | None = None
    runs: int = Field(default=1, description="Executions so far: 1, plus one per re-run.")
    stats: dict[str, Any] = Field(default_factory=dict)
    downloads: dict[str, str] = Field(default_factory=dict)


class RequestRejected(ValueError):
    """The request is well-formed but cannot be accepted (e.g. over a limit)."""


class JobBusy(RuntimeError):
    """The job is being processed; it can be deleted or re-run once it has finished."""


class NothingToRerun(RuntimeError):
    """The job has no chunks a re-run could transcribe (completed, or never split)."""


class NothingToCancel(RuntimeError):
    """The job has ended already."""


class FeatureUnavailable(RuntimeError):
    """This deployment has no such part (no cache configured, no webhook secret)."""


_RUNNING = frozenset({JobStatus.SPLITTING, JobStatus.TRANSCRIBING, JobStatus.MERGING})
_SETTLED = frozenset({ChunkState.DONE, ChunkState.SILENT})  # a re-run leaves these alone


class JobService:
    def __init__(
        self,
        store: ObjectStore,
        jobs: JobRepository,
        settings: Settings,
        *,
        queues: QueueStats | None = None,
        cache: CacheAdmin | None = None,
        announcer: JobEndAnnouncer | None = None,
        webhook_secrets: TenantWebhookSecrets | None = None,
        workflow: Workflow | None = None,
        known: TranscriptCache | None = None,
    ) -> None:
        """Webhooks are on with both `announcer` and `webhook_secrets`."""
        self._store = store
        self._jobs = jobs
        self._settings = settings
        self._workflow = workflow
        self._queues = queues
        self._cache = cache
        self._announcer = announcer
        self._webhook_secrets = webhook_secrets
        self._known = known

    def create_upload(self, request: UploadRequest, tenant_id: str) -> UploadTicket:
        if request.size_bytes > self._settings.max_upload_bytes:
            raise RequestRejected(
                f"size_bytes {request.size_bytes} is over the limit of "
                f"{self._settings.max_upload_bytes} bytes"
            )
        shown: IssuedSecret | None = None
        if request.webhook_url is not None:
            check_webhook_url(request.webhook_url, self._settings.webhook_allow_insecure)
            shown = self.webhook_secrets().first_use(tenant_id)
        now = datetime.now(UTC)
        job_id = uuid.uuid4().hex
        job = Job(
            job_id=job_id,
            tenant_id=tenant_id,
            filename=request.filename,
            content_type=request.content_type,
            **self._language_of(request),
            prompt=request.prompt,
            priority=request.priority or self._settings.default_priority,
            upload_key=keys.upload(job_id, request.filename),
            created_at=now,
            updated_at=now,
            webhook_url=request.webhook_url,
        )
        self._jobs.add(job)
        secret = shown.secret if shown else None
        if request.sha256 is not None and self._answered_from_cache(job, request.sha256):
            return UploadTicket(
                job_id=job_id,
                upload=None,
                expires_in=0,
                status_url=f"/jobs/{job_id}",
                status=JobStatus.COMPLETED,
                webhook_secret=secret,
            )
        form = self._store.presigned_post(
            job.upload_key,
            content_type=request.content_type,
            max_bytes=self._settings.max_upload_bytes,
            expires_s=self._settings.upload_url_expiry_s,
        )
        return UploadTicket(
            job_id=job_id,
            upload=form,
            expires_in=self._settings.upload_url_expiry_s,
            status_url=f"/jobs/{job_id}",
            webhook_secret=secret,
        )

    def _language_of(self, request: UploadRequest) -> dict[str, Any]:
        """The job's language and where it comes from (LanguageSource)."""
        if request.mixed_languages:
            return {"language": None, "language_source": LanguageSource.PER_CHUNK}
        if language := request.language or self._settings.default_language:
            return {"language": language, "language_source": LanguageSource.REQUESTED}
        return {"language": None, "language_source": LanguageSource.DETECT}

    def _answered_from_cache(self, job: Job, sha256: str) -> bool:
        """Complete the job from the cache if its tenant transcribed this recording before. The
        hash only looks up the tenant's own entries, so a guessed one reveals nothing else.
        Entries shared across tenants are not the caller's own: a hash is not the recording,
        and would fetch another tenant's transcript. The file is uploaded then, and the
        splitter answers it from the cache (the caller has the recording)."""
        if self._known is None or self._settings.cache_share_across_tenants:
            return False
        cached = self._known.upload(
            sha256, tenant=job.tenant_id, language=job.language, prompt=job.prompt
        )
        if cached is None:
            return False
        complete_from_cache(self._store, self._jobs, job.job_id, cached, announcer=self._announcer)
        return True

    def status(self, job_id: str, tenant_id: str) -> JobStatusView | None:
        view = self._owned(job_id, tenant_id)
        return None if view is None else self._status_view(view)

    def list_jobs(self, tenant_id: str, limit: int, before: str | None) -> list[Job]:
        return self._jobs.list_jobs(tenant_id, limit=limit, before=before)

    def delete(self, job_id: str, tenant_id: str) -> dict[str, int] | None:
        """Delete a job's cache entries, objects and rows; None when the tenant has no such job.

        In that order, each step repeatable: a delete that failed half way (a cache level down)
        raises and can be repeated until everything is gone, because the rows that list what
        to delete go last.
        """
        view = self._owned(job_id, tenant_id)
        if view is None:
            return None
        if view.job.status in _RUNNING and not self._stalled(view.job):
            raise JobBusy(f"job {job_id} is {view.job.status}; delete it once it has finished")
        hashes = self._content_hashes(job_id)
        cached = self._cache.forget(tenant_id, hashes) if self._cache and hashes else 0
        objects = sum(self._store.delete_prefix(p) for p in keys.job_prefixes(job_id))
        self._jobs.delete(job_id)
        return {"objects_deleted": objects, "cache_entries_deleted": cached}

    def rerun(self, job_id: str, tenant_id: str) -> JobStatusView | None:
        """Transcribe again the chunks of a PARTIAL or FAILED job that did not finish, in a new
        execution whose merge reuses the stored results of the others; None when the tenant has
        no such job."""
        if self._workflow is None:
            raise FeatureUnavailable("re-runs are not configured on this deployment")
        view = self._owned(job_id, tenant_id)
        if view is None:
            return None
        job = view.job
        if job.status in _RUNNING:
            raise JobBusy(f"job {job_id} is {job.status}; re-run it once it has finished")
        if job.status in (JobStatus.COMPLETED, JobStatus.AWAITING_UPLOAD):
            raise NothingToRerun(f"job {job_id} is {job.status}: nothing to re-run")
        manifest = find_manifest(self._store, job_id)
        if manifest is None:  # the splitter refused the upload: there are no chunks
            raise NothingToRerun(f"the upload was rejected: {job.failure_reason}; upload it again")
        settled = {c.index for c in view.chunks if c.state in _SETTLED}
        redo = [c for c in manifest.execution.chunks if c.index not in settled]
        if not redo:
            raise NothingToRerun(f"job {job_id} has no failed chunks to re-run")
        run = self._jobs.reopen(job_id)
        if run is None:  # its status changed since it was read: another re-run came first
            raise JobBusy(f"job {job_id} is already being re-run")
        pinned = job.language_source is LanguageSource.DETECTED
        execution = manifest.execution.model_copy(
            update={
                "queue_url": self._settings.queue_url(job.priority),
                "chunks": redo,
                "run": run,
                # The language the first run detected is the re-run's too.
                **({"language": job.language, "detect_language": False} if pinned else {}),
            }
        )
        try:
            start_run(self._store, self._workflow, execution)
        except Exception:
            # Back to how it ended, so that it can be re-run again. The run number stays used:
            # a start that failed may still have created its execution.
            self._jobs.finish(job_id, job.status, stats=job.stats, reason=job.failure_reason)
            raise
        return self.status(job_id, tenant_id)

    def cancel(self, job_id: str, tenant_id: str) -> JobStatusView | None:
        """End a job that has not ended: its execution stopped (no chunk still queued is sent
        to the speech API), the job FAILED with the reason; None when the tenant has no such
        job. The chunks done so far stay, for a re-run."""
        if self._workflow is None:
            raise FeatureUnavailable("cancelling is not configured on this deployment")
        view = self._owned(job_id, tenant_id)
        if view is None:
            return None
        job = view.job
        if job.status.is_final:
            raise NothingToCancel(f"job {job_id} is {job.status}: nothing to cancel")
        reason = "cancelled by its owner"
        self._workflow.stop(job_id, job.runs, reason)
        # Only if it has not ended meanwhile: a job that completed keeps its transcript.
        self._jobs.set_status(job_id, JobStatus.FAILED, reason=reason)
        ended = self._jobs.get(job_id)
        if ended is None:  # deleted meanwhile
            return None
        if self._announcer is not None:
            self._announcer.job_ended(ended.job)
        return self._status_view(ended)

    def queue_depths(self) -> dict[str, dict[str, int]]:
        if self._queues is None:
            raise FeatureUnavailable("queue statistics are not configured on this deployment")
        urls = {p.value: self._settings.queue_url(p) for p in Priority}
        return self._queues.depths({name: url for name, url in urls.items() if url})

    def webhook_secrets(self) -> TenantWebhookSecrets:
        if self._announcer is None or self._webhook_secrets is None:
            raise FeatureUnavailable("webhooks are not configured on this deployment")
        return self._webhook_secrets

    def cache_admin(self) -> CacheAdmin:
        if self._cache is None:
            raise FeatureUnavailable("the transcript cache is not configured on this deployment")
        return self._cache

    def _owned(self, job_id: str, tenant_id: str) -> JobView | None:
        view = self._jobs.get(job_id)
        return view if view is not None and view.job.tenant_id == tenant_id else None

    def _stalled(self, job: Job) -> bool:
        """A job that claims to run while nothing works on it (see services.reconciling)."""
        if self._workflow is None:
            return False
        execution = self._workflow.execution_status(job.job_id, job.runs)
        return stalled(job, execution, datetime.now(UTC), self._settings.stalled_split_after_s)

    def _content_hashes(self, job_id: str) -> list[str]:
        """What the job's cache entries are keyed by: its upload's and its chunks' hashes, kept
        with its rows (and, for jobs split before they were, in its manifest while it lasts)."""
        hashes = set(self._jobs.content_hashes(job_id))
        manifest = find_manifest(self._store, job_id)
        if manifest is not None:
            hashes.update(manifest.content_hashes())
        return sorted(hashes)

    def _status_view(self, view: JobView) -> JobStatusView:
        job = view.job
        downloads: dict[str, str] = {}
        if job.status in (JobStatus.COMPLETED, JobStatus.PARTIAL):
            downloads = {
                fmt: self._store.presigned_get(
                    keys.transcript(job.job_id, fmt), self._settings.download_url_expiry_s
                )
                for fmt in keys.TRANSCRIPT_FORMATS
            }
        return JobStatusView(
            job_id=job.job_id,
            status=job.status,
            filename=job.filename,
            language=job.language,
            prompt=job.prompt,
            priority=job.priority,
            created_at=job.created_at,
            updated_at=job.updated_at,
            progress={"chunks_total": view.chunks_total, "chunks_finished": view.chunks_finished},
            eta_seconds=estimate_seconds_left(view, datetime.now(UTC)),
            chunks=view.chunks,
            failure_reason=job.failure_reason,
            runs=job.runs,
            stats=job.stats,
            downloads=downloads,
        )


def estimate_seconds_left(view: JobView, now: datetime) -> float | None:
    """Time left at the pace so far: the job entered TRANSCRIBING at `updated_at` (chunk
    updates do not touch it), and chunks finish at a steady rate in parallel."""
    job = view.job
    if job.status.is_final:
        return 0.0
    if job.status is not JobStatus.TRANSCRIBING or view.chunks_finished == 0:
        return None
    elapsed = max((now - job.updated_at).total_seconds(), 0.0)
    remaining = view.chunks_total - view.chunks_finished
    return round(elapsed / view.chunks_finished * remaining, 1)


def check_webhook_url(url: str, allow_insecure: bool) -> None:
    """HTTPS to a public host; anything else could make the pipeline call into its own network."""
    parts = urlsplit(url)
    if parts.scheme not in (("https", "http") if allow_insecure else ("https",)):
        raise RequestRejected(f"webhook_url must be an https:// URL, not {url!r}")
    if not parts.hostname or parts.username or parts.password:
        raise RequestRejected("webhook_url needs a host and must not carry credentials")
    if allow_insecure:
        return
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        if parts.hostname == "localhost" or parts.hostname.endswith(".internal"):
            raise RequestRejected("webhook_url must name a public host") from None
        return
    if not address.is_global:
        raise RequestRejected("webhook_url must name a public host")
