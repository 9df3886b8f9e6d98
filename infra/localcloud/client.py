"""A client of the pipeline's HTTP API that does what a browser frontend does.

Create an upload, POST the file straight to S3 with the pre-signed form, follow the job until it
ends, fetch the transcripts. The CLI and the end-to-end tests both use it.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import httpx

FINAL_STATUSES = frozenset({"COMPLETED", "PARTIAL", "FAILED"})

# Content types for extensions `mimetypes` does not know on every system.
_AUDIO_TYPES = {
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".opus": "audio/opus",
    ".m4a": "audio/mp4",
    ".webm": "audio/webm",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
}


class JobTimeout(RuntimeError):
    pass


@dataclass(frozen=True)
class Submission:
    job_id: str
    uploaded_bytes: int  # 0: the API knew the recording and the job is already COMPLETED


@dataclass
class JobResult:
    job_id: str
    status: str
    job: dict[str, Any]
    files: dict[str, Path]
    text: str  # the plain-text transcript, whether or not a .txt was written


def content_type_of(path: Path) -> str:
    return _AUDIO_TYPES.get(path.suffix.lower()) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )


class CountingReader(io.RawIOBase):
    """A file read through, telling `counted` how many bytes each read returned. Its length
    stays known (fileno, seek, tell), so the upload keeps its Content-Length: S3 refuses a
    chunked form POST."""

    def __init__(self, file: BinaryIO, counted: Callable[[int], None]) -> None:
        self._file = file
        self._counted = counted

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._counted(len(data))
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._file.fileno()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


class PipelineClient:
    """`token`: a JWT the API's authorizer accepts (locally `LocalPipeline.token`)."""

    def __init__(self, api_url: str, timeout_s: float = 30.0, *, token: str | None = None) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=api_url, timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self._http.close()

    def submit(
        self,
        path: Path,
        *,
        language: str | None = None,
        priority: str | None = None,
        prompt: str | None = None,
        mixed_languages: bool = False,
        on_upload: Callable[[int], None] | None = None,
    ) -> Submission:
        """Create an upload and send the file to S3 with the pre-signed POST, unless the API
        knows the file by its hash (this tenant transcribed it before): then nothing is sent.
        `on_upload` is told each number of bytes sent as the file goes."""
        with path.open("rb") as f:
            sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        request: dict[str, Any] = {
            "filename": path.name,
            "content_type": content_type_of(path),
            "size_bytes": path.stat().st_size,
            "sha256": sha256,
        }
        if language:
            request["language"] = language
        if mixed_languages:
            request["mixed_languages"] = True
        if priority:
            request["priority"] = priority
        if prompt:
            request["prompt"] = prompt
        created = self._http.post("/uploads", json=request)
        _raise_for_status(created)
        ticket = created.json()
        form = ticket["upload"]
        if form is None:
            return Submission(str(ticket["job_id"]), uploaded_bytes=0)
        with path.open("rb") as file:
            # (typeshed's io classes are not typing.IO; httpx reads any of them)
            body = cast(BinaryIO, CountingReader(file, on_upload)) if on_upload else file
            # Field order matters to S3: the policy fields first, the file last.
            sent = httpx.post(
                form["url"],
                data=form["fields"],
                files={"file": (path.name, body, request["content_type"])},
                timeout=300,
            )
        _raise_for_status(sent)
        return Submission(str(ticket["job_id"]), uploaded_bytes=request["size_bytes"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self._http.get(f"/jobs/{job_id}")
        _raise_for_status(response)
        body: dict[str, Any] = response.json()
        return body

    def rerun(self, job_id: str) -> dict[str, Any]:
        """Transcribe a PARTIAL or FAILED job's failed chunks again; returns the job's status
        (follow it with `wait`)."""
        response = self._http.post(f"/jobs/{job_id}/rerun")
        _raise_for_status(response)
        body: dict[str, Any] = response.json()
        return body

    def cancel(self, job_id: str) -> bool:
        """End a job that has not ended (its queued chunks are not sent to the speech API);
        False when it had ended already."""
        response = self._http.post(f"/jobs/{job_id}/cancel")
        if response.status_code == 409:
            return False
        _raise_for_status(response)
        return True

    def delete(self, job_id: str) -> dict[str, int]:
        response = self._http.delete(f"/jobs/{job_id}")
        _raise_for_status(response)
        body: dict[str, int] = response.json()
        return body

    def list_jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        response = self._http.get("/jobs", params={"limit": limit})
        _raise_for_status(response)
        jobs: list[dict[str, Any]] = response.json()["jobs"]
        return jobs

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float = 900,
        poll_s: float = 0.5,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if on_progress:
                on_progress(job)
            if job["status"] in FINAL_STATUSES:
                return job
            if time.monotonic() > deadline:
                raise JobTimeout(f"job {job_id} still {job['status']} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def download(
        self,
        job: dict[str, Any],
        out_dir: Path,
        *,
        name: str = "transcript",
        formats: Collection[str] | None = None,
    ) -> dict[str, Path]:
        """The job's transcripts as `<out_dir>/<name>.<format>` (every format, or `formats`)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {}
        for fmt, url in job.get("downloads", {}).items():
            if formats is not None and fmt not in formats:
                continue
            target = out_dir / f"{name}.{fmt}"
            target.write_bytes(_fetch(url))
            files[fmt] = target
        return files

    def transcribe(
        self,
        path: Path,
        out_dir: Path,
        *,
        language: str | None = None,
        priority: str | None = None,
        prompt: str | None = None,
        mixed_languages: bool = False,
        timeout_s: float = 900,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> JobResult:
        job_id = self.submit(
            path,
            language=language,
            priority=priority,
            prompt=prompt,
            mixed_languages=mixed_languages,
        ).job_id
        return self.follow(job_id, out_dir, timeout_s=timeout_s, on_progress=on_progress)

    def follow(
        self,
        job_id: str,
        out_dir: Path,
        *,
        timeout_s: float = 900,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        name: str = "transcript",
        formats: Collection[str] | None = None,
    ) -> JobResult:
        """Wait for the job to end and download its transcripts (see download)."""
        job = self.wait(job_id, timeout_s=timeout_s, on_progress=on_progress)
        files = self.download(job, out_dir, name=name, formats=formats)
        if "txt" in files:
            text = files["txt"].read_text(encoding="utf-8")
        else:
            txt_url = job.get("downloads", {}).get("txt")
            text = _fetch(txt_url).decode("utf-8") if txt_url else ""
        return JobResult(job_id, job["status"], job, files, text)


def _fetch(url: str) -> bytes:
    response = httpx.get(url, timeout=60)
    _raise_for_status(response)
    return response.content


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_error:
        raise httpx.HTTPStatusError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: "
            f"{response.text[:500]}",
            request=response.request,
            response=response,
        )
