"""One language per job: a job without a language detects it once and keeps it for every chunk.

The worker and the merge on in-memory adapters, with a speech API stand-in that hears a passage
of another language in one chunk. The local engine (Whisper tiny.en) knows English only and no
multilingual engine can be installed here, so the foreign passage is this fake's; that the state
machine carries the pinned language into every chunk's message is checked on moto
(tests/e2e/test_pipeline.py::test_a_job_without_language_detects_it_once_and_pins_it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sttpipe_testing.fakes import InMemoryJobRepository, InMemoryObjectStore, InMemoryWorkflow

from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import (
    ChunkProgress,
    ChunkRef,
    ChunkState,
    ChunkTask,
    ExecutionInput,
    Job,
    JobStatus,
    LanguageDetected,
    LanguageSource,
    Manifest,
    MergeTask,
)
from sttpipe.domain.transcripts import Transcription
from sttpipe.services.merging import MergeService
from sttpipe.services.transcribing import WorkerService

JOB_ID = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
SPANS = [(0, 30_000), (30_000, 60_000), (60_000, 90_000)]
SAID = {
    0: "Good morning everyone, let us start with the quarterly results.",
    2: "That brings us to the end of the review, thank you all for coming.",
}
# Chunk 1 quotes a Russian guest: left to itself it is heard as Russian; told the job's
# language, the engine writes it in that language's words.
FOREIGN = "Спасибо, коллеги, это был очень хороший квартал для всей нашей команды."
FOREIGN_AS_ENGLISH = "Thank you colleagues, it was a very good quarter for our whole team."


class BilingualSpeechApi:
    """The speech API as a multilingual Whisper answers these three chunks."""

    def __init__(self) -> None:
        self.languages: list[str | None] = []

    def transcribe(
        self,
        audio: bytes,
        filename: str,
        *,
        language: str | None,
        prompt: str | None = None,
        remaining_s: float | None = None,
    ) -> Transcription:
        self.languages.append(language)
        index = int(audio.decode())
        if index != 1:
            return Transcription(text=SAID[index], language=language)
        return Transcription(text=FOREIGN if language is None else FOREIGN_AS_ENGLISH)


class Job3:
    def __init__(self, source: LanguageSource) -> None:
        self.store, self.jobs, self.workflow = (
            InMemoryObjectStore(),
            InMemoryJobRepository(),
            InMemoryWorkflow(),
        )
        self.api = BilingualSpeechApi()
        now = datetime.now(UTC)
        self.jobs.add(
            Job(
                job_id=JOB_ID,
                filename="board.wav",
                upload_key="u",
                created_at=now,
                updated_at=now,
                language_source=source,
            )
        )
        self.jobs.add_chunks(
            JOB_ID,
            [
                ChunkProgress(index=i, start_ms=s, end_ms=e, state=ChunkState.PENDING)
                for i, (s, e) in enumerate(SPANS)
            ],
        )
        self.refs = [
            ChunkRef(
                index=i,
                key=keys.chunk_audio(JOB_ID, i),
                start_ms=s,
                end_ms=e,
                pcm_sha256=f"{i:064x}",
            )
            for i, (s, e) in enumerate(SPANS)
        ]
        for ref in self.refs:
            self.store.put_bytes(ref.key, str(ref.index).encode(), "audio/flac")
        manifest = Manifest(
            execution=ExecutionInput(
                job_id=JOB_ID,
                language=None,
                queue_url="q",
                chunks=self.refs,
                detect_language=source is LanguageSource.DETECT,
            ),
            duration_s=90.0,
            chunks_total=3,
            chunks_silent=0,
            split_seconds=0.5,
        )
        self.store.put_bytes(
            keys.manifest(JOB_ID), manifest.model_dump_json().encode(), "application/json"
        )
        self.worker = WorkerService(
            self.store, self.jobs, self.workflow, self.api, Settings(default_language=None)
        )

    def task(self, ref: ChunkRef, language: str | None, *, detect: bool = False) -> ChunkTask:
        return ChunkTask(
            task_token=self.workflow.open_task(),
            job_id=JOB_ID,
            language=language,
            run=1,
            chunk=ref,
            detect_language=detect,
        )

    def run(self, *, detect: bool) -> dict[str, object]:
        """What the state machine does: DetectLanguage on the first chunk (when asked), its
        answer pinned into every chunk's message, then the merge. Returns the JSON transcript."""
        language = None
        if detect:
            task = self.task(self.refs[0], None, detect=True)
            self.worker.process(task, receive_count=1)
            answer = self.workflow.answers[task.task_token].output or ""
            language = LanguageDetected.model_validate_json(answer).language
        for ref in self.refs:
            self.worker.process(self.task(ref, language), receive_count=1)
        merge = MergeService(self.store, self.jobs, self.workflow)
        token = self.workflow.open_task()
        assert merge.merge(MergeTask(task_token=token, job_id=JOB_ID, run=1)) is (
            JobStatus.COMPLETED
        )
        document: dict[str, object] = json.loads(
            self.store.get_bytes(keys.transcript(JOB_ID, "json"))
        )
        return document


def test_a_foreign_passage_keeps_the_jobs_language() -> None:
    job = Job3(LanguageSource.DETECT)
    document = job.run(detect=True)

    assert (document["language"], document["language_source"]) == ("en", "detected")
    text = " ".join(str(s["text"]) for s in document["segments"])  # type: ignore[attr-defined]
    assert "quarter for our whole team" in text and "Спасибо" not in text
    # One call without a language (the detection, whose result the first chunk reuses), then
    # every other chunk told the pinned one.
    assert job.api.languages == [None, "en", "en"]


@pytest.mark.parametrize("source", [LanguageSource.PER_CHUNK])
def test_a_job_that_allows_mixed_languages_lets_each_chunk_detect_its_own(
    source: LanguageSource,
) -> None:
    job = Job3(source)
    document = job.run(detect=False)

    assert (document["language"], document["language_source"]) == (None, "per_chunk")
    text = " ".join(str(s["text"]) for s in document["segments"])  # type: ignore[attr-defined]
    assert "Спасибо" in text
    assert job.api.languages == [None, None, None]
