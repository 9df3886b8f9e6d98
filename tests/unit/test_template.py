"""template.yaml and the state machine: they lint clean and keep the promises the code relies on."""

from __future__ import annotations

import graphlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcloud.cloud import DEFAULT_TEMPLATE
from localcloud.template import (
    FUNCTION_TYPE,
    PhysicalResource,
    PseudoParameters,
    Resolver,
    Template,
)
from sttpipe.adapters.migrations import latest_version
from sttpipe.cache import redis_url
from sttpipe.config import Settings
from sttpipe.speech.cloudru import SPEECH_API_KEY_PLACEHOLDER

ROOT = Path(__file__).resolve().parents[2]


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short tags (!Ref, !GetAtt ...) as plain {"Fn::X": value} nodes."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: r["Properties"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::Serverless::Function"
    }


def test_cfn_lint_is_clean() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), str(ROOT / "template.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_finds_nothing_and_every_skip_says_why(template: dict[str, Any]) -> None:
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert str(skip.get("comment", "")).strip(), f"{name} skips {skip['id']} unexplained"
    venv = Path(os.environ.get("STT_CHECKOV_VENV", ROOT / ".venv-checkov"))
    if not (venv / "bin" / "checkov").exists():
        message = f"checkov is not installed at {venv}; ./scripts/test installs it"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installed it: this check must never pass by not running
        pytest.skip(message)
    command = [str(venv / "bin" / "checkov"), "--file", str(ROOT / "template.yaml"), "--quiet"]
    result = subprocess.run(
        [*command, "--framework", "cloudformation", "--compact", "--output", "json"],
        capture_output=True,
        text=True,
    )
    report = json.loads(result.stdout)
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == [] and report["summary"]["passed"] > 0, result.stderr


def test_every_queue_driven_function_reports_partial_batch_failures(
    template: dict[str, Any],
) -> None:
    sqs_events = [
        event["Properties"]
        for props in _functions(template).values()
        for event in props.get("Events", {}).values()
        if event["Type"] == "SQS"
    ]
    assert len(sqs_events) == 6  # upload, three priorities, merge, webhook
    for event in sqs_events:
        assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_every_function_but_the_api_and_the_scheduled_ones_is_fed_by_sqs(
    template: dict[str, Any],
) -> None:
    own_trigger = {
        "ApiFunction": {"HttpApi"},
        "CacheWarmerFunction": {"Schedule"},
        "ReconcilerFunction": {"Schedule"},
        "MigrationsFunction": set(),  # CloudFormation calls it: the DatabaseSchema resource
        "WebPublisherFunction": set(),  # and the WebPage resource
    }
    for name, props in _functions(template).items():
        kinds = {e["Type"] for e in props.get("Events", {}).values()}
        assert kinds == own_trigger.get(name, {"SQS"}), name


def test_each_deploy_that_brings_a_migration_migrates_the_database(
    template: dict[str, Any],
) -> None:
    schema = template["Resources"]["DatabaseSchema"]
    assert schema["Properties"]["ServiceToken"] == {"Fn::GetAtt": ["MigrationsFunction", "Arn"]}
    assert schema["Properties"]["SchemaVersion"] == str(latest_version())


def test_high_priority_gets_the_most_workers(template: dict[str, Any]) -> None:
    events = _functions(template)["WorkerFunction"]["Events"]
    concurrency = {
        name: e["Properties"]["ScalingConfig"]["MaximumConcurrency"] for name, e in events.items()
    }
    assert concurrency["HighPriority"] > concurrency["NormalPriority"] > concurrency["LowPriority"]


@pytest.mark.parametrize("function", ["WorkerFunction", "SplitterFunction"])
def test_a_function_gives_up_exactly_when_its_queues_redrive(
    template: dict[str, Any], function: str
) -> None:
    props = _functions(template)[function]
    max_receives = int(props["Environment"]["Variables"]["STT_MAX_RECEIVES"])
    resources = template["Resources"]
    for event in props["Events"].values():
        queue = event["Properties"]["Queue"]["Fn::GetAtt"][0]
        redrive = resources[queue]["Properties"]["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == max_receives, queue


def test_queue_visibility_covers_the_consuming_function(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    default_timeout = template["Globals"]["Function"]["Timeout"]
    for props in _functions(template).values():
        for event in props.get("Events", {}).values():
            if event["Type"] != "SQS":
                continue
            queue = resources[event["Properties"]["Queue"]["Fn::GetAtt"][0]]
            visibility = queue["Properties"]["VisibilityTimeout"]
            assert visibility >= 6 * props.get("Timeout", default_timeout)


def test_a_chunk_waiting_out_its_retry_backoff_does_not_time_out_its_task(
    template: dict[str, Any],
) -> None:
    # The worker heartbeats a chunk's task when a delivery starts and while it transcribes; a
    # message hidden for its backoff shows no life, and the task would fail over if the longest
    # backoff plus a whole delivery outlasted the heartbeat.
    worker = template["Resources"]["WorkerFunction"]["Properties"]
    heartbeat = template["Parameters"]["ChunkHeartbeatSeconds"]["Default"]
    settings = Settings()
    assert settings.retry_backoff_max_s + worker["Timeout"] < heartbeat
    assert settings.heartbeat_interval_s < heartbeat


def test_state_machine_hands_chunks_and_merge_out_through_task_tokens(
    template: dict[str, Any],
) -> None:
    machine = template["Resources"]["TranscriptionStateMachine"]["Properties"]
    text = (ROOT / machine["DefinitionUri"]).read_text()
    placeholders = set(re.findall(r"\$\{(\w+)\}", text))
    assert placeholders == set(machine["DefinitionSubstitutions"])
    definition = json.loads(
        re.sub(
            r"\$\{(\w+)\}",
            lambda m: "60" if m[1].endswith(("Seconds", "PerJob")) else "q",
            text,
        )
    )

    chunks = definition["States"]["TranscribeChunks"]
    # Distributed, reading the chunk list from S3: no chunk count is too long for the input.
    assert chunks["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert chunks["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert chunks["ItemReader"]["Parameters"]["Key.$"] == "$.chunks_key"
    assert chunks["ResultPath"] is None  # nor are the results carried on
    chunk_states = chunks["ItemProcessor"]["States"]
    task = chunk_states["TranscribeChunk"]
    assert task["Resource"] == "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
    assert task["Parameters"]["MessageBody"]["task_token.$"] == "$$.Task.Token"
    assert {"HeartbeatSeconds", "TimeoutSeconds"} <= set(task)
    # Each chunk in its tenant's message group: SQS fair queues serve a quiet tenant's chunks
    # ahead of another tenant's backlog.
    assert task["Parameters"]["MessageGroupId.$"] == "$.tenant_id"
    assert chunks["ItemSelector"]["tenant_id.$"] == "$.tenant_id"
    detect = definition["States"]["DetectLanguage"]["Parameters"]
    assert detect["MessageGroupId.$"] == "$.tenant_id"
    merge = definition["States"]["MergeTranscript"]
    assert merge["Resource"] == "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
    resources = [
        state["Resource"]
        for state in (*definition["States"].values(), *chunk_states.values())
        if "Resource" in state
    ]
    assert all(r.startswith("arn:aws:states:::sqs:") for r in resources)  # no lambda:invoke


def test_the_speech_key_is_a_no_echo_parameter_or_the_placeholder_workers_never_send(
    template: dict[str, Any],
) -> None:
    assert template["Parameters"]["SpeechApiKey"]["NoEcho"] is True
    secret = template["Resources"]["SpeechApiKeySecret"]["Properties"]
    assert secret["SecretString"] == {
        "Fn::If": ["HasSpeechApiKey", {"Ref": "SpeechApiKey"}, SPEECH_API_KEY_PLACEHOLDER]
    }


def test_every_log_group_expires(template: dict[str, Any]) -> None:
    # Lambda's own log groups never expire: every function logs to the stack's, which does.
    assert template["Globals"]["Function"]["LoggingConfig"] == {
        "LogGroup": {"Ref": "FunctionLogGroup"}
    }
    assert all("LoggingConfig" not in props for props in _functions(template).values())
    groups = [r for r in template["Resources"].values() if r["Type"] == "AWS::Logs::LogGroup"]
    assert groups and all(
        g["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups
    )


def test_the_user_pool_has_every_group_the_api_grants_rights_to(
    template: dict[str, Any],
) -> None:
    groups = {
        r["Properties"]["GroupName"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Cognito::UserPoolGroup"
    }
    assert {Settings().high_priority_group, "operators"} <= groups


def test_traces_never_record_what_functions_return(template: dict[str, Any]) -> None:
    # Returned values hold upload forms, hour-long download links and tenants' transcripts:
    # X-Ray keeps them as metadata unless told not to, for every captured method.
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"


def _s3_access(props: dict[str, Any]) -> dict[str, set[str]]:
    """The S3 actions a resource's policies allow, each with the key prefixes it covers ("" for
    the bucket itself); a SAM S3 policy template (whole bucket) shows as prefix "*"."""
    access: dict[str, set[str]] = {}
    for policy in props.get("Policies", []):
        if not isinstance(policy, dict):
            continue
        for name in policy:
            if name.startswith("S3"):
                access.setdefault(name, set()).add("*")
        for statement in policy.get("Statement", []):
            actions = statement["Action"]
            actions = [actions] if isinstance(actions, str) else actions
            resources = statement["Resource"]
            resources = resources if isinstance(resources, list) else [resources]
            for action in (a for a in actions if a.startswith("s3:")):
                for resource in resources:
                    if _references(resource) - {"UploadBucket"}:
                        continue  # another bucket: the web page's
                    arn = resource["Fn::Sub"] if isinstance(resource, dict) else resource
                    bucket, _, key = arn.partition("${UploadBucket}")
                    assert bucket.endswith("s3:::"), arn
                    access.setdefault(action, set()).add(key.lstrip("/").rstrip("*"))
    return access


def test_each_part_touches_only_the_bucket_prefixes_its_code_uses(
    template: dict[str, Any],
) -> None:
    wanted = json.loads((ROOT / "infra" / "s3_access.json").read_text())
    wanted.pop("_comment")
    resources = template["Resources"]
    found = {name: _s3_access(resources[name]["Properties"]) for name in wanted}
    assert found == {
        name: {a: set(p) for a, p in access.items()} for name, access in wanted.items()
    }
    # Every other function stays out of the bucket.
    for name, props in _functions(template).items():
        if name not in wanted:
            assert _s3_access(props) == {}, name


# ------------------------------------------------------------------ the default shape, or yours
# The stack's shape is decided by its Conditions: they are evaluated here with the local
# cloud's template reader (parameters validated as CloudFormation does), and the functions'
# properties resolved against stand-in physical ids.

BRING_YOUR_OWN = {
    "DatabaseSecretArn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf",
    "RedisEndpoint": "cache.example.internal:6379",
    "RedisClusterMode": "true",
    "SubnetIds": "subnet-0a,subnet-0b",
    "VpcId": "vpc-0f",
    "SecurityGroupIds": "sg-0d",
}
NETWORK = {"Vpc", "PublicSubnet", "NatGateway", "PrivateSubnetA", "PrivateSubnetB"}
DATABASE = {"DatabaseCluster", "DatabaseInstance", "DatabaseProxy", "DatabaseProxyTargetGroup"}
CACHE = {"Cache", "CacheSecurityGroup"}
# The functions that read the job database's secret: all but the web page's publisher, which
# writes the page to its bucket and no more.
USE_DATABASE = {
    "SplitterFunction",
    "WorkerFunction",
    "MergeFunction",
    "WebhookFunction",
    "CacheWarmerFunction",
    "MigrationsFunction",
    "ReconcilerFunction",
    "ApiFunction",
}


class _Attributes(dict[str, str]):
    """Every attribute of a stand-in resource: "<logical id>.<attribute>"."""

    def __init__(self, logical_id: str) -> None:
        super().__init__()
        self.logical_id = logical_id

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return f"{self.logical_id}.{key}"


def _stack(**parameters: str) -> tuple[Template, Resolver]:
    """The template bound to `parameters`, and a resolver that knows only the resources whose
    conditions hold (so resolving anything that names another one fails)."""
    t = Template(
        DEFAULT_TEMPLATE, PseudoParameters("demo", "us-east-1", "111122223333"), parameters
    )
    physical = {
        lid: PhysicalResource(lid, res["Type"], f"ref-{lid}", _Attributes(lid))
        for lid, res in t.resources().items()
    }
    return t, Resolver(t, physical)


def _readable_secrets(props: dict[str, Any]) -> list[Any]:
    return [
        p["AWSSecretsManagerGetSecretValuePolicy"]["SecretArn"]
        for p in props.get("Policies", [])
        if isinstance(p, dict) and "AWSSecretsManagerGetSecretValuePolicy" in p
    ]


def test_the_default_stack_creates_its_network_database_and_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t, resolver = _stack()
    assert set(t.resources()) >= NETWORK | DATABASE | CACHE
    resolve = resolver.resolve
    private = ["ref-PrivateSubnetA", "ref-PrivateSubnetB"]
    zones = {
        resolve(t.properties(s)["AvailabilityZone"]) for s in ("PrivateSubnetA", "PrivateSubnetB")
    }
    assert len(zones) == 2
    assert resolve(t.properties("PrivateDefaultRoute"))["NatGatewayId"] == "ref-NatGateway"
    assert resolve(t.properties("NatGateway"))["SubnetId"] == "ref-PublicSubnet"
    # functions -> proxy -> database; functions -> cache; all in the private subnets
    for lid in ("DatabaseSubnetGroup", "DatabaseProxy", "Cache"):
        props = resolve(t.properties(lid))
        assert private in (props.get("SubnetIds"), props.get("VpcSubnetIds")), lid
    proxy = resolve(t.properties("DatabaseProxy"))
    assert proxy["Auth"][0]["SecretArn"] == "DatabaseCluster.MasterUserSecret.SecretArn"
    assert proxy["RequireTLS"] is True
    target = resolve(t.properties("DatabaseProxyTargetGroup"))
    assert target["DBClusterIdentifiers"] == ["ref-DatabaseCluster"]

    def admits(group: str) -> str:
        [rule] = resolve(t.properties(group))["SecurityGroupIngress"]
        return str(rule["SourceSecurityGroupId"])

    assert admits("DatabaseProxySecurityGroup") == "ref-FunctionSecurityGroup"
    assert admits("DatabaseSecurityGroup") == "ref-DatabaseProxySecurityGroup"
    assert admits("CacheSecurityGroup") == "ref-FunctionSecurityGroup"
    # The schema is migrated once the proxy reaches the database.
    schema = resolve(t.properties("DatabaseSchema"))
    assert schema["DatabaseTarget"] == "ref-DatabaseProxyTargetGroup"

    database_name = t.properties("DatabaseCluster")["DatabaseName"]
    for name in t.resources(FUNCTION_TYPE):
        props = t.properties(name)
        assert resolve(props["VpcConfig"]) == {
            "SubnetIds": private,
            "SecurityGroupIds": ["ref-FunctionSecurityGroup"],
        }, name
        readable = resolve(_readable_secrets(props))
        reads_it = "DatabaseCluster.MasterUserSecret.SecretArn" in readable
        assert reads_it is (name in USE_DATABASE), name
        env = resolve(props["Environment"]["Variables"])
        assert env["STT_DATABASE_SECRET_ID"] == "DatabaseCluster.MasterUserSecret.SecretArn"
        assert env["STT_DATABASE_HOST"] == "DatabaseProxy.Endpoint"
        assert env["STT_DATABASE_NAME"] == database_name
        assert env["STT_REDIS_ENDPOINT"] == "Cache.Endpoint.Address:Cache.Endpoint.Port"
        assert env["STT_REDIS_CLUSTER"] == "true"

    # ... which the code reads as a TLS Redis Cluster and the proxy's host.
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert redis_url(settings) == "rediss://Cache.Endpoint.Address:Cache.Endpoint.Port/0"
    assert settings.redis_cluster is True
    assert (settings.database_host, settings.database_name) == ("DatabaseProxy.Endpoint", "sttpipe")


def test_a_stack_given_its_network_database_and_cache_creates_none_and_uses_them() -> None:
    t, resolver = _stack(**BRING_YOUR_OWN)
    for condition in ("CreateNetwork", "CreateDatabase", "CreateCache"):
        assert t.condition(condition) is False, condition
    assert not (NETWORK | DATABASE | CACHE) & set(t.resources())
    resolve = resolver.resolve
    assert resolve(t.properties("FunctionSecurityGroup"))["VpcId"] == "vpc-0f"
    assert "DatabaseTarget" not in resolve(t.properties("DatabaseSchema"))
    for name in t.resources(FUNCTION_TYPE):
        props = t.properties(name)
        assert resolve(props["VpcConfig"]) == {
            "SubnetIds": ["subnet-0a", "subnet-0b"],
            "SecurityGroupIds": ["ref-FunctionSecurityGroup", "sg-0d"],
        }, name
        readable = resolve(_readable_secrets(props))
        assert (BRING_YOUR_OWN["DatabaseSecretArn"] in readable) is (name in USE_DATABASE), name
        env = resolve(props["Environment"]["Variables"])
        assert env["STT_DATABASE_SECRET_ID"] == BRING_YOUR_OWN["DatabaseSecretArn"]
        assert "STT_DATABASE_HOST" not in env and "STT_DATABASE_NAME" not in env  # the secret's
        assert env["STT_REDIS_ENDPOINT"] == "cache.example.internal:6379"
        assert env["STT_REDIS_CLUSTER"] == "true"
    # Without extra security groups the functions have the stack's own only.
    t, resolver = _stack(**{**BRING_YOUR_OWN, "SecurityGroupIds": ""})
    vpc_config = resolver.resolve(t.properties("ApiFunction")["VpcConfig"])
    assert vpc_config["SecurityGroupIds"] == ["ref-FunctionSecurityGroup"]


# The created cache admits only the functions' user (ElastiCache RBAC, the only access control
# of a serverless cache); a cache you bring is signed in to with your secret, if you give one.
CACHE_AUTH = {
    "CacheUserGroup",
    "CacheUser",
    "CacheDefaultUser",
    "CacheUserSecret",
    "CacheDefaultUserSecret",
}
REDIS_AUTH_SECRET = "arn:aws:secretsmanager:us-east-1:111122223333:secret:cache-AbCdEf"
DATABASE_SECRETS = {
    "DatabaseCluster.MasterUserSecret.SecretArn",
    BRING_YOUR_OWN["DatabaseSecretArn"],
}


def _redis_readers(t: Template, resolver: Resolver, secret: str) -> dict[str, bool]:
    """For each function that reads the database (the ones built on sttpipe's bootstrap, which
    makes the Redis client too): whether it gets `secret` as STT_REDIS_AUTH_SECRET_ID and may
    read it."""
    found = {}
    for name in t.resources(FUNCTION_TYPE):
        props = resolver.resolve(t.properties(name))
        readable = _readable_secrets(props)
        if not DATABASE_SECRETS & set(readable):
            continue
        env = props["Environment"]["Variables"]
        found[name] = env.get("STT_REDIS_AUTH_SECRET_ID") == secret and secret in readable
    return found


def test_the_created_cache_admits_only_the_functions_user_whose_secret_they_read() -> None:
    t, resolver = _stack()
    resolve = resolver.resolve
    assert set(t.resources()) >= CACHE_AUTH
    cache = resolve(t.properties("Cache"))
    assert cache["UserGroupId"] == "ref-CacheUserGroup"
    group = resolve(t.properties("CacheUserGroup"))
    assert sorted(group["UserIds"]) == ["ref-CacheDefaultUser", "ref-CacheUser"]
    app, default = (resolve(t.properties(u)) for u in ("CacheUser", "CacheDefaultUser"))
    assert {app["Engine"], default["Engine"], group["Engine"]} == {cache["Engine"]}
    # Every connection is `default` until it signs in: off, it can do nothing.
    assert default["UserName"] == "default"
    assert default["AccessString"].split()[0] == "off"
    # What the functions' user may do: tests/integration/test_redis_auth.py runs it.
    assert app["AccessString"].split()[0] == "on"
    # The functions' user's name and password are the secret's; the default user's password
    # is one no function reads.
    generated = {
        lid: resolve(t.properties(lid))["GenerateSecretString"]
        for lid in ("CacheUserSecret", "CacheDefaultUserSecret")
    }
    user_secret = generated["CacheUserSecret"]
    assert json.loads(user_secret["SecretStringTemplate"]) == {"username": app["UserName"]}
    key = user_secret["GenerateStringKey"]
    resolve_password = f"{{{{resolve:secretsmanager:ref-CacheUserSecret:SecretString:{key}}}}}"
    assert app["AuthenticationMode"] == {"Type": "password", "Passwords": [resolve_password]}
    assert default["AuthenticationMode"]["Passwords"] == [
        "{{resolve:secretsmanager:ref-CacheDefaultUserSecret:SecretString}}"
    ]
    # ElastiCache takes 16 to 128 characters and refuses some punctuation.
    for rules in generated.values():
        assert 16 <= rules["PasswordLength"] <= 128 and rules["ExcludePunctuation"] is True
    readers = _redis_readers(t, resolver, "ref-CacheUserSecret")
    assert readers and all(readers.values()), readers


def test_a_brought_cache_is_signed_in_to_with_its_secret_or_not_at_all() -> None:
    t, resolver = _stack(**BRING_YOUR_OWN, RedisAuthSecretArn=REDIS_AUTH_SECRET)
    assert not CACHE_AUTH & set(t.resources())
    readers = _redis_readers(t, resolver, REDIS_AUTH_SECRET)
    assert readers and all(readers.values()), readers
    # Without a secret: no AUTH, and no (empty) secret to read.
    t, resolver = _stack(**BRING_YOUR_OWN)
    for name in t.resources(FUNCTION_TYPE):
        props = resolver.resolve(t.properties(name))
        assert "STT_REDIS_AUTH_SECRET_ID" not in props["Environment"]["Variables"], name
        assert "" not in _readable_secrets(props), name


# Resource types that hold data: each says what becomes of it when the stack is deleted or the
# resource replaced; those whose data exists nowhere else keep it.
STATEFUL = {
    "AWS::RDS::DBCluster": {"Snapshot"},
    "AWS::Cognito::UserPool": {"Retain"},
    "AWS::S3::Bucket": {"Delete", "Retain"},
    "AWS::ElastiCache::ServerlessCache": {"Delete", "Snapshot", "Retain"},
}


def test_stateful_resources_declare_what_deleting_or_replacing_them_keeps(
    template: dict[str, Any],
) -> None:
    stateful = {name: r for name, r in template["Resources"].items() if r["Type"] in STATEFUL}
    assert {r["Type"] for r in stateful.values()} == set(STATEFUL)
    for name, resource in stateful.items():
        allowed = STATEFUL[resource["Type"]]
        assert resource.get("DeletionPolicy") in allowed, name
        assert resource.get("UpdateReplacePolicy") in allowed | {"Retain"}, name


def _transformed(text: str) -> dict[str, Any]:
    """The CloudFormation template `sam deploy` makes of `text` (local code paths stand in as
    S3 URIs, which is what `sam package` turns them into)."""
    from cfnlint.decode import decode_str
    from samtranslator.translator.transform import transform

    class _NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    text = re.sub(
        r"^(\s+(?:CodeUri|ContentUri|DefinitionUri)): .*$", r"\1: s3://b/k", text, flags=re.M
    )
    document, errors = decode_str(text)
    assert not errors and document is not None
    return dict(transform(document, {"AWS::Region": "us-east-1"}, _NoManagedPolicies()))


def _references(node: Any) -> set[str]:
    """The logical ids a piece of CloudFormation names (Ref, GetAtt, Sub's ${...})."""
    if isinstance(node, list):
        return set().union(*map(_references, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found: set[str] = set()
    for key, value in node.items():
        if key == "Ref" and isinstance(value, str) and not value.startswith("AWS::"):
            found.add(value)
        elif key == "Fn::GetAtt":
            found.add((value.split(".") if isinstance(value, str) else value)[0])
        elif key == "Fn::Sub":
            text = value if isinstance(value, str) else value[0]
            found |= {
                name.split(".")[0]
                for name in re.findall(r"\$\{([^!}][^}]*)\}", text)
                if not name.startswith("AWS::")
            }
            found |= _references(value[1] if isinstance(value, list) else None)
        else:
            found |= _references(value)
    return found


def test_the_deployed_template_has_no_circular_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    # cfn-lint does not see one through SAM's transform; CloudFormation refuses the stack. (A
    # page on the API's own URL would make one: UserPoolClient -> HttpApi -> UserPoolClient.)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    resources = _transformed((ROOT / "template.yaml").read_text())["Resources"]
    graph = {
        name: (_references(r.get("Properties")) | set(_as_list(r.get("DependsOn"))))
        & set(resources)
        for name, r in resources.items()
    }
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def test_the_page_is_served_by_cloudfront_from_a_private_bucket_under_a_strict_csp() -> None:
    t, resolve = _stack()
    distribution = resolve.resolve(t.properties("WebDistribution"))["DistributionConfig"]
    assert (
        resolve.resolve(t.doc["Outputs"]["WebUrl"]["Value"])
        == "https://WebDistribution.DomainName/"
    )
    assert distribution["DefaultRootObject"] == "index.html"
    assert distribution["Origins"][0]["DomainName"] == "WebBucket.RegionalDomainName"
    assert distribution["Origins"][0]["OriginAccessControlId"] == "WebOriginAccessControl.Id"
    behaviour = distribution["DefaultCacheBehavior"]
    assert behaviour["ViewerProtocolPolicy"] == "redirect-to-https"
    assert behaviour["ResponseHeadersPolicyId"] == "ref-WebHeadersPolicy"
    blocked = resolve.resolve(t.properties("WebBucket"))["PublicAccessBlockConfiguration"]
    assert blocked == dict.fromkeys(blocked, True) and len(blocked) == 4
    reader = resolve.resolve(t.properties("WebBucketPolicy"))["PolicyDocument"]["Statement"][0]
    assert reader["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert reader["Condition"]["StringEquals"]["AWS:SourceArn"].endswith(
        "distribution/ref-WebDistribution"
    )
    # The page runs its own files only, and talks to the API, the upload bucket and (with the
    # stack's user pool) the hosted UI's token endpoint.
    for parameters, sign_in in (({}, True), ({"JwtIssuer": "https://idp.example"}, False)):
        t, resolve = _stack(**parameters)
        headers = resolve.resolve(t.properties("WebHeadersPolicy"))
        config = headers["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
        policy = dict(
            [*d.split(" ", 1), ""][:2]
            for d in config["ContentSecurityPolicy"]["ContentSecurityPolicy"].split("; ")
        )
        assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
        assert policy["script-src"] == policy["style-src"] == policy["worker-src"] == "'self'"
        assert "unsafe" not in str(policy)
        hosted_ui = "https://ref-UserPoolDomain.auth.us-east-1.amazoncognito.com"
        assert (hosted_ui in policy["connect-src"].split()) is sign_in
        assert "https://ref-UploadBucket.s3.us-east-1.amazonaws.com" in policy["connect-src"]


def test_the_page_signs_in_through_the_hosted_ui_with_the_authorization_code_flow() -> None:
    t, resolve = _stack()
    client = resolve.resolve(t.properties("UserPoolClient"))
    page = "https://WebDistribution.DomainName/"
    assert client["GenerateSecret"] is False  # a browser keeps no secret: PKCE instead
    assert client["AllowedOAuthFlowsUserPoolClient"] is True
    assert client["AllowedOAuthFlows"] == ["code"]  # not implicit: tokens never in a URL
    assert "openid" in client["AllowedOAuthScopes"]  # the ID token, which names the tenant
    assert client["CallbackURLs"] == client["LogoutURLs"] == [page]
    assert t.doc["Resources"]["UserPoolDomain"]["Condition"] == "UseCognito"
    # A prefix of the stack's own: its id's UUID (unique, lowercase), here the stand-in's id.
    assert resolve.resolve(t.properties("UserPoolDomain"))["Domain"].startswith("stt-")
    hosted_ui = "https://ref-UserPoolDomain.auth.us-east-1.amazoncognito.com"
    assert resolve.resolve(t.properties("WebPage"))["Config"] == {
        "api_url": "https://ref-HttpApi.execute-api.us-east-1.amazonaws.com",
        "sign_in": {
            "authorize_endpoint": f"{hosted_ui}/oauth2/authorize",
            "token_endpoint": f"{hosted_ui}/oauth2/token",
            "logout_endpoint": f"{hosted_ui}/logout",
            "client_id": "ref-UserPoolClient",
            "redirect_uri": page,
            "scope": "openid email",
        },
    }
    # Another issuer's tokens: no user pool, no hosted UI; the page takes a pasted token.
    t, resolve = _stack(JwtIssuer="https://idp.example", JwtAudience="page")
    assert not {"UserPoolClient", "UserPoolDomain"} & set(t.resources())
    assert resolve.resolve(t.properties("WebPage"))["Config"] == {
        "api_url": "https://ref-HttpApi.execute-api.us-east-1.amazonaws.com"
    }
