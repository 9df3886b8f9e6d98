"""The web page in a real headless Chromium against the local cloud (moto): pick the sample,
create the upload, POST it to S3 with a progress bar, follow the job, show the transcript and
its downloads, and re-run the failed chunk of a PARTIAL job. The final page of the first test is
kept as test-artifacts/web-page.png."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sttpipe_testing.audio import read_pcm, scaled, write_wav

from localcloud.client import PipelineClient
from localcloud.pipeline import LocalPipeline

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "sample.flac"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if CHROMIUM is None:
    pytest.skip(
        "chromium is not installed (apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    # A chunk failed on purpose is given up within seconds (3 deliveries, 1 s and 2 s apart),
    # and the circuit it may open closes again before the next test.
    env = {"STT_RETRY_BACKOFF_BASE_S": "1", "STT_SPEECH_BREAKER_COOLDOWN_S": "2"}
    with LocalPipeline(emulator="moto", function_env=env) as running:
        yield running


@contextmanager
def chromium_page(profile: Path) -> Iterator[Any]:
    """A page in a fresh headless Chromium (a persistent context is how Playwright takes a
    --user-data-dir of our own)."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()


def wait_for_the_outcome(page: Any) -> None:
    """Either the transcript shows or the page says what went wrong (a slow, loaded machine can
    take minutes: the speech engine is real)."""
    page.wait_for_function(
        "!document.querySelector('#result').hidden"
        " || document.querySelector('#error').textContent !== ''",
        timeout=600_000,
    )


def test_page_uploads_follows_and_shows_the_transcript(
    pipeline: LocalPipeline, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page(tmp_path / "profile") as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{pipeline.api_url}/web/#token={pipeline.token()}")
        page.set_input_files("#file", str(SAMPLE))
        page.fill("#language", "en")
        page.click("#start")

        wait_for_the_outcome(page)
        page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)
        assert page.text_content("#error") == ""
        assert page.get_attribute("#upload-progress", "value") == "100"
        assert page.text_content("#job-status") == "COMPLETED"
        transcript = (page.text_content("#transcript") or "").lower()
        expected = SAMPLE.with_suffix(".txt").read_text().lower().split()
        assert sum(word in transcript for word in expected[:20]) >= 15
        links = page.eval_on_selector_all("#downloads a", "as => as.map(a => a.download)")
        assert links == [f"transcript.{f}" for f in ("txt", "json", "srt", "vtt", "tsv")]
        assert page.locator("#chunks span.DONE").count() >= 1
        assert page.is_hidden("#rerun")
        # The recording plays beside its lines, each with the time it starts at.
        assert page.is_visible("#player")
        cues = page.locator("#cues li")
        assert cues.count() >= 2 and page.is_enabled("#cues button.cue >> nth=0")
        assert (page.text_content("#cues button.cue >> nth=0") or "").startswith("00:")
        # And the job is in the tenant's list.
        job_id = page.text_content("#job-id")
        row = page.locator(f"#jobs tr[data-job-id='{job_id}']")
        assert row.count() == 1 and "COMPLETED" in (row.text_content() or "")
        assert errors == []

        # The same recording again: hashed in a Web Worker, known, never uploaded.
        calls = pipeline.speech.stats()["requests_total"]
        first_job = page.text_content("#job-id")
        page.click("#start")
        page.wait_for_function(
            f"document.querySelector('#job-id').textContent !== {first_job!r}", timeout=60_000
        )
        again = page.text_content("#job-id") or ""
        assert page.text_content("#upload-note") == "already transcribed: nothing uploaded"
        assert page.get_attribute("#hash-progress", "value") == "100"
        client = PipelineClient(pipeline.api_url, token=pipeline.token())
        job = client.job(again)
        client.close()
        assert job["status"] == "COMPLETED" and job["stats"]["upload_cache_hit"]
        assert pipeline.speech.stats()["requests_total"] == calls
        assert errors == []

        # A new visit lists both jobs; one picked from the list shows its transcript (its
        # recording is not on this page: the lines keep their times, nothing to play).
        page.goto(f"{pipeline.api_url}/web/#token={pipeline.token()}")
        page.reload()
        # On a cell: the row's own centre may fall between cells, on the table.
        page.click(f"#jobs tr[data-job-id='{first_job}'] td >> nth=0")
        page.wait_for_selector("#result", state="visible", timeout=60_000)
        assert page.text_content("#job-id") == first_job
        assert (
            sum(word in (page.text_content("#transcript") or "").lower() for word in expected[:20])
            >= 15
        )
        assert page.is_hidden("#player") and page.is_disabled("#cues button.cue >> nth=0")
        assert errors == []


def test_page_reruns_the_failed_chunks_of_a_partial_job(
    pipeline: LocalPipeline, tmp_path: Path
) -> None:
    quieter = tmp_path / "quieter.wav"  # audio the cache has not seen
    write_wav(quieter, scaled(read_pcm(SAMPLE), 0.9))
    pipeline.speech.control(fail_files={"00001.flac": 503})
    try:
        with chromium_page(tmp_path / "profile") as page:
            page.goto(f"{pipeline.api_url}/web/#token={pipeline.token()}")
            page.set_input_files("#file", str(quieter))
            page.fill("#language", "en")
            page.click("#start")
            wait_for_the_outcome(page)
            assert page.text_content("#job-status") == "PARTIAL"
            assert page.text_content("#error") == "some chunks failed: 1 chunk(s) failed: 1"
            assert page.locator("#chunks span.FAILED").count() == 1
            assert "[chunk 1 not transcribed" in (page.text_content("#transcript") or "")

            pipeline.speech.control(fail_files={})  # the API recovered
            page.click("#rerun")
            page.wait_for_function(
                "document.querySelector('#job-status').textContent !== 'PARTIAL'"
            )
            wait_for_the_outcome(page)
            assert page.text_content("#error") == ""
            assert page.text_content("#job-status") == "COMPLETED"
            assert page.locator("#chunks span.FAILED").count() == 0
            assert "not transcribed" not in (page.text_content("#transcript") or "")
            assert page.is_hidden("#rerun")
    finally:
        pipeline.speech.control(fail_files={})


def test_page_shows_why_an_upload_is_refused(pipeline: LocalPipeline, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not audio")
    with chromium_page(tmp_path / "profile") as page:
        page.goto(f"{pipeline.api_url}/web/#token=forged.token.value")
        page.set_input_files("#file", str(SAMPLE))
        page.click("#start")
        page.wait_for_function("document.querySelector('#error').textContent !== ''")
        assert page.text_content("#error") == "401: Unauthorized"

        page.goto(f"{pipeline.api_url}/web/#token={pipeline.token()}")
        page.reload()
        page.set_input_files("#file", str(bogus))
        page.click("#start")
        page.wait_for_function("document.querySelector('#error').textContent !== ''")
        assert "422" in (page.text_content("#error") or "")
        assert "content_type" in (page.text_content("#error") or "")
