"""Whole-upload cache: splitter, worker and merge on in-memory adapters with the real audio code,
sharing one cache (L1 only; the Redis/PostgreSQL levels are exercised in tests/integration and in
tests/e2e/test_cache.py). A re-uploaded file is answered without splitting or any API call.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from sttpipe_testing.fakes import (
    FakeTranscriber,
    InMemoryJobRepository,
    InMemoryMessageQueues,
    InMemoryObjectStore,
    InMemoryWebhookKeys,
    InMemoryWorkflow,
    TricklingObjectStore,
    started_run,
)

from sttpipe.cache import TieredCache, TieredTranscriptCache
from sttpipe.cache.memory import MemoryCache
from sttpipe.config import Settings
from sttpipe.domain import keys
from sttpipe.domain.models import (
    ChunkOutcome,
    ChunkTask,
    Job,
    JobEndNotice,
    JobStatus,
    MergeTask,
)
from sttpipe.services.jobs import JobService, UploadRequest
from sttpipe.services.merging import MergeService
from sttpipe.services.splitting import SplitterService
from sttpipe.services.transcribing import WorkerService
from sttpipe.services.webhook_keys import TenantWebhookSecrets
from sttpipe.services.webhooks import JobEndAnnouncer

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.flac"


class Pipeline:
    """The three services wired as the functions are, on one in-memory world and one cache."""

    def __init__(self, store: InMemoryObjectStore | None = None) -> None:
        self.store = store or InMemoryObjectStore()
        self.jobs = InMemoryJobRepository()
        self.workflow = InMemoryWorkflow()
        self.speech = FakeTranscriber(default="words of a chunk")
        self.settings = settings = Settings(
            queue_url_normal="https://sqs/normal", default_language="en"
        )
        self.cache = TieredTranscriptCache(
            TieredCache(l1=MemoryCache(1 << 24, ttl_s=600)),
            namespace="unit",
            model=settings.speech_model,
            response_format=settings.speech_response_format,
        )
        self.queues = InMemoryMessageQueues()
        self.announcer = JobEndAnnouncer(self.queues, "https://sqs/webhooks")
        self.splitter = SplitterService(
            self.store, self.jobs, self.workflow, settings, self.cache, announcer=self.announcer
        )
        self.worker = WorkerService(
            self.store, self.jobs, self.workflow, self.speech, settings, self.cache
        )
        self.merger = MergeService(
            self.store, self.jobs, self.workflow, self.cache, announcer=self.announcer
        )

    def run(
        self,
        body: bytes,
        language: str = "en",
        tenant: str = "default",
        webhook_url: str | None = None,
    ) -> str:
        """Upload `body` as a new job and drive it to its end; returns the job id."""
        job_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        upload_key = keys.upload(job_id, "talk.flac")
        self.jobs.add(
            Job(
                job_id=job_id,
                tenant_id=tenant,
                filename="talk.flac",
                language=language,
                upload_key=upload_key,
                created_at=now,
                updated_at=now,
                webhook_url=webhook_url,
            )
        )
        self.store.put_bytes(upload_key, body, "audio/flac")
        if self.splitter.handle_upload(upload_key).status is JobStatus.COMPLETED:
            return job_id
        execution = started_run(
            self.store, next(v for k, v in self.workflow.executions.items() if k.endswith(job_id))
        )
        results = []
        for chunk in execution.chunks:
            token = self.workflow.open_task()
            task = ChunkTask(task_token=token, job_id=job_id, language=language, chunk=chunk)
            self.worker.process(task, receive_count=1)
            results.append(
                ChunkOutcome.model_validate_json(self.workflow.answers[token].output or "")
            )
        self.merger.merge(
            MergeTask(task_token=self.workflow.open_task(), job_id=job_id, results=results)
        )
        return job_id

    def job(self, job_id: str) -> Job:
        view = self.jobs.get(job_id)
        assert view is not None
        return view.job

    def text(self, job_id: str) -> str:
        return self.store.get_bytes(keys.transcript(job_id, "txt")).decode()


@pytest.mark.parametrize(
    "store",
    [
        InMemoryObjectStore,
        # The upload arrives while it is split: its hash, known at the last byte, stops the split.
        lambda: TricklingObjectStore(wait_s=0),
    ],
    ids=["downloaded", "arriving"],
)
def test_a_re_upload_is_answered_from_the_cache_without_splitting_or_api_calls(
    store: Callable[[], InMemoryObjectStore],
) -> None:
    pipeline = Pipeline(store())
    body = SAMPLE.read_bytes()
    first = pipeline.run(body)
    calls = len(pipeline.speech.calls)
    assert pipeline.job(first).status is JobStatus.COMPLETED and calls >= 2

    second = pipeline.run(body)
    job = pipeline.job(second)
    assert job.status is JobStatus.COMPLETED
    assert len(pipeline.speech.calls) == calls  # not one more
    assert not any(k.endswith(second) for k in pipeline.workflow.executions)  # nothing started
    assert job.stats["speech_api_calls"] == 0 and job.stats["upload_cache_hit"] == "L1"
    assert job.stats["chunks"] == pipeline.job(first).stats["chunks"]
    assert pipeline.text(second) == pipeline.text(first)
    for fmt in keys.TRANSCRIPT_FORMATS:
        assert pipeline.store.size(keys.transcript(second, fmt))
    document = json.loads(pipeline.store.get_bytes(keys.transcript(second, "json")))
    assert document["stats"]["upload_cache_hit"] == "L1"


def test_another_language_or_tenant_transcribes_again() -> None:
    pipeline = Pipeline()
    body = SAMPLE.read_bytes()
    pipeline.run(body)
    calls = len(pipeline.speech.calls)
    for language, tenant in [("de", "default"), ("en", "other")]:
        job_id = pipeline.run(body, language=language, tenant=tenant)
        assert "upload_cache_hit" not in pipeline.job(job_id).stats
        assert len(pipeline.speech.calls) > calls
        calls = len(pipeline.speech.calls)


def test_a_known_hash_completes_the_job_at_upload_time_with_no_form() -> None:
    pipeline = Pipeline()
    body = SAMPLE.read_bytes()
    first = pipeline.run(body)
    calls = len(pipeline.speech.calls)
    api = JobService(pipeline.store, pipeline.jobs, pipeline.settings, known=pipeline.cache)
    known = UploadRequest(
        filename="again.flac",
        content_type="audio/flac",
        size_bytes=len(body),
        language="en",
        sha256=hashlib.sha256(body).hexdigest(),
    )

    ticket = api.create_upload(known, tenant_id="default")

    assert ticket.status is JobStatus.COMPLETED and ticket.upload is None
    view = api.status(ticket.job_id, "default")
    assert view is not None and view.status is JobStatus.COMPLETED
    assert set(view.downloads) == set(keys.TRANSCRIPT_FORMATS)
    assert pipeline.text(ticket.job_id) == pipeline.text(first)
    assert pipeline.job(ticket.job_id).stats["upload_cache_hit"] == "L1"
    assert len(pipeline.speech.calls) == calls


def test_an_unknown_hash_or_another_tenant_gets_an_upload_form() -> None:
    pipeline = Pipeline()
    body = SAMPLE.read_bytes()
    pipeline.run(body)
    api = JobService(pipeline.store, pipeline.jobs, pipeline.settings, known=pipeline.cache)
    fields = {"filename": "a.flac", "content_type": "audio/flac", "size_bytes": len(body)}
    cases = [
        ("default", hashlib.sha256(body + b"x").hexdigest(), "en", None),  # another file
        ("other", hashlib.sha256(body).hexdigest(), "en", None),  # another tenant's recording
        ("default", hashlib.sha256(body).hexdigest(), "de", None),  # another language
        ("default", hashlib.sha256(body).hexdigest(), "en", "Grafana"),  # another prompt
    ]
    for tenant, sha256, language, prompt in cases:
        request = UploadRequest.model_validate(
            {**fields, "sha256": sha256, "language": language, "prompt": prompt}
        )
        ticket = api.create_upload(request, tenant_id=tenant)
        assert ticket.status is JobStatus.AWAITING_UPLOAD and ticket.upload is not None
    with pytest.raises(ValidationError):
        UploadRequest.model_validate({**fields, "sha256": "not-a-hash"})


def test_a_job_answered_from_the_cache_calls_its_webhook_too() -> None:
    pipeline = Pipeline()
    body = SAMPLE.read_bytes()
    hook = "https://hooks.example.com/stt"
    first = pipeline.run(body, webhook_url=hook)  # merged
    again = pipeline.run(body, webhook_url=hook)  # answered by the splitter from the cache
    api = JobService(
        pipeline.store,
        pipeline.jobs,
        pipeline.settings,
        known=pipeline.cache,
        announcer=pipeline.announcer,
        webhook_secrets=TenantWebhookSecrets(InMemoryWebhookKeys(), lambda: "signing key"),
    )
    request = UploadRequest(
        filename="again.flac",
        content_type="audio/flac",
        size_bytes=len(body),
        language="en",
        sha256=hashlib.sha256(body).hexdigest(),
        webhook_url=hook,
    )
    known = api.create_upload(request, tenant_id="default").job_id  # answered by the API

    notices = [JobEndNotice.model_validate_json(m.body) for m in pipeline.queues.sent]
    assert [(n.job_id, n.status) for n in notices] == [
        (first, JobStatus.COMPLETED),
        (again, JobStatus.COMPLETED),
        (known, JobStatus.COMPLETED),
    ]
