"""A job's manifest: what the splitter made of its upload, read back by the merge, re-runs,
deletes and the reconciler. One loader, so that every reader finds it in the same place and
validates it alike; one way to start the execution of a stored split."""

from __future__ import annotations

from sttpipe.domain import keys
from sttpipe.domain.models import JobStatus, Manifest
from sttpipe.ports import JobRepository, ObjectNotFound, ObjectStore, Workflow


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


def start_split(jobs: JobRepository, workflow: Workflow, manifest: Manifest) -> None:
    """Record a stored split's chunks and content hashes, start its execution, then claim
    TRANSCRIBING: each step repeatable (the execution is named after the job and run), so that
    whoever finds a split stored but not started (a redelivered upload, the reconciler) can
    finish what a delivery that died began."""
    execution = manifest.execution
    jobs.add_chunks(execution.job_id, manifest.progress())
    content = [c.pcm_sha256 for c in execution.chunks]
    if manifest.upload_sha256:
        content.append(manifest.upload_sha256)
    jobs.remember_content(execution.job_id, content)
    workflow.start(execution.job_id, execution.model_dump_json(), run=execution.run)
    jobs.set_status(execution.job_id, JobStatus.TRANSCRIBING)
