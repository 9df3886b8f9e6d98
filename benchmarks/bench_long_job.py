"""A job of thousands of chunks on the local cloud: past the inline Map's 40 chunks in flight and
past the ~950 chunks whose list would outgrow Step Functions' 256 KiB execution input.

The chunks are synthetic: N one-second spans of a recording that all hold the same audio, handed
to the pipeline as the splitter hands a split (`start_split`: the manifest and chunk list in S3,
the job's rows, the execution). Everything after that is the product on the local cloud: the
distributed Map reading the chunk list with its ItemReader, the chunk queue, the workers (the
first chunk calls the speech API, the rest are answered by the content-addressed cache, as
identical audio is), the merge reading every chunk's stored result. Prints the wall time from
the start to the job's end, chunks per second and the speech API calls made.

    .venv/bin/python benchmarks/bench_long_job.py [--chunks 2000] [--emulator moto|localstack]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from localcloud.pipeline import LOCAL_TENANT, LocalPipeline
from sttpipe.adapters.database import create_pool
from sttpipe.adapters.postgres import PostgresJobRepository
from sttpipe.adapters.s3 import S3ObjectStore
from sttpipe.adapters.stepfunctions import StepFunctionsWorkflow
from sttpipe.domain import keys
from sttpipe.domain.models import ChunkRef, ExecutionInput, Job, JobStatus, Manifest
from sttpipe.services.manifests import start_split, store_manifest

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample.flac"


def run(chunks: int, emulator: str, timeout_s: float) -> int:
    with LocalPipeline(emulator=emulator, engine="none") as pipeline:
        stack = pipeline.cloud.stack
        store = S3ObjectStore(stack.ref("UploadBucket"), pipeline.cloud.boto3_client("s3"))
        jobs = PostgresJobRepository(create_pool(pipeline.database_url))
        workflow = StepFunctionsWorkflow(
            stack.outputs["StateMachineArn"], pipeline.cloud.boto3_client("stepfunctions")
        )
        job_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        jobs.add(
            Job(
                job_id=job_id,
                tenant_id=LOCAL_TENANT,
                filename="long.flac",
                language="en",
                upload_key=keys.upload(job_id, "long.flac"),
                status=JobStatus.SPLITTING,
                created_at=now,
                updated_at=now,
            )
        )
        audio = SAMPLE.read_bytes()
        audio_key = keys.chunk_audio(job_id, 0)
        store.put_bytes(audio_key, audio, "audio/flac")
        pcm_sha256 = hashlib.sha256(audio).hexdigest()
        refs = [
            ChunkRef(
                index=i,
                key=audio_key,
                start_ms=i * 1000,
                end_ms=(i + 1) * 1000,
                pcm_sha256=pcm_sha256,
                tenant_id=LOCAL_TENANT,
            )
            for i in range(chunks)
        ]
        execution = ExecutionInput(
            job_id=job_id, language="en", queue_url=stack.ref("ChunkQueueNormal"), chunks=refs
        )
        inline_bytes = len(execution.model_dump_json())
        manifest = Manifest(
            execution=execution,
            duration_s=float(chunks),
            chunks_total=chunks,
            chunks_silent=0,
            split_seconds=0.0,
        )
        store_manifest(store, manifest)
        pipeline.speech.reset_stats()
        started = time.monotonic()
        start_split(store, jobs, workflow, manifest)
        view = jobs.get(job_id)
        while view is not None and not view.job.status.is_final:
            if time.monotonic() - started > timeout_s:
                print(f"gave up after {timeout_s:.0f} s: {view.chunks_finished}/{chunks} chunks")
                return 1
            time.sleep(1.0)
            view = jobs.get(job_id)
        wall = time.monotonic() - started
        assert view is not None
        calls = pipeline.speech.stats()["requests_total"]
        print(f"chunks                 {chunks}")
        print(
            f"chunk list inline      {inline_bytes / 1024:.0f} KiB (execution input limit 256 KiB)"
        )
        print(f"status                 {view.job.status.value}  {view.job.failure_reason or ''}")
        print(f"chunks transcribed     {view.job.stats.get('chunks_transcribed')}")
        print(f"speech API calls       {calls}")
        print(f"wall, start to end     {wall:.1f} s  ({chunks / wall:.1f} chunks/s)")
        jobs.close()
        return 0 if view.job.status is JobStatus.COMPLETED else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--emulator", choices=["moto", "localstack"], default="moto")
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    args = parser.parse_args()
    return run(args.chunks, args.emulator, args.timeout_s)


if __name__ == "__main__":
    sys.exit(main())
