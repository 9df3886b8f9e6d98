"""A job's manifest: what the splitter made of its upload, read back by the merge, re-runs and
deletes. One loader, so that every reader finds it in the same place and validates it alike."""

from __future__ import annotations

from sttpipe.domain import keys
from sttpipe.domain.models import Manifest
from sttpipe.ports import ObjectNotFound, ObjectStore


def store_manifest(store: ObjectStore, manifest: Manifest) -> None:
    key = keys.manifest(manifest.execution.job_id)
    store.put_bytes(key, manifest.model_dump_json().encode(), "application/json")


def load_manifest(store: ObjectStore, job_id: str) -> Manifest:
    """Raises ObjectNotFound when the job was never split (or its work objects expired)."""
    return Manifest.model_validate_json(store.get_bytes(keys.manifest(job_id)))


def find_manifest(store: ObjectStore, job_id: str) -> Manifest | None:
    """The job's manifest, or None when the job was never split (or its work objects expired)."""
    try:
        return load_manifest(store, job_id)
    except ObjectNotFound:
        return None
