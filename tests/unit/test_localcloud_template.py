"""The template reader and resolver, on the real template.yaml (no emulator involved)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from localcloud.cloud import DEFAULT_TEMPLATE
from localcloud.provision import _environment, substitute_definition
from localcloud.template import (
    FUNCTION_TYPE,
    PhysicalResource,
    PseudoParameters,
    Resolver,
    Template,
    TemplateError,
    UnresolvedReferenceError,
    load_template_document,
)

PSEUDO = PseudoParameters(stack_name="demo", region="eu-west-1", account_id="111122223333")
DB_ARN = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:db-AbCdEf"


def template(**overrides: str) -> Template:
    return Template(DEFAULT_TEMPLATE, PSEUDO, {"DatabaseSecretArn": DB_ARN, **overrides})


def physical(t: Template) -> dict[str, PhysicalResource]:
    """Made-up physical ids for every resource, the way provisioning reports real ones."""
    resources = {}
    for lid, res in t.resources().items():
        arn = f"arn:aws:{res['Type'].split('::')[1].lower()}:eu-west-1:111122223333:{lid}"
        attributes = {"Arn": arn, "QueueName": f"demo-{lid}", "Name": f"demo-{lid}"}
        resources[lid] = PhysicalResource(lid, res["Type"], f"ref-{lid}", attributes)
    return resources


def test_short_tags_become_their_long_form() -> None:
    doc = load_template_document(DEFAULT_TEMPLATE)
    notification = doc["Resources"]["UploadBucket"]["Properties"]["NotificationConfiguration"]
    assert notification["QueueConfigurations"][0]["Queue"] == {"Fn::GetAtt": ["UploadQueue", "Arn"]}
    assert doc["Conditions"]["CreateNetwork"] == {
        "Fn::Equals": [{"Fn::Join": ["", {"Ref": "SubnetIds"}]}, ""]
    }


def test_parameters_take_defaults_and_validated_overrides() -> None:
    t = template(ChunkHeartbeatSeconds="10", SubnetIds="subnet-a, subnet-b")
    assert t.parameters["ChunkHeartbeatSeconds"] == "10"
    assert t.parameters["SpeechModel"] == "openai/whisper-large-v3"
    assert t.parameters["SubnetIds"] == ["subnet-a", "subnet-b"]
    assert t.parameters["SecurityGroupIds"] == [""]

    with pytest.raises(TemplateError, match="below 10"):
        template(ChunkHeartbeatSeconds="5")
    with pytest.raises(TemplateError, match="does not match"):
        template(DatabaseSecretArn="not-an-arn")
    with pytest.raises(TemplateError, match="unknown parameters: Nope"):
        template(Nope="x")


def test_conditions_follow_the_parameters() -> None:
    assert template().condition("CreateNetwork") is True
    assert template(SubnetIds="subnet-a").condition("CreateNetwork") is False


def test_globals_merge_into_functions() -> None:
    worker = template().properties("WorkerFunction")
    variables = worker["Environment"]["Variables"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == "worker"  # the function's own
    assert variables["STT_BUCKET"] == {"Ref": "UploadBucket"}  # from Globals
    assert worker["Layers"] == [{"Ref": "CommonLayer"}]
    assert worker["Timeout"] == 300 and worker["Runtime"] == "python3.12"


def test_the_functions_run_in_the_created_or_the_given_subnets() -> None:
    for overrides, expected in (
        ({}, ["ref-PrivateSubnetA", "ref-PrivateSubnetB"]),
        ({"SubnetIds": "subnet-a", "VpcId": "vpc-1"}, ["subnet-a"]),
    ):
        t = template(**overrides)
        vpc_config = t.properties("MergeFunction")["VpcConfig"]
        assert Resolver(t, physical(t)).resolve(vpc_config)["SubnetIds"] == expected


def test_the_local_cloud_leaves_unset_what_names_a_resource_it_does_not_create() -> None:
    # The created cache (an ElastiCache Serverless) is not made on an emulator: the local cloud
    # gives the functions its own Redis in STT_REDIS_URL instead.
    t = template()
    made = {lid: r for lid, r in physical(t).items() if lid != "Cache"}
    variables = t.properties("WorkerFunction")["Environment"]["Variables"]
    env = _environment(Resolver(t, made), variables, {"Cache"})
    assert "STT_REDIS_ENDPOINT" not in env
    assert env["STT_DATABASE_SECRET_ID"] == DB_ARN  # the given database: its secret's host
    assert "STT_DATABASE_HOST" not in env and env["STT_BUCKET"] == "ref-UploadBucket"
    with pytest.raises(UnresolvedReferenceError, match="Cache"):
        _environment(Resolver(t, made), variables, set())  # missing, though not skipped


def test_resolver_evaluates_refs_attributes_and_subs() -> None:
    t = template()
    resolver = Resolver(t, physical(t))
    bucket = resolver.resolve(t.properties("UploadBucket"))
    assert bucket["BucketName"] == "demo-uploads-111122223333"
    assert bucket["NotificationConfiguration"]["QueueConfigurations"][0]["Queue"] == (
        "arn:aws:sqs:eu-west-1:111122223333:UploadQueue"
    )
    policy = resolver.resolve(t.properties("UploadBucketTlsOnlyPolicy"))
    resources = policy["PolicyDocument"]["Statement"][0]["Resource"]
    assert resources[1] == "arn:aws:s3:eu-west-1:111122223333:UploadBucket/*"
    queue_policy = resolver.resolve(t.properties("UploadQueuePolicy"))
    condition = queue_policy["PolicyDocument"]["Statement"][0]["Condition"]
    assert condition["ArnLike"]["aws:SourceArn"] == "arn:aws:s3:::demo-uploads-111122223333"
    assert condition["StringEquals"]["aws:SourceAccount"] == "111122223333"
    machine = resolver.resolve(t.properties("TranscriptionStateMachine"))
    assert machine["DefinitionSubstitutions"]["MergeQueueUrl"] == "ref-MergeQueue"
    assert machine["Policies"][0]["SQSSendMessagePolicy"]["QueueName"] == "demo-ChunkQueueHigh"
    outputs = resolver.resolve(t.doc["Outputs"]["ApiUrl"]["Value"])
    assert outputs == "https://ref-HttpApi.execute-api.eu-west-1.amazonaws.com"


def test_resolver_reports_what_it_cannot_resolve() -> None:
    t = template()
    resolver = Resolver(t, {})
    with pytest.raises(UnresolvedReferenceError, match="UploadQueue"):
        resolver.resolve({"Fn::GetAtt": ["UploadQueue", "Arn"]})
    with pytest.raises(TemplateError, match="unknown parameter or resource Nothing"):
        resolver.resolve({"Ref": "Nothing"})
    with pytest.raises(TemplateError, match="Fn::ImportValue is not supported"):
        resolver.resolve({"Fn::ImportValue": "shared"})


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ({"Fn::Select": [1, {"Fn::Split": [",", "a,b,c"]}]}, "b"),
        (
            {"Fn::Join": ["-", [{"Ref": "AWS::StackName"}, {"Ref": "AWS::Region"}]]},
            "demo-eu-west-1",
        ),
        (
            {"Fn::Sub": ["${X}-${!Literal}", {"X": {"Ref": "AWS::AccountId"}}]},
            "111122223333-${Literal}",
        ),
        ({"Fn::If": ["CreateDatabase", "yes", "no"]}, "no"),
        ({"Fn::And": [{"Fn::Equals": ["a", "a"]}, {"Condition": "CreateDatabase"}]}, False),
        ({"Fn::Or": [{"Fn::Equals": [1, "1"]}, {"Condition": "CreateDatabase"}]}, True),
        ({"Fn::Base64": "hi"}, "aGk="),
        ({"Ref": "AWS::Partition"}, "aws"),
        ({"Ref": "AWS::URLSuffix"}, "amazonaws.com"),
        ([1, {"Ref": "AWS::NoValue"}, 2], [1, 2]),
        ({"Condition": {"Bool": {"x": "y"}}}, {"Condition": {"Bool": {"x": "y"}}}),  # a property
    ],
)
def test_intrinsic_functions(expression: Any, expected: Any) -> None:
    assert Resolver(template(), {}).resolve(expression) == expected


def test_dependencies_order_queues_before_their_users() -> None:
    t = template()
    assert t.dependencies("UploadBucket") >= {"UploadQueuePolicy", "UploadQueue"}
    assert t.dependencies("UploadQueue") == {"UploadDeadLetterQueue"}
    assert "MergeQueue" in t.dependencies("TranscriptionStateMachine")


def test_event_sources_and_routes() -> None:
    t = template()
    worker = t.sqs_event_sources("WorkerFunction")
    assert [(s.name, s.maximum_concurrency, s.batch_size) for s in worker] == [
        ("HighPriority", 20, 1),
        ("NormalPriority", 10, 1),
        ("LowPriority", 3, 1),
    ]
    assert all(s.report_batch_item_failures and s.enabled for s in worker)
    routes = t.http_api_routes("ApiFunction")
    assert {(r.method, r.path, r.api_logical_id) for r in routes} == {
        ("POST", "/uploads", "HttpApi"),
        ("GET", "/jobs", "HttpApi"),
        ("GET", "/jobs/{job_id}", "HttpApi"),
        ("DELETE", "/jobs/{job_id}", "HttpApi"),
        ("POST", "/jobs/{job_id}/rerun", "HttpApi"),
        ("POST", "/jobs/{job_id}/cancel", "HttpApi"),
        ("POST", "/webhook-secret", "HttpApi"),
        ("GET", "/webhook-secret", "HttpApi"),
        ("GET", "/stats/queues", "HttpApi"),
        ("GET", "/stats/cache", "HttpApi"),
        ("POST", "/cache/invalidations", "HttpApi"),
        ("GET", "/openapi.json", "HttpApi"),
    }
    functions = t.resources(FUNCTION_TYPE)
    assert all(
        t.local_path(t.properties(f)["CodeUri"]).parent.name == "functions" for f in functions
    )


def test_definition_substitutions_are_textual_and_keep_numbers() -> None:
    t = template(ChunkHeartbeatSeconds="10")
    machine = t.properties("TranscriptionStateMachine")
    substitutions = Resolver(t, physical(t)).resolve(machine["DefinitionSubstitutions"])
    text = t.local_path(machine["DefinitionUri"]).read_text()
    definition = json.loads(substitute_definition("Machine", text, substitutions))
    task = definition["States"]["TranscribeChunks"]["ItemProcessor"]["States"]["TranscribeChunk"]
    assert task["HeartbeatSeconds"] == 10
    assert definition["States"]["MergeTranscript"]["Parameters"]["QueueUrl"] == "ref-MergeQueue"
    with pytest.raises(TemplateError, match="ChunkHeartbeatSeconds"):
        substitute_definition("Machine", text, {})


def test_a_template_without_resources_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("Parameters: {}\n")
    with pytest.raises(TemplateError, match="no Resources"):
        load_template_document(path)
