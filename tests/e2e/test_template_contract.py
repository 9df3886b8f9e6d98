"""The transformed template gives every function what its code uses: the settings it reads and
the AWS calls it makes.

One pipeline run on the local cloud (moto) exercises every function: uploads with a webhook,
splitting, transcription (with a chunk retried and a malformed one dead-lettered), merging,
downloads, a job answered from the cache, a cancel and a re-run, deletions, the operators'
endpoints, the scheduled functions and the custom resources (migrations, the web page). Each
function's process records (localcloud.recording) the Settings fields its code read and every
AWS operation its boto3 clients made or pre-signed. The template is transformed with AWS's own
SAM translator, so Globals and the SAM policy templates (SQSSendMessagePolicy ...) are expanded
as CloudFormation would, then each recorded call is checked against the inline policies of the
function's role, with S3 keys, queues, secrets and state machines resolved to this stack's
resources.

What the run never does (an error path, say) is not checked: the run is wide, not exhaustive.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from sttpipe_testing.audio import read_pcm, scaled, write_wav
from sttpipe_testing.receiver import WebhookReceiver

from localcloud.cli import SAMPLE
from localcloud.client import PipelineClient
from localcloud.pipeline import LocalPipeline
from localcloud.provision import Stack
from localcloud.recording import RECORD_DIR_ENV
from localcloud.template import (
    FUNCTION_TYPE,
    Resolver,
    Template,
    UnresolvedReferenceError,
    load_template_document,
)
from sttpipe.config import Settings

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"
ENV_PREFIX = "STT_"

# Settings whose empty default is right on AWS too: the template need not set them. Any other
# setting whose default is empty ("" or None) names something the stack must provide.
EMPTY_IS_VALID_ON_AWS = {
    "default_language",  # None: the speech API detects each job's language
    "chunk_target_s",  # None: each job is cut for speed
    "speech_ca_bundle",  # None: the system's certificate authorities
    # Local stand-ins for what AWS reads from Secrets Manager or the ElastiCache endpoint.
    "database_url",
    "speech_api_key",
    "webhook_secret",
    "redis_url",
}

# Operations whose IAM action is not "<prefix>:<operation>" (the service authorization reference).
IAM_ACTION = {
    "s3:HeadObject": "s3:GetObject",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:DeleteObjects": "s3:DeleteObject",
}


@dataclass(frozen=True)
class Call:
    action: str  # the IAM action
    resources: tuple[str, ...]  # ARNs; empty when only the action is checked


# Functions whose code reads no Settings at all, and why.
READS_NO_SETTINGS = {
    "WebPublisherFunction": "its bucket and the page's config come in the request",
}


@dataclass(frozen=True)
class Recorded:
    stack: Stack
    settings: dict[str, set[str]]  # function logical id -> Settings fields its code read
    calls: dict[str, set[Call]]  # function logical id -> what it asked of AWS


# ------------------------------------------------------------------------------ the run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    return record_a_run(tmp_path_factory.mktemp("run"))


def record_a_run(scratch: Path) -> Recorded:
    """Run the pipeline once with recording on; what each function did, by logical id."""
    records = scratch / "records"
    records.mkdir()
    with (
        WebhookReceiver() as receiver,
        LocalPipeline(
            emulator="moto",
            engine="none",
            # A failed chunk comes back within seconds (a retry hides it for its backoff).
            visibility_timeout_cap_s=6,
            function_env={
                RECORD_DIR_ENV: str(records),
                # Every job that claims to run is checked by the reconciler, however young.
                "STT_RECONCILE_AFTER_S": "0",
                # The speech API's failures open the circuit breaker for a moment only.
                "STT_SPEECH_BREAKER_COOLDOWN_S": "1",
            },
            log_dir=scratch / "logs",
        ) as pipeline,
    ):
        _exercise(pipeline, receiver, scratch)
        stack = pipeline.cloud.stack
    names = {fn.name: lid for lid, fn in stack.functions.items()}
    settings: dict[str, set[str]] = defaultdict(set)
    calls: dict[str, set[Call]] = defaultdict(set)
    for path in records.glob("*.jsonl"):
        lid = names[path.stem]
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if "setting" in entry:
                settings[lid].add(entry["setting"])
            else:
                calls[lid].add(_call(entry["call"], entry["params"], stack))
    return Recorded(stack, dict(settings), dict(calls))


def _exercise(pipeline: LocalPipeline, receiver: WebhookReceiver, work: Path) -> None:
    host = pipeline.cloud.host
    with (
        closing(PipelineClient(pipeline.api_url, token=pipeline.token())) as client,
        httpx.Client(
            base_url=pipeline.api_url,
            headers={"authorization": f"Bearer {pipeline.token(operator=True)}"},
            timeout=60,  # a cold start on a busy machine
        ) as operator,
    ):
        # A job with a webhook: upload form, split, transcribe (a chunk failing at first:
        # retried later, its siblings deferred by the open breaker), merge, deliver, download.
        pipeline.speech.control(script=["5xx"] * 6)
        first = _submit_with_webhook(operator, SAMPLE, receiver.url)
        assert client.follow(first, work / "transcripts").status == "COMPLETED"
        assert receiver.arrived.wait(60), "the webhook was never delivered"
        # The same file again: the API answers it from the cache and queues its webhook.
        again = _submit_with_webhook(operator, SAMPLE, receiver.url)
        assert client.wait(again, timeout_s=60)["status"] == "COMPLETED"

        # A malformed chunk message goes straight to its queue's dead-letter queue.
        _dead_letter_a_malformed_chunk(pipeline)

        # Audio nobody has heard, on a slow speech API: reconciled and cancelled mid-way.
        other = work / "quieter.wav"
        write_wav(other, scaled(read_pcm(SAMPLE), 0.8))
        pipeline.speech.control(latency_s=2.0)
        try:
            slow = client.submit(other, language="en").job_id
            deadline = time.monotonic() + 120
            while pipeline.speech.stats()["requests_total"] == 0:
                assert time.monotonic() < deadline, client.job(slow)["status"]
                time.sleep(0.2)
            _invoke(pipeline, "ReconcilerFunction", "reconciler-schedule.json")
            assert client.cancel(slow)
        finally:
            pipeline.speech.control(latency_s=0.0)
        client.rerun(slow)
        assert client.wait(slow, timeout_s=120)["status"] == "COMPLETED"

        for path in ("/stats/queues", "/stats/cache", "/webhook-secret"):
            assert operator.get(path).status_code == 200, path
        assert operator.post("/webhook-secret").status_code == 201
        invalidated = operator.post("/cache/invalidations", json={"pipeline_version": "0"})
        assert invalidated.status_code == 200, invalidated.text
        _invoke(pipeline, "CacheWarmerFunction", "cache-warmer-schedule.json")
        for job_id in (first, again, slow):
            client.delete(job_id)

    # CloudFormation asks for the schema at deploy and takes the answer at a pre-signed URL.
    s3 = pipeline.cloud.boto3_client("s3")
    s3.create_bucket(Bucket="cloudformation-answers")
    answer = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "cloudformation-answers", "Key": "schema"}
    )
    stack = pipeline.cloud.stack
    schema = _custom_resource("MigrationsFunction", "DatabaseSchema", stack, answer)
    invocation = host.invoke("MigrationsFunction", schema)
    assert invocation.outcome == "ok", invocation.error
    # The page is written to its bucket at deploy and removed with the stack.
    page = {"Bucket": stack.ref("WebBucket"), "Config": {"apiUrl": pipeline.api_url}}
    for request_type in ("Create", "Delete"):
        published = _custom_resource(
            "WebPublisherFunction", "WebPage", stack, answer, request_type, page
        )
        invocation = host.invoke("WebPublisherFunction", published)
        assert invocation.outcome == "ok", invocation.error


def _dead_letter_a_malformed_chunk(pipeline: LocalPipeline) -> None:
    sqs, stack = pipeline.cloud.boto3_client("sqs"), pipeline.cloud.stack
    sqs.send_message(QueueUrl=stack.ref("ChunkQueueLow"), MessageBody="not a chunk")
    deadline = time.monotonic() + 60
    while not sqs.receive_message(
        QueueUrl=stack.ref("ChunkDeadLetterQueueLow"), VisibilityTimeout=60, WaitTimeSeconds=1
    ).get("Messages"):
        assert time.monotonic() < deadline, "the malformed chunk was not dead-lettered"


def _submit_with_webhook(api: httpx.Client, path: Path, webhook_url: str) -> str:
    body = path.read_bytes()
    created = api.post(
        "/uploads",
        json={
            "filename": path.name,
            "content_type": "audio/flac",
            "size_bytes": len(body),
            "language": "en",
            "webhook_url": webhook_url,
            "sha256": hashlib.sha256(body).hexdigest(),
        },
    )
    assert created.status_code == 201, created.text
    ticket = created.json()
    if ticket["upload"] is not None:
        form = ticket["upload"]
        sent = httpx.post(
            form["url"],
            data=form["fields"],
            files={"file": (path.name, body, "audio/flac")},
            timeout=60,
        )
        assert sent.is_success, sent.text
    return str(ticket["job_id"])


def _invoke(pipeline: LocalPipeline, function: str, event_file: str) -> None:
    event = json.loads((EVENTS / event_file).read_text())
    invocation = pipeline.cloud.host.invoke(function, event)
    assert invocation.outcome == "ok", invocation.error


def _custom_resource(
    function: str,
    logical_id: str,
    stack: Stack,
    response_url: str,
    request_type: str = "Update",
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The request CloudFormation sends a custom resource's function at deploy."""
    return {
        "RequestType": request_type,
        "ServiceToken": stack.functions[function].arn,
        "ResponseURL": response_url,
        "StackId": f"arn:aws:cloudformation:{stack.pseudo.region}:{stack.pseudo.account_id}:"
        f"stack/{stack.name}/local",
        "RequestId": "contract-test",
        "LogicalResourceId": logical_id,
        "PhysicalResourceId": f"sttpipe-{logical_id.lower()}",
        "ResourceType": f"Custom::{logical_id}",
        "ResourceProperties": properties or {},
        "OldResourceProperties": properties or {},
    }


def _call(operation: str, params: dict[str, Any], stack: Stack) -> Call:
    """The IAM action of a recorded operation and the ARNs it acts on, where they are known."""
    action = IAM_ACTION.get(operation, operation)
    pseudo = stack.pseudo
    resources: list[str] = []
    if "Bucket" in params:
        bucket = f"arn:{pseudo.partition}:s3:::{params['Bucket']}"
        keys = [params["Key"]] if "Key" in params else []
        keys += [o["Key"] for o in params.get("Delete", {}).get("Objects", [])]
        resources = [f"{bucket}/{key}" for key in keys] or [bucket]
    elif "QueueUrl" in params:
        account, name = urlsplit(params["QueueUrl"]).path.strip("/").split("/")[-2:]
        resources = [f"arn:{pseudo.partition}:sqs:{pseudo.region}:{account}:{name}"]
    elif str(params.get("SecretId", "")).startswith("arn:"):
        resources = [params["SecretId"]]
    elif "stateMachineArn" in params or "executionArn" in params:
        resources = [params.get("stateMachineArn") or params["executionArn"]]
    return Call(action, tuple(resources))


# ------------------------------------------------------------------------------ the template


def transformed_template(path: Path, region: str) -> dict[str, Any]:
    """The template as CloudFormation runs it: SAM's own translator, local code paths standing
    for the S3 locations `sam package` would upload them to."""
    document = load_template_document(path)
    for resource in document["Resources"].values():
        properties = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str):
                properties[key] = f"s3://packaged/{properties[key]}"
        if isinstance(properties.get("DefinitionUri"), str):
            properties["DefinitionUri"] = {"Bucket": "packaged", "Key": properties["DefinitionUri"]}
    translator = Translator(
        managed_policy_map=None, sam_parser=Parser(), boto_session=boto3.Session(region_name=region)
    )
    return translator.translate(sam_template=document, parameter_values={})


@dataclass(frozen=True)
class Grant:
    actions: tuple[str, ...]  # may hold IAM wildcards
    resources: tuple[str, ...]


def grants_of_functions(path: Path, stack: Stack, scratch: Path) -> dict[str, list[Grant]]:
    """Each function's Allow statements in the transformed template, resolved on `stack`.

    Only the inline policies count: the managed ones SAM attaches (logs, X-Ray, VPC, the SQS
    event source's polling) serve the Lambda service, not the function's code."""
    transformed = scratch / "transformed.json"
    transformed.write_text(json.dumps(transformed_template(path, stack.pseudo.region)))
    parameters = {
        name: ",".join(value) if isinstance(value, list) else str(value)
        for name, value in stack.parameters.items()
    }
    template = Template(transformed, stack.pseudo, parameters)
    resolver = Resolver(template, stack.resources)
    grants: dict[str, list[Grant]] = {}
    for lid, function in template.resources("AWS::Lambda::Function").items():
        role = function["Properties"]["Role"]["Fn::GetAtt"][0]
        policies = template.doc["Resources"][role]["Properties"].get("Policies", [])
        statements = [
            statement
            for policy in _in_force(template, policies)
            for statement in policy["PolicyDocument"]["Statement"]
            if statement["Effect"] == "Allow"
        ]
        grants[lid] = [_grant(resolver, statement) for statement in statements]
    return grants


def _in_force(template: Template, policies: list[Any]) -> Iterator[dict[str, Any]]:
    """The inline policies whose conditions hold on the stack: SAM keeps the `!If` a policy
    is given in (`!If [HasRedisAuth, {AWSSecretsManagerGetSecretValuePolicy: ...}, NoValue]`)
    around the policy it makes."""
    for policy in policies:
        while "Fn::If" in policy:
            condition, if_true, if_false = policy["Fn::If"]
            policy = if_true if template.condition(condition) else if_false
        if policy != {"Ref": "AWS::NoValue"}:
            yield policy


def _grant(resolver: Resolver, statement: dict[str, Any]) -> Grant:
    actions, resources = statement["Action"], statement["Resource"]
    try:
        resolved = resolver.resolve(resources)
    except UnresolvedReferenceError:  # a resource the emulator does not have: grants nothing here
        resolved = []
    return Grant(
        tuple(actions if isinstance(actions, list) else [actions]),
        tuple(resolved if isinstance(resolved, list) else [resolved]),
    )


def _matches(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    """IAM's wildcards: * any run of characters, ? one character."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


def disallowed(call: Call, grants: list[Grant]) -> list[str]:
    """What of `call` no grant allows: its action, or each resource no grant of it covers."""
    granting = [
        g for g in grants if any(_matches(a, call.action, case_sensitive=False) for a in g.actions)
    ]
    if not granting:
        return [call.action]
    return [
        f"{call.action} on {resource}"
        for resource in call.resources
        if not any(_matches(r, resource) for g in granting for r in g.resources)
    ]


def function_environments(path: Path, region: str) -> dict[str, set[str]]:
    """Each function's environment variable names, Globals merged (by SAM)."""
    resources = transformed_template(path, region)["Resources"]
    return {
        lid: set(r["Properties"].get("Environment", {}).get("Variables", {}))
        for lid, r in resources.items()
        if r["Type"] == "AWS::Lambda::Function"
    }


# ------------------------------------------------------------------------------ the checks


def needs_the_template(field: str) -> bool:
    default = Settings.model_fields[field].default
    return default in ("", None) and field not in EMPTY_IS_VALID_ON_AWS


def unset_settings(recorded: Recorded, template: Path) -> dict[str, list[str]]:
    """Function -> the variables of the settings its code read that need a value on AWS and
    that the template does not set."""
    environments = function_environments(template, recorded.stack.pseudo.region)
    unset = {
        lid: sorted(
            name
            for name in (
                f"{ENV_PREFIX}{field.upper()}" for field in read if needs_the_template(field)
            )
            if name not in environments[lid]
        )
        for lid, read in recorded.settings.items()
    }
    return {lid: names for lid, names in unset.items() if names}


def unknown_variables(template: Path) -> dict[str, list[str]]:
    """Function -> the STT_ variables the template sets that name no setting."""
    known = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
    unknown = {
        lid: sorted(n for n in names if n.startswith(ENV_PREFIX) and n not in known)
        for lid, names in function_environments(template, "us-east-1").items()
    }
    return {lid: names for lid, names in unknown.items() if names}


def denied_calls(recorded: Recorded, template: Path, scratch: Path) -> dict[str, list[str]]:
    """Function -> what of the calls its code made its policy does not allow."""
    grants = grants_of_functions(template, recorded.stack, scratch)
    denied = {
        lid: sorted({why for call in calls for why in disallowed(call, grants[lid])})
        for lid, calls in recorded.calls.items()
    }
    return {lid: why for lid, why in denied.items() if why}


def test_every_function_ran_read_settings_and_called_aws(recorded: Recorded) -> None:
    """Else the checks below would pass on what was never recorded."""
    functions = {
        lid
        for lid, resource in load_template_document(TEMPLATE)["Resources"].items()
        if resource["Type"] == FUNCTION_TYPE
    }
    assert functions - set(READS_NO_SETTINGS) <= set(recorded.settings)
    assert functions <= set(recorded.calls)


def test_every_setting_a_function_needs_is_set_by_the_template(recorded: Recorded) -> None:
    assert unset_settings(recorded, TEMPLATE) == {}


def test_every_stt_variable_the_template_sets_is_a_setting() -> None:
    assert unknown_variables(TEMPLATE) == {}


def test_every_aws_call_a_function_makes_is_allowed_by_its_policy(
    recorded: Recorded, tmp_path: Path
) -> None:
    assert denied_calls(recorded, TEMPLATE, tmp_path) == {}
