"""Job service behind the HTTP API: issue upload forms, report progress, hand out transcripts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import ChunkProgress, Job, JobStatus, JobView, Priority
from sttpipe.ports import JobRepository, ObjectStore

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


class UploadRequest(BaseModel):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str
    size_bytes: int = Field(gt=0)
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$")
    priority: Priority | None = None

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
    upload: dict[str, Any]  # {"url": ..., "fields": {...}}: an HTML form POST straight to S3
    expires_in: int
    status_url: str


class JobStatusView(BaseModel):
    job_id: str
    status: JobStatus
    filename: str
    language: str | None
    priority: Priority
    created_at: datetime
    updated_at: datetime
    progress: dict[str, int]
    chunks: list[ChunkProgress]
    failure_reason: str | None = None
    stats: dict[str, Any] = Field(default_factory=dict)
    downloads: dict[str, str] = Field(default_factory=dict)


class RequestRejected(ValueError):
    """The request is well-formed but cannot be accepted (e.g. over a limit)."""


class JobService:
    def __init__(self, store: ObjectStore, jobs: JobRepository, settings: Settings) -> None:
        self._store = store
        self._jobs = jobs
        self._settings = settings

    def create_upload(self, request: UploadRequest, tenant_id: str) -> UploadTicket:
        if request.size_bytes > self._settings.max_upload_bytes:
            raise RequestRejected(
                f"size_bytes {request.size_bytes} is over the limit of "
                f"{self._settings.max_upload_bytes} bytes"
            )
        now = datetime.now(UTC)
        job_id = uuid.uuid4().hex
        job = Job(
            job_id=job_id,
            tenant_id=tenant_id,
            filename=request.filename,
            content_type=request.content_type,
            language=request.language or self._settings.default_language,
            priority=request.priority or self._settings.default_priority,
            upload_key=keys.upload(job_id, request.filename),
            created_at=now,
            updated_at=now,
        )
        self._jobs.add(job)
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
        )

    def status(self, job_id: str, tenant_id: str) -> JobStatusView | None:
        view = self._jobs.get(job_id)
        if view is None or view.job.tenant_id != tenant_id:
            return None
        return self._status_view(view)

    def list_jobs(self, tenant_id: str, limit: int, before: str | None) -> list[Job]:
        return self._jobs.list_jobs(tenant_id, limit=limit, before=before)

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
            priority=job.priority,
            created_at=job.created_at,
            updated_at=job.updated_at,
            progress={"chunks_total": view.chunks_total, "chunks_finished": view.chunks_finished},
            chunks=view.chunks,
            failure_reason=job.failure_reason,
            stats=job.stats,
            downloads=downloads,
        )
