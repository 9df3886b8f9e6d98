"""The pre-signed POST is enforced by S3 itself: on LocalStack (moto does not check policies),
a form for one key, type and size range refuses anything else before a byte reaches the pipeline.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from localcloud.emulators import LocalStackEmulator
from sttpipe.adapters.s3 import S3ObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(localstack: LocalStackEmulator) -> S3ObjectStore:
    s3 = localstack.endpoint.client("s3")
    bucket = f"policy-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    return S3ObjectStore(bucket, client=s3)


def post(form: dict, body: bytes, content_type: str) -> httpx.Response:
    fields = {**form["fields"], "Content-Type": content_type}
    return httpx.post(form["url"], data=fields, files={"file": ("a.flac", body, content_type)})


def test_the_form_takes_what_it_was_made_for(store: S3ObjectStore) -> None:
    form = store.presigned_post("uploads/job/a.flac", "audio/flac", max_bytes=1000, expires_s=60)
    assert post(form, b"x" * 1000, "audio/flac").status_code in (200, 201, 204)
    assert store.size("uploads/job/a.flac") == 1000


def test_s3_refuses_an_upload_over_the_size_range(store: S3ObjectStore) -> None:
    form = store.presigned_post("uploads/job/a.flac", "audio/flac", max_bytes=1000, expires_s=60)
    refused = post(form, b"x" * 1001, "audio/flac")
    assert refused.status_code == 400 and "EntityTooLarge" in refused.text
    assert store.size("uploads/job/a.flac") is None


def test_s3_refuses_another_content_type(store: S3ObjectStore) -> None:
    form = store.presigned_post("uploads/job/a.flac", "audio/flac", max_bytes=1000, expires_s=60)
    refused = post(form, b"x" * 10, "application/pdf")
    assert refused.status_code == 403
    assert store.size("uploads/job/a.flac") is None


def test_s3_refuses_an_empty_file(store: S3ObjectStore) -> None:
    form = store.presigned_post("uploads/job/a.flac", "audio/flac", max_bytes=1000, expires_s=60)
    refused = post(form, b"", "audio/flac")
    assert refused.status_code == 400 and "EntityTooSmall" in refused.text
    assert store.size("uploads/job/a.flac") is None


@pytest.mark.parametrize(
    "elsewhere",
    [
        "uploads/job-of-b/a.flac",  # another job's upload (another tenant's, maybe)
        "uploads/job/other.flac",  # another object of the same job
        "transcripts/job/transcript.txt",  # the pipeline's outputs
        "work/job/manifest.json",
    ],
)
def test_s3_refuses_the_form_for_any_other_key(store: S3ObjectStore, elsewhere: str) -> None:
    """A tenant's form writes its job's one upload key: with the key field changed, S3 refuses
    (tests/unit/test_two_tenants.py: the key is under the caller's own job)."""
    form = store.presigned_post("uploads/job/a.flac", "audio/flac", max_bytes=1000, expires_s=60)
    moved = {**form, "fields": {**form["fields"], "key": elsewhere}}
    refused = post(moved, b"x" * 10, "audio/flac")
    assert refused.status_code == 403
    assert store.size(elsewhere) is None
