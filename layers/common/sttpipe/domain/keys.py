"""Where each of a job's objects lives in the bucket (one place, so nothing spells a key twice)."""

from __future__ import annotations

import re

UPLOAD_PREFIX = "uploads/"
WORK_PREFIX = "work/"  # chunks, manifest, chunk results: expire by the bucket's lifecycle rule
TRANSCRIPT_PREFIX = "transcripts/"
TRANSCRIPT_FORMATS = ("txt", "json", "srt", "vtt", "tsv")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_UPLOAD_KEY = re.compile(rf"^{UPLOAD_PREFIX}(?P<job_id>[0-9a-f]{{32}})/[^/]+$")


def safe_filename(name: str) -> str:
    """The file name as it may appear in an object key: no paths, no odd characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._") or "audio"
    return cleaned[-200:]


def job_prefixes(job_id: str) -> tuple[str, ...]:
    """Every prefix a job's objects live under: deleting them deletes the job's objects."""
    return tuple(f"{prefix}{job_id}/" for prefix in (UPLOAD_PREFIX, WORK_PREFIX, TRANSCRIPT_PREFIX))


def upload(job_id: str, filename: str) -> str:
    return f"{UPLOAD_PREFIX}{job_id}/{safe_filename(filename)}"


def job_of_upload(key: str) -> str | None:
    """The job id of a key `upload()` made, None for any other key under uploads/."""
    match = _UPLOAD_KEY.match(key)
    return match["job_id"] if match else None


def manifest(job_id: str) -> str:
    return f"{WORK_PREFIX}{job_id}/manifest.json"


def chunk_list(job_id: str, run: int) -> str:
    """The chunks a run transcribes, as a JSON array of ChunkRef: the state machine's Map reads
    it from here (its ItemReader), so that no job is too long for an execution's input."""
    return f"{WORK_PREFIX}{job_id}/runs/{run}/chunks.json"


def chunk_audio(job_id: str, index: int) -> str:
    return f"{WORK_PREFIX}{job_id}/chunks/{index:05d}.flac"


def chunk_result(job_id: str, index: int) -> str:
    return f"{WORK_PREFIX}{job_id}/results/{index:05d}.json"


def transcript(job_id: str, fmt: str) -> str:
    return f"{TRANSCRIPT_PREFIX}{job_id}/transcript.{fmt}"
