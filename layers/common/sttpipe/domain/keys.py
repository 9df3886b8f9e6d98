"""Where each of a job's objects lives in the bucket (one place, so nothing spells a key twice)."""

from __future__ import annotations

import re

UPLOAD_PREFIX = "uploads/"
TRANSCRIPT_FORMATS = ("txt", "json", "srt", "vtt")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str) -> str:
    """The file name as it may appear in an object key: no paths, no odd characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._") or "audio"
    return cleaned[-200:]


def upload(job_id: str, filename: str) -> str:
    return f"{UPLOAD_PREFIX}{job_id}/{safe_filename(filename)}"


def manifest(job_id: str) -> str:
    return f"work/{job_id}/manifest.json"


def chunk_audio(job_id: str, index: int) -> str:
    return f"work/{job_id}/chunks/{index:05d}.flac"


def chunk_result(job_id: str, index: int) -> str:
    return f"work/{job_id}/results/{index:05d}.json"


def transcript(job_id: str, fmt: str) -> str:
    return f"transcripts/{job_id}/transcript.{fmt}"
