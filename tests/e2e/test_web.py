"""The web page in a real headless Chromium against the local cloud (moto): pick the sample,
create the upload, POST it to S3 with a progress bar, follow the job, show the transcript and
its downloads. The final page is kept as test-artifacts/web-page.png."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

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
    with LocalPipeline(emulator="moto") as running:
        yield running


def test_page_uploads_follows_and_shows_the_transcript(
    pipeline: LocalPipeline, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        # A persistent context is how Playwright takes a fresh --user-data-dir of our own.
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{pipeline.api_url}/web/#token={pipeline.token()}")
            page.set_input_files("#file", str(SAMPLE))
            page.fill("#language", "en")
            page.click("#start")

            # Either the transcript shows or the page says what went wrong (a slow, loaded
            # machine can take minutes: the speech engine is real).
            page.wait_for_function(
                "!document.querySelector('#result').hidden"
                " || document.querySelector('#error').textContent !== ''",
                timeout=600_000,
            )
            page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)
            assert page.text_content("#error") == ""
            assert page.get_attribute("#upload-progress", "value") == "100"
            assert page.text_content("#job-status") == "COMPLETED"
            transcript = (page.text_content("#transcript") or "").lower()
            expected = SAMPLE.with_suffix(".txt").read_text().lower().split()
            assert sum(word in transcript for word in expected[:20]) >= 15
            links = page.eval_on_selector_all("#downloads a", "as => as.map(a => a.download)")
            assert links == [f"transcript.{f}" for f in ("txt", "json", "srt", "vtt")]
            assert page.locator("#chunks span.DONE").count() >= 1
            assert errors == []
        finally:
            browser.close()


def test_page_shows_why_an_upload_is_refused(pipeline: LocalPipeline, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not audio")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        try:
            page = browser.new_page()
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
        finally:
            browser.close()
