"""The web page in a real headless Chromium against the local cloud (moto): pick the sample,
create the upload, POST it to S3 with a progress bar, follow the job on its chunk timeline, show
the transcript and its downloads, play the recording from a line with the line playing marked,
re-run the failed chunk of a PARTIAL job, cancel a running job and delete it; sign in through
a stand-in for Cognito's hosted UI (authorization code with PKCE). Each test keeps a
PNG of every page state it checks in test-artifacts/screenshots/ (its path is printed)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sttpipe_testing.audio import read_pcm, scaled, write_wav
from sttpipe_testing.hosted_ui import HostedUi

from localcloud.client import PipelineClient
from localcloud.cloud import DEFAULT_TEMPLATE
from localcloud.pipeline import LocalPipeline
from localcloud.template import load_template_document

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "sample.flac"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
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


def local_csp() -> str:
    """The Content-Security-Policy CloudFront serves the page with (template.yaml's
    WebHeadersPolicy), but for connect-src: here the API, S3 (moto) and the hosted UI's
    stand-in are all on 127.0.0.1."""
    document = load_template_document(DEFAULT_TEMPLATE)
    headers = document["Resources"]["WebHeadersPolicy"]["Properties"]
    config = headers["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    text, _ = config["ContentSecurityPolicy"]["ContentSecurityPolicy"]["Fn::Sub"]
    directives = [d for d in text.split("; ") if not d.startswith("connect-src ")]
    return "; ".join([*directives, "connect-src 'self' http://127.0.0.1:*"])


@pytest.fixture(scope="module")
def pipeline() -> Iterator[LocalPipeline]:
    # A chunk failed on purpose is given up within seconds (3 deliveries, 1 s and 2 s apart),
    # and the circuit it may open closes again before the next test.
    env = {"STT_RETRY_BACKOFF_BASE_S": "1", "STT_SPEECH_BREAKER_COOLDOWN_S": "2"}
    with LocalPipeline(emulator="moto", function_env=env) as running:
        # Every page here runs under the deployed page's CSP (chromium_page fails a test that
        # breaks it).
        running.cloud.gateway.web_headers = {"content-security-policy": local_csp()}
        yield running


@pytest.fixture(scope="module")
def client(pipeline: LocalPipeline) -> Iterator[PipelineClient]:
    api = PipelineClient(pipeline.api_url, token=pipeline.token())
    yield api
    api.close()


Screenshot = Callable[[Any, str], None]


@pytest.fixture
def screenshot(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Screenshot:
    """Keeps the page as test-artifacts/screenshots/<test>-<state>.png, taken before the state
    is checked so that a failing test leaves it too, and prints where it is."""

    def keep(page: Any, state: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{request.node.name.removeprefix('test_')}-{state}.png"
        page.screenshot(path=str(path), full_page=True)
        with capsys.disabled():
            print(f"\nscreenshot: {path}")

    return keep


@contextmanager
def chromium_page(profile: Path) -> Iterator[Any]:
    """A page in a fresh headless Chromium (a persistent context is how Playwright takes a
    --user-data-dir of our own); what its Content-Security-Policy refused fails the test."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        refused: list[str] = []
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda m: "Content Security Policy" in m.text and refused.append(m.text),
            )
            yield page
            assert refused == []
        finally:
            browser.close()


def wait_for_the_outcome(page: Any) -> None:
    """Either the transcript shows or the page says what went wrong (a slow, loaded machine can
    take minutes: the speech engine is real)."""
    page.wait_for_function(
        "() => !document.querySelector('#result').hidden"
        " || document.querySelector('#error').textContent !== ''",
        timeout=600_000,
    )


def assert_the_timeline_shows(page: Any, chunks: list[dict[str, Any]]) -> None:
    """Each chunk spans its share of the recording, in its state's colour (the legend's)."""
    drawn = page.eval_on_selector_all(
        "#chunks li",
        """items => items.map(item => {
            const bar = item.parentElement.getBoundingClientRect();
            const box = item.getBoundingClientRect();
            return {state: item.dataset.state, colour: getComputedStyle(item).backgroundColor,
                    from: (box.left - bar.left) / bar.width,
                    to: (box.right - bar.left) / bar.width};
        })""",
    )
    legend = page.eval_on_selector_all(
        "#chunk-legend [data-state]",
        "keys => Object.fromEntries(keys.map("
        "  key => [key.dataset.state, getComputedStyle(key).backgroundColor]))",
    )
    assert len(set(legend.values())) == len(legend) == 4  # PENDING, DONE, SILENT, FAILED
    length = max(c["end_ms"] for c in chunks)
    assert [d["state"] for d in drawn] == [c["state"] for c in chunks]
    for shown, chunk in zip(drawn, chunks, strict=True):
        assert shown["from"] == pytest.approx(chunk["start_ms"] / length, abs=0.01)
        assert shown["to"] == pytest.approx(chunk["end_ms"] / length, abs=0.01)
        assert shown["colour"] == legend[chunk["state"]]


def listed(page: Any, job_id: str) -> tuple[str, str, list[int] | None]:
    """The job's status, progress text and progress bar (value, max) in the list of jobs."""
    row = f"#jobs tr[data-job-id='{job_id}']"
    page.wait_for_selector(row)
    status, progress = (page.text_content(f"{row} td >> nth={i}") or "" for i in (1, 2))
    bar = page.locator(f"{row} progress")
    shown = bar.evaluate("b => [b.value, b.max]") if bar.count() else None
    return status, progress.strip(), shown


def settled(chunks: list[dict[str, Any]]) -> int:
    return sum(c["state"] in ("DONE", "SILENT") for c in chunks)


def wait_until_marked(page: Any, segments: list[dict[str, Any]], line: int) -> None:
    """Until the line marked playing is `line`, the one the player's time falls in."""
    page.wait_for_function(
        """([segments, line]) => {
            const now = document.querySelector('#player').currentTime;
            const marked = [...document.querySelectorAll('#cues button.cue')]
                .flatMap((cue, i) => cue.getAttribute('aria-current') === 'true' ? [i] : []);
            const playing = segments.findIndex(s => s.start <= now && now < s.end);
            return playing === line && marked.length === 1 && marked[0] === line;
        }""",
        arg=[segments, line],
        timeout=10_000,
    )


def test_page_uploads_follows_and_shows_the_transcript(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path, screenshot: Screenshot
) -> None:
    with chromium_page(tmp_path / "profile") as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{pipeline.api_url}/web/#token={pipeline.token()}")
        page.set_input_files("#file", str(SAMPLE))
        page.fill("#language", "en")
        page.click("#start")

        wait_for_the_outcome(page)
        screenshot(page, "transcript")
        assert page.text_content("#error") == ""
        assert page.get_attribute("#upload-progress", "value") == "100"
        assert page.text_content("#job-status") == "COMPLETED"
        transcript = (page.text_content("#transcript") or "").lower()
        expected = SAMPLE.with_suffix(".txt").read_text().lower().split()
        assert sum(word in transcript for word in expected[:20]) >= 15
        links = page.eval_on_selector_all("#downloads a", "as => as.map(a => a.download)")
        assert links == [f"transcript.{f}" for f in ("txt", "json", "srt", "vtt", "tsv")]
        for href in page.eval_on_selector_all("#downloads a", "as => as.map(a => a.href)"):
            assert page.request.get(href).body()  # each one downloads
        job_id = page.text_content("#job-id") or ""
        chunks = client.job(job_id)["chunks"]
        assert len(chunks) >= 2
        assert_the_timeline_shows(page, chunks)
        assert page.is_hidden("#rerun") and page.is_hidden("#cancel") and page.is_visible("#delete")
        # The recording plays beside its lines, each with the time it starts at.
        assert page.is_visible("#player")
        cue = "#cues button.cue >> nth={}".format
        assert page.is_enabled(cue(0)) and (page.text_content(cue(0)) or "").startswith("00:")
        json_url = page.get_attribute("#downloads a[download='transcript.json']", "href")
        segments = page.evaluate(
            "url => fetch(url).then(r => r.json()).then(t => t.segments)", json_url
        )
        assert page.locator("#cues button.cue").count() == len(segments) >= 3
        # A line plays from its start, from the keyboard or a click, and is marked playing.
        page.focus(cue(2))
        page.keyboard.press("Enter")
        wait_until_marked(page, segments, 2)
        page.click(cue(1))
        wait_until_marked(page, segments, 1)
        # Sought, the mark follows; played on, it moves to the next line as that one starts.
        page.evaluate(
            "t => { const p = document.querySelector('#player'); p.pause(); p.currentTime = t }",
            segments[-1]["start"] + 0.2,
        )
        wait_until_marked(page, segments, len(segments) - 1)
        page.evaluate(
            "t => { const p = document.querySelector('#player'); p.currentTime = t; p.play() }",
            segments[1]["start"] - 0.3,
        )
        wait_until_marked(page, segments, 1)
        screenshot(page, "line-playing")
        assert not page.evaluate("document.querySelector('#player').paused")
        assert (page.text_content("#cues [aria-current=true]") or "").endswith(segments[1]["text"])
        page.evaluate("document.querySelector('#player').pause()")
        # And the job is in the tenant's list.
        total = len(chunks)
        assert listed(page, job_id) == ("COMPLETED", f"{total}/{total}", [total, total])
        assert errors == []

        # The same recording again: hashed in a Web Worker, known, never uploaded.
        calls = pipeline.speech.stats()["requests_total"]
        first_job = page.text_content("#job-id")
        page.click("#start")
        page.wait_for_function(
            f"() => document.querySelector('#job-id').textContent !== {first_job!r}",
            timeout=60_000,
        )
        again = page.text_content("#job-id") or ""
        screenshot(page, "known-recording")
        assert page.text_content("#upload-note") == "already transcribed: nothing uploaded"
        assert page.get_attribute("#hash-progress", "value") == "100"
        job = client.job(again)
        assert job["status"] == "COMPLETED" and job["stats"]["upload_cache_hit"]
        assert pipeline.speech.stats()["requests_total"] == calls
        assert errors == []

        # A new visit lists both jobs; one picked from the list shows its transcript (its
        # recording is not on this page: the lines keep their times, nothing to play).
        page.goto(f"{pipeline.api_url}/web/#token={pipeline.token()}")
        page.reload()
        page.focus(f"#jobs tr[data-job-id='{first_job}'] button")  # from the keyboard
        page.keyboard.press("Enter")
        page.wait_for_selector("#result", state="visible", timeout=60_000)
        screenshot(page, "picked-from-the-list")
        assert page.text_content("#job-id") == first_job
        assert (
            sum(word in (page.text_content("#transcript") or "").lower() for word in expected[:20])
            >= 15
        )
        assert page.is_hidden("#player") and page.is_disabled("#cues button.cue >> nth=0")
        assert errors == []


def test_page_reruns_the_failed_chunks_of_a_partial_job(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path, screenshot: Screenshot
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
            screenshot(page, "partial")
            assert page.text_content("#job-status") == "PARTIAL"
            assert page.text_content("#error") == "some chunks failed: 1 chunk(s) failed: 1"
            job_id = page.text_content("#job-id") or ""
            chunks = client.job(job_id)["chunks"]
            assert [c["index"] for c in chunks if c["state"] == "FAILED"] == [1]
            assert_the_timeline_shows(page, chunks)
            assert "[chunk 1 not transcribed" in (page.text_content("#transcript") or "")
            total = len(chunks)
            assert listed(page, job_id) == ("PARTIAL", f"{total - 1}/{total}", [total - 1, total])

            pipeline.speech.control(fail_files={})  # the API recovered
            page.click("#rerun")
            page.wait_for_function(
                "() => document.querySelector('#job-status').textContent !== 'PARTIAL'"
            )
            wait_for_the_outcome(page)
            screenshot(page, "re-run")
            assert page.text_content("#error") == ""
            assert page.text_content("#job-status") == "COMPLETED"
            chunks = client.job(job_id)["chunks"]
            assert "FAILED" not in {c["state"] for c in chunks}
            assert_the_timeline_shows(page, chunks)
            assert "not transcribed" not in (page.text_content("#transcript") or "")
            assert page.is_hidden("#rerun")
    finally:
        pipeline.speech.control(fail_files={})


def test_page_shows_why_an_upload_is_refused(
    pipeline: LocalPipeline, tmp_path: Path, screenshot: Screenshot
) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not audio")
    with chromium_page(tmp_path / "profile") as page:
        page.goto(f"{pipeline.api_url}/web/#token=forged.token.value")
        page.set_input_files("#file", str(SAMPLE))
        page.click("#start")
        page.wait_for_function("() => document.querySelector('#error').textContent !== ''")
        screenshot(page, "unauthorized")
        assert page.text_content("#error") == "401: Unauthorized"

        page.goto(f"{pipeline.api_url}/web/#token={pipeline.token()}")
        page.reload()
        page.set_input_files("#file", str(bogus))
        page.click("#start")
        page.wait_for_function("() => document.querySelector('#error').textContent !== ''")
        screenshot(page, "not-audio")
        assert "422" in (page.text_content("#error") or "")
        assert "content_type" in (page.text_content("#error") or "")


def test_page_cancels_a_running_job_then_deletes_it_once_confirmed(
    pipeline: LocalPipeline, client: PipelineClient, tmp_path: Path, screenshot: Screenshot
) -> None:
    softer = tmp_path / "softer.wav"  # audio the cache has not seen
    write_wav(softer, scaled(read_pcm(SAMPLE), 0.8))
    pipeline.speech.control(latency_s=3.0)  # slow calls: the job is still running when cancelled
    try:
        with chromium_page(tmp_path / "profile") as page:
            page.goto(f"{pipeline.api_url}/web/#token={pipeline.token()}")
            page.set_input_files("#file", str(softer))
            page.fill("#language", "en")
            page.click("#start")
            page.wait_for_function(
                "() => document.querySelector('#job-status').textContent === 'TRANSCRIBING'",
                timeout=120_000,
            )
            screenshot(page, "running")
            job_id = page.text_content("#job-id") or ""
            assert page.is_visible("#cancel") and page.is_hidden("#delete")
            page.click("#refresh-jobs")  # a running job's progress is listed from its status
            total = len(client.job(job_id)["chunks"])
            status, _, bar = listed(page, job_id)
            assert status == "TRANSCRIBING" and bar is not None and bar[1] == total
            page.click("#cancel")
            wait_for_the_outcome(page)
            screenshot(page, "cancelled")
            assert page.text_content("#error") == "the job failed: cancelled by its owner"
            assert page.text_content("#job-status") == "FAILED"
            assert page.is_hidden("#cancel") and page.is_visible("#delete")

            # Once the calls in flight have answered (a task nobody waits for any more), the
            # job opened from the list shows the chunks as they stay.
            time.sleep(4)
            page.click("#refresh-jobs")
            row = f"#jobs tr[data-job-id='{job_id}']"
            page.wait_for_function(
                f"() => document.querySelector(\"{row}\")?.textContent.includes('FAILED')"
            )
            page.click(f"{row} button")
            page.wait_for_function("() => document.querySelector('#error').textContent !== ''")
            chunks = client.job(job_id)["chunks"]
            assert_the_timeline_shows(page, chunks)
            done = settled(chunks)
            assert listed(page, job_id) == ("FAILED", f"{done}/{total}", [done, total])
            assert page.is_visible("#rerun") == (done < total)  # chunks left to transcribe
            asked: list[str] = []

            def answer(accept: bool) -> Callable[[Any], None]:
                def reply(dialog: Any) -> None:
                    asked.append(dialog.message)
                    dialog.accept() if accept else dialog.dismiss()

                return reply

            page.once("dialog", answer(False))
            page.click("#delete")
            assert asked == [
                "Delete the job of softer.wav, its recording and its transcripts, for good?"
            ]
            assert client.job(job_id)["status"] == "FAILED"  # kept: not confirmed
            assert page.is_visible("#delete")

            page.once("dialog", answer(True))
            page.click("#delete")
            page.wait_for_selector(row, state="detached")
            screenshot(page, "deleted")
            assert len(asked) == 2 and page.text_content("#error") == ""
            assert page.is_hidden("#progress-section") and page.is_hidden("#delete")
            with pytest.raises(httpx.HTTPStatusError, match="404"):
                client.job(job_id)
    finally:
        pipeline.speech.control(latency_s=0.0)


def test_page_signs_in_through_the_hosted_ui_with_pkce_and_lists_the_users_jobs(
    pipeline: LocalPipeline, tmp_path: Path, screenshot: Screenshot
) -> None:
    """The hosted UI is a stand-in (moto has none: sttpipe_testing.hosted_ui), which refuses a
    page that skips PKCE or sends another verifier; its tokens are ones the local JWT authorizer
    accepts, for a tenant of their own."""
    page_url = f"{pipeline.api_url}/web/"
    tenant = "signed-in"

    def create_job(token: str) -> str:
        request = {"filename": "talk.flac", "content_type": "audio/flac", "size_bytes": 1000}
        created = httpx.post(
            f"{pipeline.api_url}/uploads",
            json=request,
            headers={"authorization": f"Bearer {token}"},
        )
        created.raise_for_status()
        return str(created.json()["job_id"])

    mine, not_mine = create_job(pipeline.token(tenant)), create_job(pipeline.token("another"))
    hosted_ui = HostedUi(
        client_id="page-client", redirect_uri=page_url, mint=lambda: pipeline.token(tenant)
    )
    pipeline.cloud.gateway.web_config = {"sign_in": hosted_ui.sign_in()}  # config.json
    try:
        with hosted_ui, chromium_page(tmp_path / "profile") as page:
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_url)
            page.wait_for_selector("#sign-in", state="visible")
            screenshot(page, "signed-out")
            assert page.is_hidden("#signed-in") and page.locator("#jobs tr.job").count() == 0

            page.click("#sign-in")  # to the hosted UI, and back with a code
            page.wait_for_selector("#signed-in", state="visible")
            screenshot(page, "signed-in")
            assert hosted_ui.refused == [] and hosted_ui.grants == ["authorization_code"]
            assert page.url == page_url  # the code and state are gone from the address bar
            assert page.text_content("#user") == f"user-of-{tenant}"
            assert listed(page, mine)[0] == "AWAITING_UPLOAD"
            assert page.locator(f"#jobs tr[data-job-id='{not_mine}']").count() == 0
            # The tokens live in this tab's sessionStorage; nothing in localStorage.
            assert page.evaluate("Object.keys(localStorage)") == []
            assert page.evaluate("Object.keys(sessionStorage)") == ["sttpipe.tokens"]

            # Expired, the ID token is refreshed with the refresh token before the next call.
            page.evaluate(
                """() => { const t = JSON.parse(sessionStorage.getItem('sttpipe.tokens'));
                           t.expires_at = Date.now();
                           sessionStorage.setItem('sttpipe.tokens', JSON.stringify(t)); }"""
            )
            page.click("#refresh-jobs")
            page.wait_for_function(
                "() => JSON.parse(sessionStorage.getItem('sttpipe.tokens')).expires_at > Date.now()"
            )
            assert hosted_ui.grants == ["authorization_code", "refresh_token"]
            assert listed(page, mine)[0] == "AWAITING_UPLOAD" and page.text_content("#error") == ""

            # A code the page did not ask for (another state) is never exchanged.
            page.goto(f"{page_url}?code=stolen&state=forged")
            page.wait_for_function("() => document.querySelector('#error').textContent !== ''")
            assert page.text_content("#error") == (
                "sign-in failed: the answer is not to a sign-in this page started"
            )
            assert len(hosted_ui.grants) == 2 and hosted_ui.refused == []

            # Signing out ends the hosted UI's session too and comes back signed out.
            with page.expect_navigation(url=page_url):  # by the hosted UI's /logout
                page.click("#sign-out")
            page.wait_for_selector("#sign-in", state="visible")
            screenshot(page, "signed-out-again")
            assert page.evaluate("sessionStorage.getItem('sttpipe.tokens')") is None
            assert page.url == page_url and page.locator("#jobs tr.job").count() == 0
            assert errors == []
    finally:
        pipeline.cloud.gateway.web_config = None
