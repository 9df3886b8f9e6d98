"""The object store on S3 (boto3 reads AWS_ENDPOINT_URL itself, so emulators need no code)."""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from sttpipe.adapters.arriving import ArrivingFile
from sttpipe.ports import ObjectNotFound

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
# A conditional write lost: the object exists (412), or a concurrent conditional write to the
# same key is still in progress (409).
_LOST_RACE_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
# Downloads: the last MiB first, for probe (a WAV's trailing chunks, the last seconds of
# compressed audio, an MP4's index at the end), then the rest in order in blocks of a MiB.
_TAIL_BYTES = 1 << 20
_BLOCK_BYTES = 1 << 20


@functools.cache
def default_s3_client() -> S3Client:
    """One client per container; SigV4 so pre-signed URLs work in every region."""
    return boto3.client("s3", config=Config(signature_version="s3v4"))


def _is_missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in _MISSING_CODES


class S3ObjectStore:
    def __init__(self, bucket: str, client: S3Client | None = None) -> None:
        self.bucket = bucket
        self._s3 = client or default_s3_client()

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def put_bytes_if_absent(self, key: str, data: bytes, content_type: str) -> bool:
        try:
            self._s3.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, IfNoneMatch="*"
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _LOST_RACE_CODES:
                return False
            raise
        return True

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _is_missing(exc):
                raise ObjectNotFound(key) from exc
            raise

    @contextmanager
    def download(self, key: str) -> Iterator[ArrivingFile]:
        """Stream the object into a temporary file (never all in memory) and yield it at once,
        readable while the rest arrives: its tail first, then the head from the start."""
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                raise ObjectNotFound(key) from exc
            raise
        size, etag = head["ContentLength"], head["ETag"]
        tail_from = max(0, size - _TAIL_BYTES)
        with tempfile.NamedTemporaryFile(prefix="sttpipe-", suffix=temp_suffix(key)) as tmp:
            tail = self._range(key, etag, tail_from, size) if size else b""
            os.pwrite(tmp.fileno(), tail, tail_from)
            with ArrivingFile(tmp.name, size, tail_from=tail_from) as arriving:
                stop = threading.Event()
                fetch = threading.Thread(
                    target=self._fetch_head,
                    args=(key, etag, tmp.fileno(), arriving, tail, stop),
                    name="s3-download",
                    daemon=True,
                )
                fetch.start()
                try:
                    yield arriving
                finally:
                    stop.set()
                    fetch.join()

    def _range(self, key: str, etag: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object, as long as it is still the version `etag`."""
        answer = self._s3.get_object(
            Bucket=self.bucket, Key=key, IfMatch=etag, Range=f"bytes={start}-{end - 1}"
        )
        return answer["Body"].read()

    def _fetch_head(
        self,
        key: str,
        etag: str,
        fd: int,
        arriving: ArrivingFile,
        tail: bytes,
        stop: threading.Event,
    ) -> None:
        """Write bytes [0, tail_from) to `fd` in order, telling `arriving` as they land."""
        try:
            at = 0
            if arriving.tail_from:
                body = self._s3.get_object(
                    Bucket=self.bucket,
                    Key=key,
                    IfMatch=etag,
                    Range=f"bytes=0-{arriving.tail_from - 1}",
                )["Body"]
                with closing(body):
                    for block in body.iter_chunks(_BLOCK_BYTES):
                        if stop.is_set():
                            return  # the reader is gone: the rest is not wanted
                        os.pwrite(fd, block, at)
                        at += len(block)
                        arriving.arrived(block)
            if at != arriving.tail_from:
                raise OSError(f"s3://{self.bucket}/{key} ended after {at} bytes")
            arriving.finished(tail)
        except BaseException as exc:
            arriving.failed(exc)

    def size(self, key: str) -> int | None:
        try:
            return self._s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise

    def presigned_get(self, key: str, expires_s: int) -> str:
        return self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
        )

    def presigned_post(
        self, key: str, content_type: str, max_bytes: int, expires_s: int
    ) -> dict[str, Any]:
        """A browser-style upload form for exactly this key, type and size range.

        boto3 adds the bucket and exact-key conditions itself; the form returns {"url", "fields"}.
        """
        post = self._s3.generate_presigned_post(
            Bucket=self.bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[
                {"Content-Type": content_type},
                ["content-length-range", 1, max_bytes],
            ],
            ExpiresIn=expires_s,
        )
        return dict(post)

    def delete_prefix(self, prefix: str) -> int:
        """List and delete in pages of 1000 (the most one DeleteObjects call takes)."""
        deleted = 0
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            objects: list[ObjectIdentifierTypeDef] = [
                {"Key": o["Key"]} for o in page.get("Contents", [])
            ]
            if objects:
                answer = self._s3.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                )
                if answer.get("Errors"):
                    raise RuntimeError(f"S3 could not delete some objects: {answer['Errors'][:3]}")
                deleted += len(objects)
        return deleted


def temp_suffix(key: str) -> str:
    # Keep the extension: some decoders probe the container from the file name.
    name = key.rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    return f".{ext}" if ext.isalnum() and len(ext) <= 10 else ""
