"""Merge service: the chunk transcripts of a job become its TXT/JSON/SRT/VTT and its outcome."""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from aws_lambda_powertools import Logger

from sttpipe.domain import keys
from sttpipe.domain.models import (
    ChunkOutcome,
    ChunkState,
    ChunkTranscript,
    Job,
    JobFailureNotice,
    JobStats,
    JobStatus,
    JobView,
    LanguageSource,
    Manifest,
    MergeTask,
)
from sttpipe.domain.transcripts import CachedUpload, CacheLevel, FailedChunk, Hit, Transcript
from sttpipe.ports import (
    JobRepository,
    ObjectNotFound,
    ObjectStore,
    TaskNoLongerWaiting,
    TranscriptCache,
    Workflow,
)
from sttpipe.services.manifests import load_manifest
from sttpipe.services.webhooks import JobEndAnnouncer
from sttpipe.transcript import (
    assemble,
    render_json,
    render_srt,
    render_tsv,
    render_txt,
    render_vtt,
)

logger = Logger(child=True)

# Chunk results read at once by a merge: S3 answers each in tens of milliseconds, and a long
# recording has thousands.
_PARALLEL_READS = 16

_CONTENT_TYPES = {
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
}


class MergeService:
    def __init__(
        self,
        store: ObjectStore,
        jobs: JobRepository,
        workflow: Workflow,
        cache: TranscriptCache | None = None,
        announcer: JobEndAnnouncer | None = None,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._workflow = workflow
        self._cache = cache
        self._announcer = announcer

    def merge(self, task: MergeTask) -> JobStatus | None:
        """Merge the job's chunks and record its outcome; None when `task` belongs to a run
        that is no longer the job's (a late or repeated message), which changes nothing."""
        started = time.monotonic()
        view = self._jobs.get(task.job_id)
        if _superseded(view, task.run, task.job_id):
            self._answer(task, {"status": "SUPERSEDED"})
            return None
        manifest = load_manifest(self._store, task.job_id)
        spans = {c.index: (c.start_ms, c.end_ms) for c in manifest.execution.chunks}
        # What workers recorded when they gave up on a chunk (Step Functions may not pass the
        # cause of a task failure along: moto drops it).
        recorded = {c.index: c.error for c in view.chunks if c.error} if view else {}

        done: list[ChunkTranscript] = []
        failed: list[FailedChunk] = []
        for outcome, result in self._every_chunk(task, manifest):
            if result is not None:
                done.append(result)
            else:
                reason = recorded.get(outcome.index) or _failure_reason(outcome)
                start_ms, end_ms = spans[outcome.index]
                failed.append(
                    FailedChunk(
                        index=outcome.index, start_ms=start_ms, end_ms=end_ms, reason=reason
                    )
                )
                if outcome.index not in recorded:
                    # A worker that died never recorded its chunk; the Map's catch says it failed.
                    self._jobs.set_chunk_state(
                        task.job_id, outcome.index, ChunkState.FAILED, error=reason, run=task.run
                    )

        status, job_reason = _outcome(done, failed)
        stats = _statistics(manifest, done, failed, runs=view.job.runs if view else 1)
        if status is not JobStatus.FAILED:
            language, source = _language(view.job if view else None, manifest)
            transcript = assemble(
                done,
                failed,
                language=language,
                speech=manifest.speech,
                sent=manifest.sent,
            ).model_copy(update={"language_source": source})
            stats.merge_seconds = round(time.monotonic() - started, 3)
            write_transcript(self._store, task.job_id, transcript, stats)
            if status is JobStatus.COMPLETED and view is not None:
                self._remember(view.job.tenant_id, manifest, transcript)
        recorded_here = self._jobs.finish(
            task.job_id, status, stats=stats.as_record(), reason=job_reason, run=task.run
        )
        logger.info(
            "job merged",
            extra={
                "job_id": task.job_id,
                "status": status,
                "failed_chunks": len(failed),
                "recorded": recorded_here,
            },
        )
        self._answer(task, {"status": status})
        if recorded_here:
            self._announce(task.job_id)
        return status if recorded_here else None

    def _answer(self, task: MergeTask, output: dict[str, str]) -> None:
        try:
            self._workflow.succeed(task.task_token, json.dumps(output))
        except TaskNoLongerWaiting:
            logger.warning(
                "state machine stopped waiting for the merge", extra={"job_id": task.job_id}
            )

    def _every_chunk(
        self, task: MergeTask, manifest: Manifest
    ) -> list[tuple[ChunkOutcome, ChunkTranscript | None]]:
        """Every chunk of the job, in order, with its stored transcript (None if it failed).
        The results come from the chunk results in S3, read in parallel (a long recording has
        thousands): the Map's own results, where an execution of an older version sent them,
        only add why a chunk failed."""
        outcomes = {o.index: o for o in task.results}
        for chunk in manifest.execution.chunks:
            outcomes.setdefault(
                chunk.index,
                ChunkOutcome(
                    index=chunk.index, result_key=keys.chunk_result(task.job_id, chunk.index)
                ),
            )
        ordered = sorted(outcomes.values(), key=lambda o: o.index)
        with ThreadPoolExecutor(max_workers=_PARALLEL_READS) as pool:
            results = list(pool.map(self._stored_result, ordered))
        return list(zip(ordered, results, strict=True))

    def _stored_result(self, outcome: ChunkOutcome) -> ChunkTranscript | None:
        if outcome.result_key is None:
            return None
        try:
            return ChunkTranscript.model_validate_json(self._store.get_bytes(outcome.result_key))
        except ObjectNotFound:
            return None

    def _remember(self, tenant_id: str, manifest: Manifest, transcript: Transcript) -> None:
        """Keep a completed transcript under its upload's hash: a re-upload is answered from it."""
        if self._cache is None or manifest.upload_sha256 is None:
            return
        self._cache.store_upload(
            manifest.upload_sha256,
            CachedUpload(
                transcript=transcript,
                duration_s=manifest.duration_s,
                chunks=manifest.chunks_total,
                chunks_silent=manifest.chunks_silent,
            ),
            tenant=tenant_id,
            language=manifest.execution.language,
            prompt=manifest.execution.prompt,
        )

    def record_failure(self, notice: JobFailureNotice) -> None:
        # The error's name for the tenant; its cause (ARNs, account ids, state names) for the
        # operators' logs only.
        reason = f"The job's state machine failed with {notice.error.error}."
        if _superseded(self._jobs.get(notice.job_id), notice.run, notice.job_id):
            return
        logger.error(
            "job failed in the state machine",
            extra={"job_id": notice.job_id, "reason": reason, "cause": notice.error.cause},
        )
        if self._jobs.finish(
            notice.job_id, JobStatus.FAILED, stats={}, reason=reason, run=notice.run
        ):
            self._announce(notice.job_id)

    def _announce(self, job_id: str) -> None:
        """Queue the job's webhook, once its end is recorded and its task answered (a repeated
        merge queues it again: receivers deduplicate on the delivery id)."""
        view = self._jobs.get(job_id) if self._announcer else None
        if self._announcer and view:
            self._announcer.job_ended(view.job)


def write_transcript(
    store: ObjectStore, job_id: str, transcript: Transcript, stats: JobStats
) -> None:
    """The job's transcript.txt/json/srt/vtt/tsv (the JSON carries the job's statistics)."""
    rendered = {
        "txt": render_txt(transcript),
        "json": render_json(transcript, stats=stats.as_record()),
        "srt": render_srt(transcript),
        "vtt": render_vtt(transcript),
        "tsv": render_tsv(transcript),
    }
    for fmt, body in rendered.items():
        store.put_bytes(keys.transcript(job_id, fmt), body.encode(), _CONTENT_TYPES[fmt])


def complete_from_cache(
    store: ObjectStore,
    jobs: JobRepository,
    job_id: str,
    cached: Hit[CachedUpload],
    *,
    split_seconds: float = 0.0,
    announcer: JobEndAnnouncer | None = None,
) -> None:
    """End a job whose recording its tenant already transcribed: the cached transcript is its
    own, with no chunk split and no speech API call (the splitter after hashing an upload, the
    API before one when the client sent the file's hash)."""
    upload = cached.value
    stats = JobStats(
        duration_s=upload.duration_s,
        chunks=upload.chunks,
        chunks_silent=upload.chunks_silent,
        chunks_transcribed=upload.chunks - upload.chunks_silent,
        chunks_failed=0,
        speech_api_calls=0,
        cache_hits={level.value: 0 for level in CacheLevel},
        upload_cache_hit=cached.level.value,
        split_seconds=round(split_seconds, 3),
        transcribe_seconds=0.0,
    )
    write_transcript(store, job_id, upload.transcript, stats)
    if jobs.finish(job_id, JobStatus.COMPLETED, stats=stats.as_record()) and announcer:
        view = jobs.get(job_id)
        if view is not None:
            announcer.job_ended(view.job)


def _superseded(view: JobView | None, run: int | None, job_id: str) -> bool:
    """Whether a message of `run` comes too late: the job has been re-run since (messages of
    executions from before runs were carried have no run, and are taken as current)."""
    if view is None or run is None or view.job.runs == run:
        return False
    logger.warning(
        "message of an earlier run ignored",
        extra={"job_id": job_id, "run": run, "current_run": view.job.runs},
    )
    return True


def _failure_reason(outcome: ChunkOutcome) -> str:
    if outcome.error is None:
        return f"Chunk {outcome.index}: no result was stored (its worker gave up or timed out)."
    if outcome.error.error in ("States.HeartbeatTimeout", "States.Timeout"):
        return f"Chunk {outcome.index} timed out waiting for a worker ({outcome.error.error})."
    return outcome.error.cause or outcome.error.error


def _language(job: Job | None, manifest: Manifest) -> tuple[str | None, LanguageSource]:
    """The transcript's language and how it was chosen: named, detected once and pinned, or
    none (each chunk's call detected its own: mixed languages, or a detection unsure)."""
    language = job.language if job is not None else manifest.execution.language
    if language is None:
        return None, LanguageSource.PER_CHUNK
    source = job.language_source if job is not None else LanguageSource.REQUESTED
    return language, source


def _outcome(
    done: list[ChunkTranscript], failed: list[FailedChunk]
) -> tuple[JobStatus, str | None]:
    if not failed:
        return JobStatus.COMPLETED, None
    if not done:
        return JobStatus.FAILED, failed[0].reason
    names = ", ".join(str(f.index) for f in failed)
    return JobStatus.PARTIAL, f"{len(failed)} chunk(s) failed: {names}"


def _statistics(
    manifest: Manifest, done: list[ChunkTranscript], failed: list[FailedChunk], *, runs: int
) -> JobStats:
    cache_hits = Counter(c.cache_level for c in done if c.cache_level)
    return JobStats(
        duration_s=manifest.duration_s,
        chunks=manifest.chunks_total,
        chunks_silent=manifest.chunks_silent,
        chunks_transcribed=len(done),
        chunks_failed=len(failed),
        speech_api_calls=sum(c.api_calls for c in done),
        cache_hits={level.value: cache_hits.get(level.value, 0) for level in CacheLevel},
        split_seconds=manifest.split_seconds,
        transcribe_seconds=round(sum(c.seconds for c in done), 3),
        runs=runs,
    )
