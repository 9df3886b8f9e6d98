"""A job's manifest: what the splitter made of its upload, read back by the merge, re-runs,
deletes and the reconciler. One loader, so that every reader finds it in the same place and
validates it alike; one way to start the execution of a stored split."""

from __future__ import annotations

import json

from sttpipe.domain import keys
from sttpipe.domain.models import ExecutionInput, JobStatus, Manifest, WorkflowInput
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


def start_split(
    store: ObjectStore, jobs: JobRepository, workflow: Workflow, manifest: Manifest
) -> None:
    """Record a stored split's chunks and content hashes, start its execution, then claim
    TRANSCRIBING: each step repeatable (the execution is named after the job and run), so that
    whoever finds a split stored but not started (a redelivered upload, the reconciler) can
    finish what a delivery that died began."""
    execution = manifest.execution
    view = jobs.get(execution.job_id)
    if view is not None and view.job.status.is_final:
        return  # cancelled while it was being split: nothing to run
    jobs.add_chunks(execution.job_id, manifest.progress())
    jobs.remember_content(execution.job_id, manifest.content_hashes())
    start_run(store, workflow, execution)
    jobs.set_status(execution.job_id, JobStatus.TRANSCRIBING)


def start_run(store: ObjectStore, workflow: Workflow, execution: ExecutionInput) -> str:
    """Start the execution of `execution`'s run: its chunk list is stored for the Map to read,
    the rest is the execution's input. Repeatable: the list is the same, and the execution is
    named after the job and run. Returns the execution's ARN."""
    chunks_key = keys.chunk_list(execution.job_id, execution.run)
    chunk_list = json.dumps([c.model_dump(mode="json") for c in execution.chunks])
    store.put_bytes(chunks_key, chunk_list.encode(), "application/json")
    workflow_input = WorkflowInput(
        job_id=execution.job_id,
        language=execution.language,
        prompt=execution.prompt,
        queue_url=execution.queue_url,
        run=execution.run,
        chunks_key=chunks_key,
        tenant_id=execution.tenant_id,
        detect_from=execution.chunks[0]
        if execution.detect_language and execution.language is None and execution.chunks
        else None,
    )
    return workflow.start(execution.job_id, workflow_input.model_dump_json(), run=execution.run)
