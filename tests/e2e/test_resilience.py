"""The pipeline under load and faults, on ONE moto pipeline: the real handlers in function-host
processes, the cache and the fleet-wide speech limit on real Redis, and the local speech server,
whose own counters (requests, in-flight maximum) are the ground truth.

Each test transcribes its own variant of the sample (another gain), so that the transcript cache
never answers for audio an earlier test already paid for.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sttpipe_testing.audio import read_pcm, scaled, write_wav

from localcloud.cli import SAMPLE
from localcloud.client import PipelineClient
from localcloud.pipeline import LocalPipeline

pytestmark = pytest.mark.e2e

SPEECH_LIMIT = 4
VISIBILITY_CAP_S = 6
READ_TIMEOUT_S = 12


def resilient_pipeline() -> LocalPipeline:
    """A moto pipeline set for faults: short visibility timeouts and heartbeats, more worker
    processes than speech slots, fast retries, short leases (shared with the chaos test)."""
    return LocalPipeline(
        emulator="moto",
        visibility_timeout_cap_s=VISIBILITY_CAP_S,
        parameter_overrides={"ChunkHeartbeatSeconds": "60", "MergeHeartbeatSeconds": "60"},
        # More worker processes than slots, so that the limit (not the host) bounds the calls.
        concurrency={"WorkerFunction": 2 * SPEECH_LIMIT},
        function_env={
            "STT_SPEECH_LIMIT": str(SPEECH_LIMIT),
            # Every job of the sample is four chunks, whatever limit the 429s of an earlier test
            # left the fleet with (the splitter sizes chunks for the limit of the moment).
            "STT_CHUNK_TARGET_S": "16",
            "STT_SPEECH_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
            "STT_HEARTBEAT_INTERVAL_S": "5",
            # A killed worker's leases (fleet slot, single flight) must not outlive a test.
            "STT_SPEECH_LEASE_S": "40",
            "STT_CACHE_LEASE_S": "25",
            "STT_CACHE_LEASE_WAIT_S": "20",
            # Failed deliveries come back after 1 s, then 2 s (30 s, 60 s... in production).
            "STT_RETRY_BACKOFF_BASE_S": "1",
            # A chunk failing on purpose may open the shared circuit; later tests must not wait.
            "STT_SPEECH_BREAKER_COOLDOWN_S": "2",
        },
    )


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    with resilient_pipeline() as running:
        if running.redis_url is None:
            pytest.skip("Redis is not available: the fleet-wide limit cannot be tested")
        yield running


@pytest.fixture
def client(pipeline: LocalPipeline) -> Iterator[PipelineClient]:
    pipeline.speech.control(
        rate_5xx=0.0,
        rate_429=0.0,
        rate_hang=0.0,
        script=[],
        latency_s=0.0,
        retry_after_s=0.2,
        fail_files={},
    )
    pipeline.speech.reset_stats()
    api = PipelineClient(pipeline.api_url, token=pipeline.token())
    yield api
    api.close()


_variants = iter(range(1, 100))


def variant(tmp_path: Path) -> Path:
    """The sample at another gain: the same speech, chunks the cache has never seen."""
    gain = 1.0 - 0.02 * next(_variants)
    path = tmp_path / f"sample-{gain:.2f}.wav"
    write_wav(path, scaled(read_pcm(SAMPLE), gain))
    return path


def submit_all(
    client: PipelineClient, tmp_path: Path, n: int, priority: str = "normal"
) -> list[str]:
    return [
        client.submit(variant(tmp_path), language="en", priority=priority).job_id for _ in range(n)
    ]


def wait_all(
    client: PipelineClient, job_ids: list[str], timeout_s: float = 150
) -> list[dict[str, Any]]:
    return [client.wait(job_id, timeout_s=timeout_s) for job_id in job_ids]


def transcribed(job: dict[str, Any]) -> int:
    return sum(1 for c in job["chunks"] if c["state"] != "SILENT")


def test_a_storm_of_429_and_5xx_never_breaks_the_limit_and_every_job_completes(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path
) -> None:
    # Seeded: the first draws hold both kinds of fault (the rates alone might give no 5xx).
    pipeline.speech.control(rate_429=0.3, rate_5xx=0.1, seed=7, latency_s=0.5)
    jobs = wait_all(client, submit_all(client, tmp_path, 3))

    assert [j["status"] for j in jobs] == ["COMPLETED"] * 3, [j["failure_reason"] for j in jobs]
    stats = pipeline.speech.stats()
    assert 0 < stats["max_in_flight"] <= SPEECH_LIMIT
    assert stats["by_status"].get("429", 0) > 0 and stats["by_status"].get("503", 0) > 0
    assert stats["by_status"]["200"] >= sum(transcribed(j) for j in jobs)


def test_three_jobs_of_four_chunks_never_have_more_than_the_limit_in_flight(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path
) -> None:
    pipeline.speech.control(latency_s=1.0)
    jobs = wait_all(client, submit_all(client, tmp_path, 3))

    assert [j["status"] for j in jobs] == ["COMPLETED"] * 3
    assert all(transcribed(j) == 4 for j in jobs), [transcribed(j) for j in jobs]
    stats = pipeline.speech.stats()
    # Eight worker processes for twelve chunks: only the shared limit keeps this at four.
    assert stats["max_in_flight"] == SPEECH_LIMIT
    assert stats["requests_total"] == 12


def test_a_chunk_delivered_again_while_it_is_transcribed_costs_one_call(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path
) -> None:
    # Each call outlasts the visibility timeout: SQS hands every chunk message to a second
    # worker while the first still waits for the API (at-least-once delivery, for real).
    pipeline.speech.control(latency_s=VISIBILITY_CAP_S + 3)
    (job,) = wait_all(client, submit_all(client, tmp_path, 1))

    assert job["status"] == "COMPLETED", job["failure_reason"]
    assert pipeline.speech.stats()["requests_total"] == transcribed(job)
    worker = pipeline.cloud.host.stats("WorkerFunction")
    assert worker.invocations > transcribed(job)  # the second deliveries did happen
    assert job["progress"]["chunks_finished"] == len(job["chunks"])  # counted once each
    # The result a second delivery took from the cache did not replace the one that paid.
    assert job["stats"]["speech_api_calls"] == transcribed(job)


def test_a_hanging_api_times_out_is_retried_and_the_job_ends_in_bounded_time(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path
) -> None:
    pipeline.speech.control(script=["hang"], hang_s=120)
    started = time.monotonic()
    (job,) = wait_all(client, submit_all(client, tmp_path, 1))

    assert job["status"] == "COMPLETED", job["failure_reason"]
    assert time.monotonic() - started < 120  # not held by the hung request
    stats = pipeline.speech.stats()
    assert stats["requests_total"] == transcribed(job) + 1  # the hung call, then its retry


def test_a_worker_killed_mid_chunk_leaves_the_chunk_to_be_redelivered(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path
) -> None:
    pipeline.speech.control(latency_s=3.0)
    # Counted from here: a request an earlier test left hanging is still in flight.
    pipeline.speech.reset_stats()
    (job_id,) = submit_all(client, tmp_path, 1)
    deadline = time.monotonic() + 60
    while pipeline.speech.stats()["requests_total"] == 0:
        assert time.monotonic() < deadline, "no chunk reached the speech API"
        time.sleep(0.05)
    busy = [i for i in pipeline.cloud.host.pools["WorkerFunction"].instances if i.lock.locked()]
    assert busy, "the worker calling the speech API holds its instance"
    busy[0].kill()  # SIGKILL: no handler code runs, the message is neither deleted nor answered
    job = client.wait(job_id, timeout_s=150)

    assert job["status"] == "COMPLETED", job["failure_reason"]
    assert pipeline.cloud.host.stats("WorkerFunction").errors >= 1


def test_a_chunk_that_always_fails_ends_the_job_partial_and_a_rerun_redoes_only_it(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path
) -> None:
    pipeline.speech.control(fail_files={"00001.flac": 503})
    (job_id,) = submit_all(client, tmp_path, 1)
    job = client.wait(job_id, timeout_s=150)

    assert job["status"] == "PARTIAL", job["failure_reason"]
    assert job["failure_reason"] == "1 chunk(s) failed: 1"
    states = {c["index"]: c["state"] for c in job["chunks"]}
    assert states[1] == "FAILED" and "503" in job["chunks"][1]["error"]
    assert {i for i, state in states.items() if state == "DONE"} == set(states) - {1}
    transcript = client.download(job, tmp_path / "partial")
    assert "[chunk 1 not transcribed" in transcript["txt"].read_text()
    # Given up on its last delivery and put in the DLQ by the worker, with the reason.
    sqs = pipeline.cloud.boto3_client("sqs")
    dlq = pipeline.cloud.stack.ref("ChunkDeadLetterQueueNormal")
    (message,) = _dead_letters_of(sqs, dlq, job_id)
    assert "answered 503" in message["MessageAttributes"]["stt-reason"]["StringValue"]
    sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])

    pipeline.speech.control(fail_files={})
    pipeline.speech.reset_stats()
    assert client.rerun(job_id)["status"] == "TRANSCRIBING"
    job = client.wait(job_id, timeout_s=150)

    assert job["status"] == "COMPLETED", job["failure_reason"]
    assert all(c["state"] in ("DONE", "SILENT") for c in job["chunks"])
    assert pipeline.speech.stats()["requests_total"] == 1  # only the chunk that had failed
    assert job["stats"]["runs"] == 2
    assert "not transcribed" not in client.download(job, tmp_path / "rerun")["txt"].read_text()


def test_a_malformed_message_goes_to_the_dead_letter_queue_without_retries(
    pipeline: LocalPipeline, client: PipelineClient
) -> None:
    sqs = pipeline.cloud.boto3_client("sqs")
    body = json.dumps({"task_token": "t", "job_id": "j", "chunk": {"index": -1}, "extra": 1})
    sqs.send_message(QueueUrl=pipeline.cloud.stack.ref("ChunkQueueNormal"), MessageBody=body)
    dlq = pipeline.cloud.stack.ref("ChunkDeadLetterQueueNormal")
    deadline = time.monotonic() + 30
    while True:
        got = sqs.receive_message(
            QueueUrl=dlq, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
        mine = [m for m in got if m["Body"] == body]
        if mine or time.monotonic() > deadline:
            break
    assert mine, "the malformed message never reached the DLQ"
    # Put there by the worker on its first delivery, not by the redrive after max_receives.
    assert mine[0]["Attributes"]["ApproximateReceiveCount"] == "1"
    assert pipeline.speech.stats()["requests_total"] == 0


def test_a_high_priority_job_behind_low_ones_finishes_first(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path
) -> None:
    pipeline.speech.control(latency_s=1.5)
    # Files made first: a submission is then only an upload, so the high job follows closely.
    files = [variant(tmp_path) for _ in range(5)]
    low = [client.submit(f, language="en", priority="low").job_id for f in files[:4]]
    high = client.submit(files[4], language="en", priority="high").job_id
    finished: dict[str, float] = {}

    def follow(job_id: str) -> None:
        job = client.wait(job_id, timeout_s=150)
        assert job["status"] == "COMPLETED", job["failure_reason"]
        finished[job_id] = time.monotonic()

    threads = [threading.Thread(target=follow, args=(j,)) for j in [*low, high]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    order = sorted(finished, key=finished.__getitem__)
    # The first low job may already be in the speech API when the high one is split; every
    # other low job waits for it (typically none does: high is polled and served first).
    assert order.index(high) <= 1


def _dead_letters_of(sqs: Any, queue_url: str, job_id: str) -> list[dict[str, Any]]:
    """The job's messages in a dead-letter queue, which may hold other tests' messages too."""
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 10
    while not found and time.monotonic() < deadline:
        answer = sqs.receive_message(
            QueueUrl=queue_url,
            MessageAttributeNames=["All"],
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=30,
        )
        for m in answer.get("Messages", []):
            if json.loads(m["Body"]).get("job_id") == job_id:
                found[m["MessageId"]] = m
    return list(found.values())
