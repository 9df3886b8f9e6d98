"""Worker service: transcribe one chunk and answer the state machine's task token."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aws_lambda_powertools import Logger

from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import (
    ChunkOutcome,
    ChunkState,
    ChunkTask,
    ChunkTranscript,
    LanguageDetected,
    LanguageSource,
)
from sttpipe.domain.transcripts import CachedChunk, CacheLevel
from sttpipe.ports import (
    JobRepository,
    ObjectNotFound,
    ObjectStore,
    TaskNoLongerWaiting,
    TranscriptCache,
    Workflow,
)
from sttpipe.speech.base import SpeechBackPressure, SpeechError, Transcriber
from sttpipe.transcript.language import language_of

logger = Logger(child=True)

CHUNK_FAILED = "Chunk.Failed"


class ChunkRetryLater(Exception):
    """The chunk failed for a reason that may pass: deliver the message again, after a backoff."""


class ChunkGaveUp(Exception):
    """The chunk failed on its last delivery for a reason that might have passed: the task is
    answered as failed, and the message belongs in the dead-letter queue for operators."""


class ChunkDeferred(Exception):
    """The API was not called (circuit open, no slot free): put the message back on its queue,
    delayed by `delay_s`, as a fresh message, so that the wait does not use up a receive."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(f"chunk deferred by {delay_s:.1f} s")
        self.delay_s = delay_s


@contextmanager
def heartbeats(workflow: Workflow, task_token: str, interval_s: float) -> Iterator[None]:
    """SendTaskHeartbeat every `interval_s` from a daemon thread while the block runs, so that a
    long transcription (retries, a slow API) is not taken for a dead worker. Stopped on exit."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                workflow.heartbeat(task_token)
            except TaskNoLongerWaiting:
                return  # the task timed out or was answered: the result will be dropped
            except Exception:  # a missed beat is not fatal; the next may pass
                logger.exception("task heartbeat failed")

    thread = threading.Thread(target=beat, name="task-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class WorkerService:
    def __init__(
        self,
        store: ObjectStore,
        jobs: JobRepository,
        workflow: Workflow,
        transcriber: Transcriber,
        settings: Settings,
        cache: TranscriptCache | None = None,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._workflow = workflow
        self._transcriber = transcriber
        self._settings = settings
        self._cache = cache

    def process(
        self,
        task: ChunkTask,
        receive_count: int,
        remaining_s: float | None = None,
        *,
        may_defer: bool = True,
    ) -> None:
        """Transcribe `task.chunk` and answer its task token (for a detection task: pin the
        language heard on the job and answer it). Raises ChunkRetryLater when SQS
        should deliver it again, ChunkGaveUp when its last delivery failed (the token is answered
        as failed), and (if `may_defer`) ChunkDeferred when the API was not called at all.

        `remaining_s` is the invocation's time left: retries of the speech API stop before it.
        """
        chunk = task.chunk
        log_keys = {"job_id": task.job_id, "chunk": chunk.index, "receive_count": receive_count}
        token = task.task_token
        if token is None:
            self._transcribe_ahead(task, log_keys, remaining_s)
            return
        try:
            # Resets the heartbeat clock, which has been running while the message sat queued.
            self._workflow.heartbeat(token)
        except TaskNoLongerWaiting:
            logger.warning("state machine no longer waits for this chunk; dropped", extra=log_keys)
            return

        result_key = keys.chunk_result(task.job_id, chunk.index)
        try:
            if self._store.size(result_key) is not None:
                # A previous delivery stored the result but did not get to answer the token.
                logger.info("chunk result already stored", extra=log_keys)
            else:
                interval_s = self._settings.heartbeat_interval_s
                with heartbeats(self._workflow, token, interval_s):
                    stored_here = self._transcribe_and_store(task, remaining_s)
                if not stored_here:
                    # Another delivery of this message, or the chunk sent ahead, stored it
                    # first. Answered here too: a second answer to a token is only refused.
                    logger.info("chunk result stored by another delivery", extra=log_keys)
        except SpeechError as exc:
            if isinstance(exc, SpeechBackPressure) and may_defer:
                logger.info(
                    "speech API not called; chunk deferred", extra={**log_keys, "why": str(exc)}
                )
                raise ChunkDeferred(exc.retry_after_s or 1.0) from exc
            final = not exc.retryable or receive_count >= self._settings.max_receives
            logger.warning(
                "chunk transcription failed",
                extra={**log_keys, "error": str(exc), "retryable": exc.retryable, "final": final},
            )
            if not final:
                raise ChunkRetryLater(str(exc)) from exc
            reason = f"Chunk {chunk.index} could not be transcribed: {exc}"
            if not task.detect_language:  # the chunk gets its own turn in the Map
                self._jobs.set_chunk_state(
                    task.job_id, chunk.index, ChunkState.FAILED, error=reason, run=task.run
                )
            self._answer_failure(token, reason, log_keys)
            if exc.retryable:
                raise ChunkGaveUp(reason) from exc
            return

        if task.detect_language:
            answer = self._pin_language(task, result_key, log_keys).model_dump_json()
        else:
            self._jobs.set_chunk_state(task.job_id, chunk.index, ChunkState.DONE, run=task.run)
            answer = ChunkOutcome(index=chunk.index, result_key=result_key).model_dump_json()
        try:
            self._workflow.succeed(token, answer)
        except TaskNoLongerWaiting:
            logger.warning("state machine stopped waiting before the answer", extra=log_keys)

    def _transcribe_ahead(
        self, task: ChunkTask, log_keys: dict[str, object], remaining_s: float | None
    ) -> None:
        """A chunk the splitter sent ahead of the Map: its transcript is stored in the job's
        results, where the Map's task finds it. Nobody waits for this one, so whatever stops
        it (the job ended or gone, no slot, an API error) drops it: the task does the work."""
        view = self._jobs.get(task.job_id)
        if view is None or view.job.status.is_final:
            logger.info("chunk sent ahead for a job that has ended; dropped", extra=log_keys)
            return
        if self._store.size(keys.chunk_result(task.job_id, task.chunk.index)) is not None:
            return
        try:
            self._transcribe_and_store(task, remaining_s)
        except (SpeechError, ObjectNotFound) as exc:
            logger.info(
                "chunk sent ahead not transcribed; its task will be",
                extra={**log_keys, "why": str(exc)},
            )

    def _pin_language(
        self, task: ChunkTask, result_key: str, log_keys: dict[str, object]
    ) -> LanguageDetected:
        """The language of the chunk's stored text, pinned on the job for every other chunk."""
        heard = ChunkTranscript.model_validate_json(self._store.get_bytes(result_key)).text
        language = language_of(heard)
        if language is not None and not self._jobs.pin_language(
            task.job_id, language, run=task.run or 1
        ):
            # A redelivery after the pin, or a run that no longer owns the job: the job's word
            # stands (a superseded run's answer is ignored anyway).
            view = self._jobs.get(task.job_id)
            if view is not None and view.job.language_source is LanguageSource.DETECTED:
                language = view.job.language
        logger.info("job language detected", extra={**log_keys, "language": language})
        return LanguageDetected(language=language)

    def _transcribe_and_store(self, task: ChunkTask, remaining_s: float | None) -> bool:
        """Store the chunk's transcript, from the cache or from the speech API; False when
        another delivery of the same message stored it first (conditional write)."""
        chunk = task.chunk
        # A detection hears the chunk with no language named, whatever the stack's default.
        language = (
            None if task.detect_language else task.language or self._settings.default_language
        )
        started = time.monotonic()
        stored_here = False

        def store(value: CachedChunk, api_calls: int, level: CacheLevel | None) -> bool:
            transcript = value.placed(
                chunk,
                api_calls=api_calls,
                cache_level=level,
                seconds=round(time.monotonic() - started, 3),
            )
            return self._store.put_bytes_if_absent(
                keys.chunk_result(task.job_id, chunk.index),
                transcript.model_dump_json().encode(),
                "application/json",
            )

        def call_api() -> CachedChunk:
            nonlocal stored_here
            result = self._transcriber.transcribe(
                self._store.get_bytes(chunk.key),
                chunk.key.rsplit("/", 1)[-1],
                language=language,
                prompt=task.prompt,
                remaining_s=remaining_s,
            )
            value = CachedChunk.of(result)
            # Stored before the cache has it: a concurrent delivery that waited for this call
            # then finds the result (with the calls it cost) and leaves it alone.
            stored_here = store(value, result.attempts, None)
            return value

        if self._cache is None:
            call_api()
            return stored_here
        # Waiting for another worker's call must leave time to make our own.
        wait_s = None if remaining_s is None else max(0.0, remaining_s / 2)
        value, level = self._cache.chunk(
            chunk, call_api, language=language, prompt=task.prompt, wait_s=wait_s
        )
        return stored_here if level is None else store(value, 0, level)

    def _answer_failure(self, token: str, reason: str, log_keys: dict[str, object]) -> None:
        try:
            self._workflow.fail(token, CHUNK_FAILED, reason)
        except TaskNoLongerWaiting:
            logger.warning("state machine no longer waits for this chunk", extra=log_keys)
