"""Splitter service: one uploaded recording in, chunks in S3 and a running state machine out."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from sttpipe.audio import AudioError, SplitOptions, probe, split_file
from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import (
    ChunkRef,
    ChunkTask,
    ExecutionInput,
    Job,
    JobStatus,
    LanguageSource,
    Manifest,
)
from sttpipe.domain.transcripts import CachedUpload, Hit
from sttpipe.observability import Metric
from sttpipe.ports import (
    Download,
    JobRepository,
    MessageQueues,
    MetricRecorder,
    ObjectStore,
    SpeechCapacityGauge,
    TranscriptCache,
    Workflow,
)
from sttpipe.services.manifests import find_manifest, start_split, store_manifest
from sttpipe.services.merging import complete_from_cache
from sttpipe.services.sizing import plan_chunks
from sttpipe.services.webhooks import JobEndAnnouncer

logger = Logger(child=True)


@dataclass(frozen=True)
class SplitOutcome:
    job_id: str
    status: JobStatus
    chunks: int = 0
    reason: str | None = None


class SplitterService:
    def __init__(
        self,
        store: ObjectStore,
        jobs: JobRepository,
        workflow: Workflow,
        settings: Settings,
        cache: TranscriptCache | None = None,
        record: MetricRecorder | None = None,
        capacity: SpeechCapacityGauge | None = None,
        announcer: JobEndAnnouncer | None = None,
        ahead: MessageQueues | None = None,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._workflow = workflow
        self._settings = settings
        self._cache = cache
        self._record = record
        self._capacity = capacity
        self._announcer = announcer
        self._ahead = ahead

    def handle_upload(self, raw_key: str, etag: str = "", receive_count: int = 1) -> SplitOutcome:
        """Split one uploaded object. S3 notifications carry keys `quote_plus`-encoded.

        Safe to repeat at every point: the job claims TRANSCRIBING only after its execution has
        started, and a delivery that finds the upload already split (its manifest stored)
        starts that split's execution (named after the job, so at most one) instead of
        splitting again. An error on the last of `receive_count`s ends the job FAILED and is
        raised, for the message to go to the dead-letter queue."""
        key = unquote_plus(raw_key)
        job = self._job_for(key, etag)
        if job is None:
            return self._drop(key)
        if etag and job.upload_etag and etag != job.upload_etag:
            return self._used_again(job, key)
        resumable = job.status in (JobStatus.SPLITTING, JobStatus.TRANSCRIBING) and job.runs == 1
        if job.status is not JobStatus.AWAITING_UPLOAD and not resumable:
            # At-least-once delivery of the notification: the job is already past splitting.
            logger.info("upload already split", extra={"job_id": job.job_id, "status": job.status})
            return SplitOutcome(job.job_id, job.status)
        try:
            if resumable and (manifest := find_manifest(self._store, job.job_id)) is not None:
                return self._start(job, manifest, time.monotonic(), resumed=True)
            if job.status is JobStatus.AWAITING_UPLOAD:
                if not self._jobs.claim_upload(job.job_id, etag):
                    # Another copy of the notification claimed it a moment ago and splits it.
                    return SplitOutcome(job.job_id, JobStatus.SPLITTING)
            else:
                self._jobs.set_status(job.job_id, JobStatus.SPLITTING)
            return self._split(job)
        except AudioError as exc:
            # Bad audio cannot get better by retrying: end the job now, keep the upload.
            logger.warning("upload rejected", extra={"job_id": job.job_id, "reason": exc.reason})
            self._jobs.finish(job.job_id, JobStatus.FAILED, stats={}, reason=exc.reason)
            return SplitOutcome(job.job_id, JobStatus.FAILED, reason=exc.reason)
        except Exception as exc:
            if receive_count >= self._settings.max_receives:
                reason = (
                    f"The upload could not be split in {receive_count} attempts"
                    f" (last: {type(exc).__name__}); upload it again."
                )
                logger.exception("upload given up", extra={"job_id": job.job_id})
                self._jobs.finish(job.job_id, JobStatus.FAILED, stats={}, reason=reason)
            raise

    def _job_for(self, key: str, etag: str) -> Job | None:
        """The job the upload is for; None when its key names a job that does not exist."""
        job_id = keys.job_of_upload(key)
        if job_id is not None:
            view = self._jobs.get(job_id)
            return view.job if view is not None else None
        # An object put straight into uploads/ (aws s3 cp, a script) becomes a job with defaults,
        # its id derived from the object so that a repeated notification finds the same job.
        job_id = uuid.uuid5(uuid.NAMESPACE_URL, f"s3:{key}#{etag}").hex
        existing = self._jobs.get(job_id)
        if existing is not None:
            return existing.job
        now = datetime.now(UTC)
        job = Job(
            job_id=job_id,
            filename=key.rsplit("/", 1)[-1],
            language=self._settings.default_language,
            language_source=LanguageSource.REQUESTED
            if self._settings.default_language
            else LanguageSource.DETECT,
            priority=self._settings.default_priority,
            upload_key=key,
            created_at=now,
            updated_at=now,
        )
        self._jobs.add(job)
        logger.info("job created for a direct upload", extra={"job_id": job.job_id, "key": key})
        return job

    def _drop(self, key: str) -> SplitOutcome:
        """An upload through a form whose job is gone (deleted while its form was still valid)
        belongs to nobody: it is deleted, never adopted by another tenant or transcribed."""
        job_id = keys.job_of_upload(key) or ""
        deleted = self._store.delete_prefix(key)
        logger.warning(
            "upload for a job that does not exist dropped",
            extra={"job_id": job_id, "key": key, "objects_deleted": deleted},
        )
        return SplitOutcome(job_id, JobStatus.FAILED, reason="no such job")

    def _used_again(self, job: Job, key: str) -> SplitOutcome:
        """The job's upload form used again after its first upload was claimed (forms are
        single-use): what it wrote is deleted, never split or kept."""
        deleted = self._store.delete_prefix(key)
        logger.warning(
            "upload form used again; its object deleted",
            extra={"job_id": job.job_id, "key": key, "objects_deleted": deleted},
        )
        return SplitOutcome(job.job_id, job.status, reason="upload form already used")

    def _split(self, job: Job) -> SplitOutcome:
        started = time.monotonic()
        silent: dict[int, tuple[int, int]] = {}
        refs: list[ChunkRef] = []
        speech: dict[int, list[tuple[int, int]]] = {}
        sent: dict[int, list[tuple[int, int]]] = {}
        # The recording is split while it downloads. Once all of it is in, its hash tells
        # whether the tenant transcribed this very file before: then the split stops there
        # (its chunks so far expire with work/) and the job is answered from the cache.
        with self._store.download(job.upload_key) as upload:
            known = _KnownUpload(self._cache, job, upload)
            if (cached := known.ask()) is not None:
                return self._answer_from_cache(job, cached, started)
            info = probe(upload)
            options = self._options(info.duration_s)
            logger.info(
                "splitting",
                extra={"job_id": job.job_id, "duration_s": info.duration_s, "codec": info.codec},
            )
            # Limits are checked before the first chunk; no speech at all raises at the end.
            for chunk in split_file(upload, options, info=info):
                if (cached := known.ask()) is not None:
                    return self._answer_from_cache(job, cached, started)
                if not chunk.has_speech:
                    silent[chunk.index] = (chunk.start_ms, chunk.end_ms)
                else:
                    speech[chunk.index] = list(chunk.speech)
                    sent[chunk.index] = list(chunk.sent)
                    chunk_key = keys.chunk_audio(job.job_id, chunk.index)
                    self._store.put_bytes(chunk_key, chunk.flac, "audio/flac")
                    refs.append(
                        ChunkRef(
                            index=chunk.index,
                            key=chunk_key,
                            start_ms=chunk.start_ms,
                            end_ms=chunk.end_ms,
                            pcm_sha256=chunk.pcm_sha256,
                            tenant_id=job.tenant_id,
                            lead_in_ms=chunk.lead_in_ms,
                        )
                    )
                    self._send_ahead(job, refs[-1])
            upload_sha256 = upload.wait_until_complete()
            if (cached := known.ask()) is not None:
                return self._answer_from_cache(job, cached, started)

        execution = ExecutionInput(
            job_id=job.job_id,
            language=job.language,
            prompt=job.prompt,
            queue_url=self._settings.queue_url(job.priority),
            chunks=refs,
            detect_language=job.language_source is LanguageSource.DETECT,
            tenant_id=job.tenant_id,
        )
        manifest = Manifest(
            execution=execution,
            duration_s=info.duration_s,
            chunks_total=len(refs) + len(silent),
            chunks_silent=len(silent),
            split_seconds=round(time.monotonic() - started, 3),
            upload_sha256=upload_sha256,
            speech=speech,
            sent=sent,
            silent=silent,
        )
        store_manifest(self._store, manifest)
        return self._start(job, manifest, started, resumed=False)

    def _send_ahead(self, job: Job, chunk: ChunkRef) -> None:
        """Hand the chunk to the workers now, while the rest is cut (Settings.transcribe_ahead).
        Not for a job whose language is still to be detected: the Map sends the pinned one,
        and the cache key holds the language. A failed send costs only the head start."""
        if self._ahead is None or job.language_source is LanguageSource.DETECT:
            return
        task = ChunkTask(
            job_id=job.job_id, language=job.language, prompt=job.prompt, run=1, chunk=chunk
        )
        try:
            self._ahead.send(
                self._settings.queue_url(job.priority),
                task.model_dump_json(),
                group_id=job.tenant_id,
            )
        except Exception:
            logger.exception(
                "chunk not sent ahead; the state machine's task will transcribe it",
                extra={"job_id": job.job_id, "chunk": chunk.index},
            )

    def _start(
        self, job: Job, manifest: Manifest, started: float, *, resumed: bool
    ) -> SplitOutcome:
        start_split(self._store, self._jobs, self._workflow, manifest)
        if self._record is not None and not resumed:
            split_ms = (time.monotonic() - started) * 1000
            self._record(Metric.SPLIT_DURATION, split_ms, MetricUnit.Milliseconds)
        logger.info(
            "job resumed from its stored split" if resumed else "job split",
            extra={
                "job_id": job.job_id,
                "chunks": manifest.chunks_total,
                "silent": manifest.chunks_silent,
            },
        )
        return SplitOutcome(
            job.job_id, JobStatus.TRANSCRIBING, chunks=len(manifest.execution.chunks)
        )

    def _options(self, duration_s: float) -> SplitOptions:
        """How to cut this recording: its chunks sized for the speech API's capacity now."""
        settings = self._settings
        target_s = settings.chunk_target_s
        if target_s is None and self._capacity is not None:
            plan = plan_chunks(
                duration_s,
                self._capacity.estimate(),
                min_chunk_s=settings.min_chunk_s,
                max_chunk_s=settings.max_chunk_s,
                overhead_s=settings.chunk_overhead_s,
            )
            logger.info(
                f"chunks sized: {plan.reason}",
                extra={"chunks": plan.chunks, "target_chunk_s": round(plan.target_s, 1)},
            )
            target_s = plan.target_s
        return SplitOptions(
            max_chunk_s=settings.max_chunk_s,
            min_chunk_s=min(settings.min_chunk_s, settings.max_chunk_s),
            concurrency=settings.speech_limit,
            max_duration_s=settings.max_duration_s,
            max_bytes=settings.max_upload_bytes,
            target_chunk_s=target_s,
        )

    def _answer_from_cache(
        self, job: Job, cached: Hit[CachedUpload], started: float
    ) -> SplitOutcome:
        """The same file was transcribed before: no splitting, no speech API, done now."""
        complete_from_cache(
            self._store,
            self._jobs,
            job.job_id,
            cached,
            split_seconds=time.monotonic() - started,
            announcer=self._announcer,
        )
        logger.info(
            "upload answered from the cache",
            extra={"job_id": job.job_id, "level": cached.level, "chunks": cached.value.chunks},
        )
        return SplitOutcome(job.job_id, JobStatus.COMPLETED)


class _KnownUpload:
    """The tenant's finished transcript of this very upload, asked for once: as soon as the
    download is complete and its hash known."""

    def __init__(self, cache: TranscriptCache | None, job: Job, upload: Download) -> None:
        self._cache = cache
        self._job = job
        self._upload = upload
        self._asked = cache is None

    def ask(self) -> Hit[CachedUpload] | None:
        """The hit, the first time this is called with the hash known; None otherwise."""
        if self._asked or (sha256 := self._upload.sha256) is None:
            return None
        self._asked = True
        assert self._cache is not None
        job = self._job
        return self._cache.upload(
            sha256, tenant=job.tenant_id, language=job.language, prompt=job.prompt
        )
