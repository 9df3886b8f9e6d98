"""WebPage custom resource: at each deploy that changes the page (this function's code, which
holds it) or its settings, CloudFormation asks and the page's files are written to the web
bucket behind CloudFront, with `config.json` beside them (the API's URL and the hosted UI's
endpoints: nothing secret, a browser client has no secret). Deleting the stack deletes them,
so that the bucket can go too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import (
    CloudFormationCustomResourceEvent,
    event_source,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from sttpipe.adapters.cloudformation import Outcome, answer_after

logger = Logger()
PAGE_DIR: Final = Path(__file__).resolve().parent / "page"
CONFIG: Final = "config.json"
# S3 serves each object with the type it was stored with; CloudFront adds the CSP.
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
}


def page_files() -> dict[str, bytes]:
    """The page's files by name (`config.json` is made at deploy, never taken from here)."""
    return {p.name: p.read_bytes() for p in sorted(PAGE_DIR.iterdir()) if p.name != CONFIG}


def publish(s3: Any, bucket: str, config: dict[str, Any]) -> list[str]:
    """Writes the page and its config.json to `bucket`; returns the names written."""
    files = {**page_files(), CONFIG: json.dumps(config, indent=2).encode()}
    for name, body in files.items():
        s3.put_object(
            Bucket=bucket,
            Key=name,
            Body=body,
            ContentType=CONTENT_TYPES[Path(name).suffix],
            CacheControl="no-cache",  # a deploy's page shows at once
        )
    return list(files)


def unpublish(s3: Any, bucket: str) -> None:
    """Deletes every object of the bucket (the page's only): CloudFormation deletes it next."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=CloudFormationCustomResourceEvent)
def handler(event: CloudFormationCustomResourceEvent, context: LambdaContext) -> None:
    props = event.resource_properties
    bucket = str(props["Bucket"])

    def work() -> Outcome:
        s3 = boto3.client("s3")
        if event.request_type == "Delete":
            unpublish(s3, bucket)
            return f"emptied {bucket}", None
        return f"wrote {', '.join(publish(s3, bucket, props['Config']))} to {bucket}", None

    answer_after(
        event.raw_event, work, physical_id=bucket, failure="the page could not be published"
    )
