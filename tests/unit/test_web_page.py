"""The web page's publisher (the WebPage custom resource, functions/web/app.py) against moto's
S3, answering a stand-in for CloudFormation; and the page's own files, which must run under the
CSP CloudFront serves them with (template.yaml's WebHeadersPolicy: no inline code or style)."""

from __future__ import annotations

import importlib.util
import json
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.integration.test_migrations import CloudFormationStandIn

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "functions" / "web" / "page"
CONTEXT = SimpleNamespace(
    function_name="WebPublisherFunction",
    memory_limit_in_mb=256,
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:WebPublisherFunction",
    aws_request_id="req-1",
)
CONFIG = {
    "api_url": "https://abc123.execute-api.us-east-1.amazonaws.com",
    "sign_in": {
        "authorize_endpoint": "https://stt-1.auth.us-east-1.amazoncognito.com/oauth2/authorize",
        "token_endpoint": "https://stt-1.auth.us-east-1.amazoncognito.com/oauth2/token",
        "client_id": "client",
        "redirect_uri": "https://d111.cloudfront.net/",
        "scope": "openid email",
    },
}


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "web")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="web")
        yield client


@pytest.fixture
def cloudformation() -> Iterator[CloudFormationStandIn]:
    stand_in = CloudFormationStandIn()
    yield stand_in
    stand_in.server.shutdown()


def publisher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("web_app", ROOT / "functions/web/app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def request(stand_in: CloudFormationStandIn, kind: str, **properties: Any) -> dict[str, Any]:
    return {
        "RequestType": kind,
        "ServiceToken": CONTEXT.invoked_function_arn,
        "ResponseURL": stand_in.url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/stt/1",
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": "WebPage",
        "ResourceType": "Custom::WebPage",
        "ResourceProperties": {"ServiceToken": "x", "Bucket": "web", **properties},
        **({} if kind == "Create" else {"PhysicalResourceId": "web"}),
    }


def stored(s3: Any) -> dict[str, tuple[str, bytes]]:
    objects = s3.list_objects_v2(Bucket="web").get("Contents", [])
    found = {}
    for item in objects:
        got = s3.get_object(Bucket="web", Key=item["Key"])
        found[item["Key"]] = (got["ContentType"], got["Body"].read())
    return found


def test_the_page_is_written_at_deploy_with_its_types_and_config_and_removed_with_the_stack(
    s3: Any, cloudformation: CloudFormationStandIn
) -> None:
    function = publisher()
    function.handler(request(cloudformation, "Create", Config=CONFIG), CONTEXT)
    files = stored(s3)
    assert {name: kind for name, (kind, _) in files.items()} == {
        "index.html": "text/html; charset=utf-8",
        "app.js": "text/javascript; charset=utf-8",
        "hash-worker.js": "text/javascript; charset=utf-8",
        "style.css": "text/css; charset=utf-8",
        "config.json": "application/json",
    }
    assert files["index.html"][1] == (PAGE / "index.html").read_bytes()
    assert json.loads(files["config.json"][1]) == CONFIG  # the deploy's settings, and no more

    # A deploy that changes the settings (another issuer: no hosted UI) rewrites them.
    function.handler(request(cloudformation, "Update", Config={"api_url": "https://x"}), CONTEXT)
    assert json.loads(stored(s3)["config.json"][1]) == {"api_url": "https://x"}

    function.handler(request(cloudformation, "Delete", Config=CONFIG), CONTEXT)
    assert stored(s3) == {}  # CloudFormation can delete the bucket now
    answers = cloudformation.answers
    assert [(a["Status"], a["PhysicalResourceId"]) for a in answers] == [("SUCCESS", "web")] * 3


def test_a_page_that_cannot_be_written_fails_the_deploy(
    s3: Any, cloudformation: CloudFormationStandIn
) -> None:
    s3.delete_bucket(Bucket="web")
    publisher().handler(request(cloudformation, "Create", Config=CONFIG), CONTEXT)
    [answer] = cloudformation.answers
    assert answer["Status"] == "FAILED"
    assert "NoSuchBucket" in answer["Reason"]


class _InlineCode(HTMLParser):
    """What a CSP without 'unsafe-inline' blocks: inline scripts and styles, style attributes,
    on* handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "style" or (tag == "script" and "src" not in names):
            self.found.append(f"<{tag}>")
        self.found += [f"{tag}[{n}]" for n in names if n == "style" or n.startswith("on")]


def test_the_page_has_no_inline_code_or_style_its_csp_would_block() -> None:
    parser = _InlineCode()
    parser.feed((PAGE / "index.html").read_text())
    assert parser.found == []
    # nor does its script write any (a style attribute set from markup or setAttribute)
    script = (PAGE / "app.js").read_text()
    assert "innerHTML" not in script and 'setAttribute("style"' not in script
