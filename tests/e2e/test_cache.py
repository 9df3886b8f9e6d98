"""Never paying twice, end to end: the local pipeline on moto with its cache on real Redis (L2) and
PostgreSQL (L3), the real handlers in function-host processes and the local speech server, whose
request counter says how often the speech API was paid.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sttpipe_testing.audio import read_pcm, write_wav

from localcloud import cli
from localcloud.cli import SAMPLE
from localcloud.client import PipelineClient
from localcloud.pipeline import LocalPipeline

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    with LocalPipeline(emulator="moto") as running:  # moto only: LocalStack adds time, not cover
        if running.redis_url is None:
            pytest.skip("Redis is not available: the cache's shared level cannot be tested")
        yield running


@pytest.fixture(scope="module")
def client(pipeline: LocalPipeline) -> Iterator[PipelineClient]:
    api = PipelineClient(pipeline.api_url, token=pipeline.token())
    yield api
    api.close()


@pytest.fixture(scope="module")
def first_run(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, int]:
    """The sample transcribed once: its text and the speech API calls it took."""
    result = client.transcribe(
        SAMPLE, tmp_path_factory.mktemp("first"), language="en", timeout_s=300
    )
    assert result.status == "COMPLETED", result.job.get("failure_reason")
    calls = int(pipeline.speech.stats()["requests_total"])
    assert calls >= 2
    return result.text, calls


def test_the_same_file_uploaded_again_makes_no_speech_api_call(
    pipeline: LocalPipeline, client: PipelineClient, first_run: tuple[str, int], tmp_path: Path
) -> None:
    text, calls = first_run
    again = client.transcribe(SAMPLE, tmp_path, language="en", timeout_s=120)

    assert again.status == "COMPLETED", again.job.get("failure_reason")
    assert pipeline.speech.stats()["requests_total"] == calls  # not one more
    assert again.text == text
    stats = json.loads(again.files["json"].read_text())["stats"]
    assert stats["speech_api_calls"] == 0
    assert stats["upload_cache_hit"] in ("L1", "L2", "L3")
    assert again.job["stats"] == stats
    assert set(again.files) == {"txt", "json", "srt", "vtt", "tsv"}


def test_a_lossless_copy_in_another_container_reuses_every_chunk(
    pipeline: LocalPipeline, client: PipelineClient, first_run: tuple[str, int], tmp_path: Path
) -> None:
    # Same sound, other bytes: the upload key differs, the chunks' canonical PCM does not.
    copy = tmp_path / "sample-copy.wav"
    write_wav(copy, read_pcm(SAMPLE))
    _, calls = first_run
    sent: list[int] = []  # as stt's upload bar counts it: the form POST still has its length
    job_id = client.submit(copy, language="en", on_upload=sent.append).job_id
    result = client.follow(job_id, tmp_path / "out", timeout_s=300)

    assert sum(sent) == copy.stat().st_size
    assert result.status == "COMPLETED", result.job.get("failure_reason")
    assert pipeline.speech.stats()["requests_total"] == calls
    stats = result.job["stats"]
    assert "upload_cache_hit" not in stats  # it was split and its chunks looked up
    assert stats["speech_api_calls"] == 0
    assert sum(stats["cache_hits"].values()) == stats["chunks_transcribed"] >= 2


def test_a_later_local_cloud_on_the_same_namespace_pays_nothing(
    pipeline: LocalPipeline, first_run: tuple[str, int], tmp_path: Path
) -> None:
    # What `stt transcribe` does on every run (LOCAL_CACHE_NAMESPACE): a new local cloud, with
    # its own speech server, database and functions, on the cache the earlier one filled.
    text, _ = first_run
    with LocalPipeline(emulator="moto", cache_namespace=pipeline.cache_namespace) as later:
        api = PipelineClient(later.api_url, token=later.token())
        try:
            again = api.transcribe(SAMPLE, tmp_path, language="en", timeout_s=120)
        finally:
            api.close()
        assert again.status == "COMPLETED", again.job.get("failure_reason")
        assert later.speech.stats()["requests_total"] == 0
        assert again.text == text
    # Kept at its exit (it was named): the module's pipeline still finds its entries.
    assert pipeline.redis_url is not None
    keys = redis.Redis.from_url(pipeline.redis_url).scan_iter(f"{pipeline.cache_namespace}*")
    assert next(keys, None) is not None


def test_stt_transcribes_several_files_into_files_named_after_them(
    pipeline: LocalPipeline,
    first_run: tuple[str, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Known recordings (the cache answers), so that this is about the command, not the engine.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "talk.flac", tmp_path / "b" / "talk.flac"
    first.write_bytes(SAMPLE.read_bytes())
    second.write_bytes(SAMPLE.read_bytes())
    out = tmp_path / "out"
    argv = ["transcribe", str(first), str(second), "--out", str(out), "--output-format", "srt"]
    argv += ["--api", pipeline.api_url, "--token", pipeline.token(), "--language", "en"]

    assert cli.main(argv) == cli.EXIT_OK

    assert sorted(p.name for p in out.iterdir()) == ["talk-2.srt", "talk.srt"]
    text, _ = first_run
    assert capsys.readouterr().out.count(text.strip().split("\n")[0]) == 2  # both texts printed
