"""The whole pipeline on a local cloud: real S3/SQS/Step Functions emulators (moto and LocalStack),
real PostgreSQL, the real handlers in function-host processes, and the local speech server running
faster-whisper. Uploads go through the HTTP API and a pre-signed POST, as a browser sends them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localcloud import cli
from localcloud.cli import SAMPLE, SAMPLE_TEXT, word_error_rate
from localcloud.client import PipelineClient
from localcloud.pipeline import LocalPipeline

pytestmark = pytest.mark.e2e

SRT_CUE = re.compile(r"^(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})$", re.M)

# Short visibility timeouts so that retries and redrive happen within a test; the real ones are
# six times the function timeouts. A chunk still being transcribed may be delivered twice: the
# pipeline must cope (that is part of what these tests check).
VISIBILITY_CAP_S = 6


@pytest.fixture(scope="module", params=["moto", "localstack"])
def pipeline(request: pytest.FixtureRequest) -> Iterator[LocalPipeline]:
    # LocalStack: the session's one (tests/conftest.py); moto: a new one for this module.
    emulator = request.getfixturevalue("localstack") if request.param == "localstack" else "moto"
    with LocalPipeline(
        emulator=emulator,
        visibility_timeout_cap_s=VISIBILITY_CAP_S,
        # A worker that has not answered in 60 s has failed; keeps the failure tests bounded.
        parameter_overrides={"ChunkHeartbeatSeconds": "60", "MergeHeartbeatSeconds": "60"},
        # These tests send the same sample again and again and count speech API calls: with
        # the cache on, every upload after the first would be answered from it
        # (tests/e2e/test_cache.py covers that).
        # The circuit breaker is off here: these tests count the HTTP attempts of every delivery
        # (tests/e2e/test_resilience.py covers the breaker).
        function_env={"STT_CACHE_ENABLED": "false", "STT_SPEECH_BREAKER_FAILURES": "1000"},
    ) as running:
        yield running


@pytest.fixture
def client(pipeline: LocalPipeline) -> Iterator[PipelineClient]:
    pipeline.speech.control(rate_5xx=0.0, rate_429=0.0, rate_hang=0.0, script=[])
    pipeline.speech.reset_stats()
    api = PipelineClient(pipeline.api_url, token=pipeline.token())
    yield api
    api.close()


def _seconds(match: tuple[str, ...]) -> float:
    h, m, s, ms = (int(x) for x in match)
    return h * 3600 + m * 60 + s + ms / 1000


def test_sample_becomes_a_transcript_in_every_format(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path
) -> None:
    result = client.transcribe(SAMPLE, tmp_path, language="en", timeout_s=300)

    assert result.status == "COMPLETED", result.job.get("failure_reason")
    assert word_error_rate(SAMPLE_TEXT.read_text(), result.text) < 0.15
    assert set(result.files) == {"txt", "json", "srt", "vtt", "tsv"}

    document = json.loads(result.files["json"].read_text())
    stats = document["stats"]
    chunks = result.job["chunks"]
    assert stats["chunks"] == len(chunks) >= 2
    assert all(c["state"] in ("DONE", "SILENT") for c in chunks)
    assert result.job["progress"]["chunks_finished"] == len(chunks)
    # Every transcribed chunk cost at least one call. (The short visibility timeouts of these
    # tests can hand a chunk to a second worker while the first still runs, and the cache that
    # stops that from costing a second call is off here: tests/e2e/test_cache.py covers it.)
    transcribed = stats["chunks_transcribed"]
    assert pipeline.speech.stats()["by_status"].get("200", 0) >= transcribed
    assert stats["speech_api_calls"] >= transcribed

    cues = SRT_CUE.findall(result.files["srt"].read_text())
    starts = [_seconds(c[:4]) for c in cues]
    ends = [_seconds(c[4:]) for c in cues]
    assert starts == sorted(starts) and all(s < e for s, e in zip(starts, ends, strict=True))
    assert ends[-1] <= chunks[-1]["end_ms"] / 1000 + 0.001
    assert result.files["vtt"].read_text().startswith("WEBVTT")
    assert result.files["tsv"].read_text().startswith("start\tend\ttext\n")


def test_a_job_without_language_detects_it_once_and_pins_it(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path
) -> None:
    # The local stack has no default language (samconfig.toml): the upload names none.
    result = client.transcribe(SAMPLE, tmp_path, timeout_s=300)

    assert result.status == "COMPLETED", result.job.get("failure_reason")
    document = json.loads(result.files["json"].read_text())
    assert (document["language"], document["language_source"]) == ("en", "detected")
    assert result.job["language"] == "en"
    # The first speech chunk was heard with no language named; every other chunk's call was
    # told the language detected (the Map's messages carry it).
    languages = pipeline.speech.stats()["languages"]
    assert set(languages) == {"", "en"} and languages[""] >= 1
    assert languages["en"] >= document["stats"]["chunks_transcribed"] - 1


def test_chunks_survive_transient_api_errors(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path
) -> None:
    # Two 503s and a 429 for the first calls: the client's retries (or, when one chunk meets
    # all three and runs out of attempts, its message's redelivery) absorb them. How many
    # chunks there are depends on the latency the fleet has learned, so counts are per chunk.
    pipeline.speech.control(script=["5xx", "429", "5xx"], retry_after_s=0.2)
    result = client.transcribe(SAMPLE, tmp_path, language="en", timeout_s=300)
    assert result.status == "COMPLETED", result.job.get("failure_reason")
    by_status = pipeline.speech.stats()["by_status"]
    assert by_status.get("503") == 2 and by_status.get("429") == 1
    stats = json.loads(result.files["json"].read_text())["stats"]
    assert by_status.get("200") == stats["chunks_transcribed"] >= 1  # each chunk, once
    assert stats["speech_api_calls"] >= stats["chunks_transcribed"]


def test_a_cancelled_job_ends_at_once_and_its_late_answers_change_nothing(
    pipeline: LocalPipeline, client: PipelineClient
) -> None:
    pipeline.speech.control(latency_s=3.0)  # slow calls: the job is cancelled with some in flight
    try:
        job_id = client.submit(SAMPLE, language="en").job_id
        deadline = time.monotonic() + 120
        while pipeline.speech.stats()["requests_total"] == 0:
            assert time.monotonic() < deadline, client.job(job_id)["status"]
            time.sleep(0.1)
        assert client.cancel(job_id)
        job = client.job(job_id)
        assert (job["status"], job["failure_reason"]) == ("FAILED", "cancelled by its owner")
        time.sleep(4)  # the calls in flight answer a task nobody waits for any more
        again = client.job(job_id)
        assert (again["status"], again["failure_reason"]) == ("FAILED", "cancelled by its owner")
        assert again["downloads"] == {}  # no merge ran
        assert not client.cancel(job_id)  # 409: it has ended
    finally:
        pipeline.speech.control(latency_s=0.0)


def test_ctrl_c_in_stt_transcribe_cancels_the_job_it_started(
    pipeline: LocalPipeline,
    client: PipelineClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def interrupted(out: object) -> Callable[[dict[str, Any]], None]:
        def on_progress(job: dict[str, Any]) -> None:
            raise KeyboardInterrupt  # the user's Ctrl-C, at the first progress report

        return on_progress

    monkeypatch.setattr(cli, "progress_for", interrupted)
    argv = ["transcribe", str(SAMPLE), "--language", "en", "--out", str(tmp_path)]
    assert cli.main([*argv, "--api", pipeline.api_url, "--token", pipeline.token()]) == 130
    err = capsys.readouterr().err
    (job_id,) = re.findall(r"cancelled job ([0-9a-f]{32})", err)
    assert err.rstrip().endswith("stt: interrupted")
    job = client.job(job_id)
    assert (job["status"], job["failure_reason"]) == ("FAILED", "cancelled by its owner")


def _bucket(pipeline: LocalPipeline) -> str:
    return pipeline.cloud.stack.ref("UploadBucket")


def _direct_upload(pipeline: LocalPipeline, name: str, body: bytes) -> str:
    """Put an object straight into uploads/ (as `aws s3 cp` would); returns its key."""
    key = f"uploads/{name}"
    pipeline.cloud.boto3_client("s3").put_object(Bucket=_bucket(pipeline), Key=key, Body=body)
    return key


def _wait_for_depth(pipeline: LocalPipeline, queue: str, depth: int, timeout_s: float) -> int:
    sqs = pipeline.cloud.boto3_client("sqs")
    url = pipeline.cloud.stack.ref(queue)
    deadline = time.monotonic() + timeout_s
    while True:
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        seen = int(attributes["ApproximateNumberOfMessages"])
        if seen >= depth or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def _wait_for_job_of(client: PipelineClient, filename: str, timeout_s: float = 120) -> dict:
    """The finished job of a direct upload; such jobs belong to the default tenant."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for job in client.list_jobs():
            if job["filename"] == filename and job["status"] in ("COMPLETED", "PARTIAL", "FAILED"):
                return client.job(job["job_id"])
        time.sleep(0.5)
    raise AssertionError(f"no finished job for {filename} within {timeout_s} s")


@pytest.mark.parametrize(
    ("name", "body", "reason"),
    [
        ("empty.wav", b"", "empty"),
        ("noise.mp3", bytes(range(256)) * 64, "not"),
    ],
)
def test_bad_uploads_fail_with_a_clear_reason_and_are_kept(
    pipeline: LocalPipeline, client: PipelineClient, name: str, body: bytes, reason: str
) -> None:
    key = _direct_upload(pipeline, name, body)
    operator = PipelineClient(pipeline.api_url, token=pipeline.token("default"))
    job = _wait_for_job_of(operator, name)
    operator.close()
    assert job["status"] == "FAILED"
    assert reason in job["failure_reason"].lower()
    assert "Traceback" not in job["failure_reason"]
    s3 = pipeline.cloud.boto3_client("s3")
    kept = s3.head_object(Bucket=_bucket(pipeline), Key=key)
    assert kept["ContentLength"] == len(body)
    assert pipeline.speech.stats()["requests_total"] == 0


def test_a_chunk_that_keeps_failing_ends_the_job_with_its_reason(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path
) -> None:
    pipeline.speech.control(rate_5xx=1.0)
    job_id = client.submit(SAMPLE, language="en").job_id
    job = client.wait(job_id, timeout_s=240)
    assert job["status"] == "FAILED"
    assert "could not be transcribed" in job["failure_reason"]
    assert "503" in job["failure_reason"]
    assert all(c["state"] == "FAILED" for c in job["chunks"] if c["state"] != "SILENT")
    # Each chunk message was received exactly max_receives times and then left alone (DLQ).
    attempts = pipeline.speech.stats()["requests_total"]
    transcribable = sum(1 for c in job["chunks"] if c["state"] != "SILENT")
    assert attempts == transcribable * 3 * 3  # 3 deliveries x 3 HTTP attempts each
    # The function host keeps polling, so SQS moves each exhausted message to the DLQ.
    dead = _wait_for_depth(
        pipeline, "ChunkDeadLetterQueueNormal", transcribable, 6 * VISIBILITY_CAP_S
    )
    assert dead == transcribable
