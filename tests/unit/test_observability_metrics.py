"""Every STT metric that template.yaml's dashboard and alarms read is emitted by the code, under
the same name and the same dimensions.

The emitted side is not read from the source: the splitter, worker and merge handlers run a
real recording (samples/sample.flac) through the real services on in-memory adapters, and the
EMF records Powertools prints are collected. A metric renamed in observability.py, a dimension
added, dropped or renamed in the code, or a `service` name changed in the template, makes the
dashboard read a series nobody writes, and this test fail.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws
from sttpipe_testing.fakes import (
    FakeTranscriber,
    InMemoryEventPublisher,
    InMemoryJobRepository,
    InMemoryMessageQueues,
    InMemoryObjectStore,
    InMemoryWorkflow,
    started_run,
)

from localcloud.runtime import LambdaContext
from localcloud.template import PseudoParameters, Template
from sttpipe import bootstrap
from sttpipe.adapters.eventbridge import EventBridgePublisher
from sttpipe.adapters.metrics import cache_metric_sink
from sttpipe.cache import TieredCache, TieredTranscriptCache
from sttpipe.cache.memory import MemoryCache
from sttpipe.config import get_settings
from sttpipe.domain.models import (
    ChunkOutcome,
    ChunkTask,
    ExecutionInput,
    Job,
    JobFailureNotice,
    JobStatus,
    MergeTask,
    Priority,
    TaskError,
)
from sttpipe.domain.transcripts import CacheLevel
from sttpipe.observability import NAMESPACE, SIZE_CLASSES, Dimension, Metric
from sttpipe.services.deliveries import ChunkDeliveryService
from sttpipe.services.event_metrics import EventMetrics
from sttpipe.services.lifecycle import FanOut, PublishingJobRepository
from sttpipe.services.merging import MergeService
from sttpipe.services.reconciling import ReconcilerService
from sttpipe.services.splitting import SplitterService
from sttpipe.services.transcribing import WorkerService
from sttpipe.speech.base import AuthenticationError, PermanentSpeechError, Transcriber
from sttpipe.speech.breaker import BreakingTranscriber, CircuitBreaker
from sttpipe.speech.cloudru import CloudRuTranscriber
from sttpipe.speech.metered import MeteredTranscriber, throttle_counter

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
QUEUE_URLS = {p: f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/stt-{p.value}" for p in Priority}

# Dimensions whose values come from a closed set: any member matches the template's choice.
VALUE_DOMAINS: dict[str, set[str]] = {
    Dimension.PRIORITY: {p.value for p in Priority},
    Dimension.LEVEL: {level.value for level in CacheLevel},
    Dimension.SIZE_CLASS: {name for _, name in SIZE_CLASSES},
}

Series = tuple[str, frozenset[tuple[str, str]]]


def series(name: str, dimensions: dict[str, str]) -> Series:
    return name, frozenset(
        (k, "*" if v in VALUE_DOMAINS.get(k, ()) else v) for k, v in dimensions.items()
    )


# ---- what the template reads -------------------------------------------------------------------


def template_resources() -> dict[str, Any]:
    pseudo = PseudoParameters(stack_name="s", region="us-east-1", account_id=ACCOUNT)
    resources: dict[str, Any] = Template(
        ROOT / "template.yaml",
        pseudo,
        {"DatabaseSecretArn": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:db"},
    ).doc["Resources"]
    return resources


def dashboard_series(body: str) -> set[Series]:
    found: set[Series] = set()
    # ${Resource.Attr} placeholders sit inside JSON strings; any text will do for parsing.
    for widget in json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]:
        for row in widget.get("properties", {}).get("metrics", []):
            fields = [f for f in row if not isinstance(f, dict)]  # a trailing dict: options
            if not fields:
                continue  # a math expression
            assert "." not in fields, f"write rows out in full, no '.' shorthand: {row}"
            namespace, name, *pairs = fields
            if namespace == NAMESPACE:
                found.add(series(name, dict(zip(pairs[::2], pairs[1::2], strict=True))))
    return found


def alarm_series(props: dict[str, Any]) -> set[Series]:
    metrics = [props] if "MetricName" in props else []
    metrics += [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m]
    return {
        series(m["MetricName"], {d["Name"]: d["Value"] for d in m.get("Dimensions", [])})
        for m in metrics
        if m["Namespace"] == NAMESPACE
    }


@pytest.fixture(scope="module")
def referenced() -> dict[str, set[Series]]:
    """Logical id of each dashboard and alarm -> the STT series it reads."""
    out: dict[str, set[Series]] = {}
    for lid, res in template_resources().items():
        if res["Type"] == "AWS::CloudWatch::Dashboard":
            body = res["Properties"]["DashboardBody"]
            out[lid] = dashboard_series(body["Fn::Sub"] if isinstance(body, dict) else body)
        elif res["Type"] == "AWS::CloudWatch::Alarm":
            out[lid] = alarm_series(res["Properties"])
    return out


# ---- what the code emits -----------------------------------------------------------------------


def load_handler(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"{name}_app", ROOT / "functions" / name / "app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sqs_event(body: str, queue_arn: str) -> dict[str, Any]:
    """One SQS record as Lambda delivers it (shape of the files in events/)."""
    record = json.loads((ROOT / "events" / "worker-chunk.json").read_text())["Records"][0]
    record.update(messageId=uuid.uuid4().hex, body=body, eventSourceARN=queue_arn)
    record["attributes"]["SentTimestamp"] = str(int(time.time() * 1000) - 1500)
    return {"Records": [record]}


def context(function: str) -> LambdaContext:
    return LambdaContext(
        function_name=function,
        function_version="$LATEST",
        invoked_function_arn=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{function}",
        memory_limit_in_mb=512,
        aws_request_id=uuid.uuid4().hex,
        log_group_name=f"/aws/lambda/{function}",
        log_stream_name="test",
        deadline_ms=int(time.time() * 1000) + 300_000,
    )


def emf_series(output: str) -> set[Series]:
    found: set[Series] = set()
    for line in output.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == NAMESPACE
            for dimension_set in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    found.add(series(metric["Name"], {d: blob[d] for d in dimension_set}))
    return found


def throttling_speech_api() -> Transcriber:
    """The real Cloud.ru client on a scripted transport (no speech API here): a 429, then text.

    Its response hook is the one bootstrap installs on the production client."""
    answers = iter([429, 200] * 100)

    def respond(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status == 429:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"error": "slow down"})
        return httpx.Response(200, json={"text": "hello from the sample"})

    client = httpx.Client(
        base_url="https://speech.invalid/v1",
        transport=httpx.MockTransport(respond),
        event_hooks={"response": [throttle_counter(bootstrap.metric_recorder())]},
    )
    return CloudRuTranscriber(client, model="m", api_key=lambda: "key", sleep=lambda _: None)


class _Capture:
    """Stands in for capsys in a module-scoped fixture: collects what is printed."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        self._parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return "".join(self._parts)


class Run:
    """Two uploads of the sample (the second is served from the cache) and a bad upload, through
    the three handlers; chunk 0 of the first upload fails for good; chunks come from all three
    priority queues; the event bus does not exist (events are counted as not published)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capture: _Capture) -> None:
        self.monkeypatch, self.capture = monkeypatch, capture
        record = bootstrap.metric_recorder()
        self.store = InMemoryObjectStore()
        self.workflow = InMemoryWorkflow()
        self.events = InMemoryEventPublisher()
        bus = EventBridgePublisher("no-such-bus", record, boto3.client("events"))
        self.job_rows = InMemoryJobRepository()
        self.jobs = PublishingJobRepository(
            self.job_rows, FanOut(EventMetrics(record), self.events, bus)
        )
        self.settings = get_settings()
        cache = TieredTranscriptCache(
            TieredCache(l1=MemoryCache(1 << 20, 60.0), emit=cache_metric_sink(record)),
            namespace="test",
            model="m",
            response_format="json",
        )
        failing_first = FakeTranscriber(
            [PermanentSpeechError("HTTP 400: bad audio")], default="hello from the sample"
        )
        transcriber = MeteredTranscriber(failing_first, record)
        self.worker = WorkerService(
            self.store, self.jobs, self.workflow, transcriber, self.settings, cache
        )
        self.speech_api = MeteredTranscriber(throttling_speech_api(), record)

    def invoke(self, name: str, service: str, event: dict[str, Any], **patches: Any) -> None:
        self.monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", service)
        module = load_handler(name)
        for attr, value in patches.items():
            self.monkeypatch.setattr(module, attr, value)
        response = module.handler(event, context(name))
        if "Records" in event:
            assert response == {"batchItemFailures": []}

    def upload(self, data: bytes) -> str:
        job_id = uuid.uuid4().hex
        key = f"uploads/{job_id}/sample.flac"
        now = datetime.now(UTC)
        self.jobs.add(
            Job(
                job_id=job_id,
                filename="sample.flac",
                upload_key=key,
                created_at=now,
                updated_at=now,
            )
        )
        self.store.put_bytes(key, data, "audio/flac")
        notification = json.loads((ROOT / "events" / "splitter-upload.json").read_text())
        body = json.loads(notification["Records"][0]["body"])
        body["Records"][0]["s3"]["object"]["key"] = key
        splitter = SplitterService(self.store, self.jobs, self.workflow, self.settings)
        self.invoke(
            "splitter",
            "splitter",
            sqs_event(json.dumps(body), "arn:aws:sqs:us-east-1:1:uploads"),
            splitter_service=lambda: splitter,
        )
        return job_id

    def execution(self, job_id: str) -> ExecutionInput:
        return next(
            started_run(self.store, i)
            for i in self.workflow.executions.values()
            if json.loads(i)["job_id"] == job_id
        )

    def transcribe_and_merge(self, job_id: str, worker: WorkerService) -> None:
        execution = self.execution(job_id)
        deliveries = ChunkDeliveryService(
            worker, InMemoryMessageQueues(), self.settings, bootstrap.metric_recorder()
        )
        results = []
        for n, chunk in enumerate(execution.chunks):
            token = self.workflow.open_task()
            task = ChunkTask(task_token=token, job_id=job_id, language="en", chunk=chunk)
            priority = list(Priority)[n % len(Priority)]
            queue_arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:stt-{priority.value}"
            self.invoke(
                "worker",
                "worker",
                sqs_event(task.model_dump_json(), queue_arn),
                chunk_delivery_service=lambda: deliveries,
            )
            answer = self.workflow.answers[token]
            results.append(
                ChunkOutcome.model_validate_json(answer.output or "")
                if answer.succeeded
                else ChunkOutcome(
                    index=chunk.index,
                    error=TaskError(Error=answer.error or "", Cause=answer.cause),
                )
            )
        merge = MergeService(self.store, self.jobs, self.workflow)
        merge_task = MergeTask(task_token=self.workflow.open_task(), job_id=job_id, results=results)
        self.invoke(
            "merge",
            "merge",
            sqs_event(merge_task.model_dump_json(), "arn:aws:sqs:us-east-1:1:merge"),
            merge_service=lambda: merge,
        )

    def refuse_the_key(self, job_id: str) -> None:
        """A chunk whose call the API refuses for the key: deferred, the fleet paused."""
        refused = FakeTranscriber([AuthenticationError("HTTP 401: bad key", status_code=401)])
        breaker = CircuitBreaker(failures=5, cooldown_s=60)
        api = BreakingTranscriber(MeteredTranscriber(refused, bootstrap.metric_recorder()), breaker)
        worker = WorkerService(self.store, self.jobs, self.workflow, api, self.settings)
        queues = InMemoryMessageQueues()
        deliveries = ChunkDeliveryService(
            worker, queues, self.settings, bootstrap.metric_recorder()
        )
        execution = self.execution(job_id)
        task = ChunkTask(
            task_token=self.workflow.open_task(), job_id=job_id, chunk=execution.chunks[0]
        )
        self.invoke(
            "worker",
            "worker",
            sqs_event(task.model_dump_json(), f"arn:aws:sqs:us-east-1:{ACCOUNT}:stt-high"),
            chunk_delivery_service=lambda: deliveries,
        )
        assert breaker.is_open and queues.sent, "the chunk was not deferred"

    def everything(self) -> set[Series]:
        sample = (ROOT / "samples" / "sample.flac").read_bytes()
        first = self.upload(sample)
        self.transcribe_and_merge(first, self.worker)
        # Same recording again: every chunk is now in the cache (L1).
        second = self.upload(sample)
        self.transcribe_and_merge(second, self.worker)
        # A third copy on the throttled client, with a cache that has not seen it.
        third = self.upload(sample)
        fresh = WorkerService(self.store, self.jobs, self.workflow, self.speech_api, self.settings)
        self.transcribe_and_merge(third, fresh)
        self.refuse_the_key(self.upload(sample))
        self.upload(b"this is not audio at all")
        notice = JobFailureNotice(job_id=third, error=TaskError(Error="States.Runtime"))
        merge = MergeService(self.store, self.jobs, self.workflow)
        self.invoke(
            "merge",
            "merge",
            sqs_event(notice.model_dump_json(), "arn:aws:sqs:us-east-1:1:merge"),
            merge_service=lambda: merge,
        )
        self.reconcile(self.upload(sample))
        return emf_series(self.capture.text())

    def reconcile(self, split_job: str) -> None:
        """One stuck job of each kind the reconciler repairs: resumed and ended."""
        # A split whose execution never started (as an older splitter could leave it).
        self.workflow.statuses = {
            arn: status
            for arn, status in self.workflow.statuses.items()
            if not arn.endswith(split_job)
        }
        self.job_rows.age(split_job, 600)
        never_split = uuid.uuid4().hex
        now = datetime.now(UTC)
        self.jobs.add(
            Job(
                job_id=never_split,
                filename="lost.flac",
                upload_key=f"uploads/{never_split}/lost.flac",
                status=JobStatus.SPLITTING,
                created_at=now,
                updated_at=now,
            )
        )
        self.job_rows.age(never_split, 86_400)
        reconciler = ReconcilerService(
            self.store, self.jobs, self.workflow, self.settings, record=bootstrap.metric_recorder()
        )
        self.invoke(
            "reconciler",
            "reconciler",
            json.loads((ROOT / "events" / "reconciler-schedule.json").read_text()),
            reconciler_service=lambda: reconciler,
        )
        report = reconciler.reconcile()  # a second run finds nothing left to repair
        assert (report.resumed, report.ended) == ([], [])


@pytest.fixture(scope="module")
def emitted() -> set[Series]:
    with pytest.MonkeyPatch.context() as monkeypatch, mock_aws():
        # moto stands in for EventBridge only to refuse the unknown bus.
        for name, value in {
            "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "AWS_DEFAULT_REGION": "us-east-1",
            **{f"STT_QUEUE_URL_{p.name}": url for p, url in QUEUE_URLS.items()},
        }.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        bootstrap.container.cache_clear()
        capture = _Capture()
        monkeypatch.setattr("sys.stdout", capture)
        try:
            return Run(monkeypatch, capture).everything()
        finally:
            get_settings.cache_clear()
            bootstrap.container.cache_clear()


# ---- the promises ------------------------------------------------------------------------------


def test_the_template_reads_stt_metrics_from_a_dashboard_and_alarms(
    referenced: dict[str, set[Series]],
) -> None:
    dashboards = [lid for lid in referenced if "Dashboard" in lid]
    assert dashboards, "no CloudWatch dashboard in template.yaml"
    names = {name for found in referenced.values() for name, _ in found}
    assert names <= {m.value for m in Metric}, "a name that is not in observability.Metric"
    # The panels and alarms, by their metric.
    for wanted in (
        "ChunkDuration",
        "JobDuration",
        "CacheHits",
        "CacheMisses",
        "QueueWait",
        "ChunksFailed",
        "SpeechApiThrottled",
    ):
        assert wanted in names


def test_every_series_the_dashboard_and_alarms_read_is_emitted(
    referenced: dict[str, set[Series]], emitted: set[Series]
) -> None:
    missing = {
        lid: sorted((name, sorted(dims)) for name, dims in found - emitted)
        for lid, found in referenced.items()
        if found - emitted
    }
    assert not missing, (
        f"read by the template but never emitted: {missing}\nemitted: {sorted(emitted)}"
    )


def test_the_run_emitted_each_dimension_value_it_was_meant_to(emitted: set[Series]) -> None:
    """Guards the run itself: the wildcarded values above really occurred."""
    assert series("CacheHits", {"Level": "L1", "service": "worker"}) in emitted
    assert series("QueueWait", {"Priority": "high", "service": "worker"}) in emitted
    assert series("SpeechApiThrottled", {"service": "worker"}) in emitted
    assert series("SpeechApiKeyRefused", {"service": "worker"}) in emitted
    for repair in ("resumed", "ended"):
        assert series("JobsRepaired", {"Repair": repair, "service": "reconciler"}) in emitted
    assert series("EventsNotPublished", {"service": "splitter"}) in emitted
    assert series("JobDuration", {"SizeClass": "under5min", "service": "merge"}) in emitted


def test_a_drifted_series_is_not_taken_for_an_emitted_one(emitted: set[Series]) -> None:
    assert series("ChunkDuration", {"Priority": "urgent", "service": "worker"}) not in emitted
    assert series("ChunkDuration", {"Priority": "high"}) not in emitted
    assert series("CacheHit", {"Level": "L1", "service": "worker"}) not in emitted
