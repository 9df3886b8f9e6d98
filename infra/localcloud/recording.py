"""TEST ONLY: what a function's code asks of AWS and of its settings, recorded in its process.

The local runtime turns this on in a function's process when its environment names a directory
in RECORD_DIR_ENV (tests/e2e/test_template_contract.py sets it); nothing on AWS imports it.
Each process appends JSON lines to `<dir>/<function name>.jsonl`, each distinct line once:

    {"setting": "bucket"}                    a field of sttpipe's Settings was read
    {"call": "s3:GetObject", "params": {...}} an AWS operation (IAM prefix, botocore's name)
                                             with the parameters that name its resource

Pre-signed URLs and forms count as calls: whoever uses them acts with the function's rights.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Final

RECORD_DIR_ENV: Final = "LOCALCLOUD_RECORD_DIR"
# The parameters that name what an operation acts on (S3, SQS, Secrets Manager, Step Functions).
_NAMING: Final = (
    "Bucket",
    "Key",
    "Delete",
    "QueueUrl",
    "SecretId",
    "stateMachineArn",
    "executionArn",
)


def install(path: Path) -> None:
    """Record from now on into `path`: before the handler is imported, so that every boto3
    client (made on boto3's default session, as sttpipe's adapters do) carries the hooks."""
    import boto3
    from botocore.awsrequest import AWSRequest
    from botocore.model import OperationModel

    from sttpipe.config import Settings

    seen: set[str] = set()
    lock = threading.Lock()

    def note(entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True)
        with lock:
            if line not in seen:
                seen.add(line)
                with path.open("a", encoding="utf-8") as out:
                    out.write(line + "\n")

    def on_params(
        params: dict[str, Any], model: OperationModel, context: dict[str, Any], **_: Any
    ) -> None:
        if context.get("is_presign_request") and model.name == "CreateBucket":
            return  # botocore's stand-in while it builds a pre-signed POST: see on_post below
        named = {k: params[k] for k in _NAMING if k in params}
        note({"call": f"{model.service_model.signing_name}:{model.name}", "params": named})

    def on_post(request: AWSRequest, **_: Any) -> None:
        fields = request.context.get("s3-presign-post-fields")
        if fields is not None:  # a pre-signed POST form: a PutObject of the form's key
            policy = request.context["s3-presign-post-policy"]
            bucket = next(c["bucket"] for c in policy["conditions"] if "bucket" in c)
            note({"call": "s3:PutObject", "params": {"Bucket": bucket, "Key": fields["key"]}})

    session = boto3.Session()
    boto3.DEFAULT_SESSION = session  # what boto3.client(...) uses from now on
    events = session.events
    events.register("provide-client-params.*.*", on_params)
    events.register("before-sign.s3.PutObject", on_post)

    fields = frozenset(Settings.model_fields)
    read = Settings.__getattribute__

    def reading(self: Settings, name: str) -> Any:
        if name in fields:
            note({"setting": name})
        return read(self, name)

    Settings.__getattribute__ = reading  # type: ignore[method-assign,assignment]
