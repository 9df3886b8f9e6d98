"""Composition root: builds each service from its real adapters, once per container.

Handlers call these; every client, pool and connection is created on first use and then reused
by every later invocation of the same warm container.
"""

from __future__ import annotations

from functools import cache

from sttpipe.adapters.postgres import job_repository_from_settings
from sttpipe.adapters.s3 import S3ObjectStore
from sttpipe.adapters.stepfunctions import StepFunctionsWorkflow
from sttpipe.config import get_settings
from sttpipe.ports import JobRepository, ObjectStore, Workflow
from sttpipe.services.jobs import JobService
from sttpipe.services.merging import MergeService
from sttpipe.services.splitting import SplitterService
from sttpipe.services.transcribing import WorkerService
from sttpipe.speech.cloudru import build_transcriber


@cache
def object_store() -> ObjectStore:
    return S3ObjectStore(get_settings().bucket)


@cache
def job_repository() -> JobRepository:
    return job_repository_from_settings(get_settings())


@cache
def workflow() -> Workflow:
    return StepFunctionsWorkflow(get_settings().state_machine_arn)


@cache
def splitter_service() -> SplitterService:
    return SplitterService(object_store(), job_repository(), workflow(), get_settings())


@cache
def worker_service() -> WorkerService:
    settings = get_settings()
    return WorkerService(
        object_store(), job_repository(), workflow(), build_transcriber(settings), settings
    )


@cache
def merge_service() -> MergeService:
    return MergeService(object_store(), job_repository(), workflow())


@cache
def job_service() -> JobService:
    return JobService(object_store(), job_repository(), get_settings())
