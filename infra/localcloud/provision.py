"""Creating the template's resources on an AWS-compatible endpoint (moto, LocalStack, AWS-like).

Only what the pipeline needs is created: S3 buckets (with CORS, encryption, public access block,
ownership and the S3 -> SQS notification), SQS queues and their policies, Secrets Manager
secrets, Step Functions state machines, and for operations KMS keys, SNS topics, EventBridge
buses, CloudWatch alarms and dashboards. Functions are not deployed: the local function host
runs them, so they appear in the `Stack` as `FunctionSpec`s with their environment resolved.
Nor are the VPC, database and cache the default stack makes (they are `Stack.skipped`): the
local cloud brings its own PostgreSQL (the DatabaseSecretArn parameter) and Redis (STT_REDIS_URL).
Everything is idempotent: provisioning again on the same endpoint reuses what exists.
"""

from __future__ import annotations

import graphlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from localcloud.emulators import Endpoint
from localcloud.template import (
    FUNCTION_TYPE,
    HTTP_API_TYPE,
    LAYER_TYPE,
    NO_VALUE,
    HttpApiRoute,
    PhysicalResource,
    PseudoParameters,
    Resolver,
    SqsEventSource,
    Template,
    TemplateError,
    UnresolvedReferenceError,
    references,
)

log = logging.getLogger(__name__)

# SQS queue attributes that CloudFormation takes as properties of the same name.
_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
)
# A secret's GenerateSecretString keys that GetRandomPassword takes as they are.
_PASSWORD_OPTIONS = (
    "PasswordLength",
    "ExcludeCharacters",
    "ExcludeNumbers",
    "ExcludePunctuation",
    "ExcludeUppercase",
    "ExcludeLowercase",
    "IncludeSpace",
    "RequireEachIncludedType",
)
_SUBSTITUTION = re.compile(r"\$\{([A-Za-z0-9_.:-]+)\}")


@dataclass(frozen=True)
class ExtraSecret:
    """A secret the template does not declare, created before parameters are bound.

    `parameter` names the template parameter that receives its ARN (e.g. DatabaseSecretArn).
    """

    value: str
    parameter: str | None = None


@dataclass(frozen=True)
class BoundSqsSource:
    """A function's SQS event source with its queue found on the endpoint."""

    event: SqsEventSource
    queue_arn: str
    queue_url: str


@dataclass(frozen=True)
class FunctionSpec:
    """Everything the function host needs to run one AWS::Serverless::Function locally."""

    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str  # "module.function", as in the template
    layer_dirs: tuple[Path, ...]
    runtime: str
    timeout_s: int
    memory_mb: int
    environment: Mapping[str, str]
    sqs_sources: tuple[BoundSqsSource, ...]
    http_routes: tuple[HttpApiRoute, ...]


@dataclass
class Stack:
    """The provisioned stack: logical id -> physical resource, plus the functions to host."""

    name: str
    endpoint: Endpoint
    pseudo: PseudoParameters
    parameters: dict[str, Any]
    resources: dict[str, PhysicalResource]
    functions: dict[str, FunctionSpec]
    # HttpApi logical id (None: SAM's implicit API) -> its resolved CorsConfiguration.
    http_api_cors: dict[str | None, dict[str, Any] | None]
    extra_secret_arns: dict[str, str]
    outputs: dict[str, str]
    skipped: dict[str, str] = field(default_factory=dict)  # logical id -> why not created

    def ref(self, logical_id: str) -> str:
        return self.resources[logical_id].ref

    def attribute(self, logical_id: str, name: str) -> str:
        return self.resources[logical_id].attributes[name]

    def of_type(self, type_: str) -> dict[str, PhysicalResource]:
        return {lid: r for lid, r in self.resources.items() if r.type == type_}


def provision(
    template_path: Path,
    endpoint: Endpoint,
    *,
    stack_name: str,
    parameter_overrides: Mapping[str, str] | None = None,
    secret_values: Mapping[str, str] | None = None,
    extra_secrets: Mapping[str, ExtraSecret] | None = None,
    visibility_timeout_cap_s: int | None = None,
) -> Stack:
    """Create (or find) every resource of the template on `endpoint` and return the `Stack`.

    secret_values: logical id of an AWS::SecretsManager::Secret -> its value (e.g. the local
        speech server's API key); other secrets get a GenerateSecretString value.
    extra_secrets: name -> secret to create first (named "<stack>/<name>"); its ARN is in
        `Stack.extra_secret_arns` and, if it names a parameter, becomes that parameter's value.
    visibility_timeout_cap_s: TEST ONLY. Caps every queue's VisibilityTimeout so that failed
        messages come back within seconds instead of the template's minutes; leave it None
        anywhere else (on AWS the template's values apply).
    """
    sts = endpoint.client("sts")
    pseudo = PseudoParameters(
        stack_name=stack_name,
        region=endpoint.region,
        account_id=sts.get_caller_identity()["Account"],
    )
    secrets = endpoint.client("secretsmanager")
    extra_arns = {
        name: _ensure_secret(secrets, f"{stack_name}/{name}", secret.value, force=True)
        for name, secret in (extra_secrets or {}).items()
    }
    overrides = dict(parameter_overrides or {})
    for name, secret in (extra_secrets or {}).items():
        if secret.parameter:
            overrides[secret.parameter] = extra_arns[name]

    template = Template(template_path, pseudo, overrides)
    provisioner = _Provisioner(
        template, endpoint, dict(secret_values or {}), visibility_timeout_cap_s
    )
    provisioner.create_all()
    resources = provisioner.resources
    resolver = Resolver(template, resources)
    return Stack(
        name=stack_name,
        endpoint=endpoint,
        pseudo=pseudo,
        parameters=template.parameters,
        resources=resources,
        functions={
            lid: _function_spec(template, resolver, lid, set(provisioner.skipped))
            for lid in template.resources(FUNCTION_TYPE)
        },
        http_api_cors=_http_api_cors(template, resolver),
        extra_secret_arns=extra_arns,
        outputs=_outputs(template, resolver),
        skipped=provisioner.skipped,
    )


class _NotOnEmulator(Exception):
    """The emulator cannot create this resource; the rest of the stack does not need it."""


class _Provisioner:
    def __init__(
        self,
        template: Template,
        endpoint: Endpoint,
        secret_values: dict[str, str],
        visibility_timeout_cap_s: int | None,
    ) -> None:
        self.template = template
        self.endpoint = endpoint
        self.secret_values = secret_values
        self.visibility_cap = visibility_timeout_cap_s
        self.resources: dict[str, PhysicalResource] = {}
        self.skipped: dict[str, str] = {}
        self.resolver = Resolver(template, self.resources)  # sees resources as they appear
        self._clients: dict[str, Any] = {}
        self._creators: dict[str, Callable[[str, dict[str, Any]], PhysicalResource]] = {
            "AWS::SQS::Queue": self._queue,
            "AWS::SQS::QueuePolicy": self._queue_policy,
            "AWS::S3::Bucket": self._bucket,
            "AWS::SecretsManager::Secret": self._secret,
            "AWS::Serverless::StateMachine": self._state_machine,
            "AWS::KMS::Key": self._kms_key,
            "AWS::SNS::Topic": self._topic,
            "AWS::Events::EventBus": self._event_bus,
            "AWS::CloudWatch::Alarm": self._alarm,
            "AWS::CloudWatch::Dashboard": self._dashboard,
            "AWS::StepFunctions::StateMachine": self._state_machine,
            FUNCTION_TYPE: self._function,
        }

    def create_all(self) -> None:
        declared = self.template.resources()
        order = graphlib.TopologicalSorter(
            {lid: self.template.dependencies(lid) & set(declared) for lid in declared}
        )
        for lid in order.static_order():
            type_ = declared[lid]["Type"]
            creator = self._creators.get(type_)
            if creator is None:
                self.skipped[lid] = f"{type_} is not created on the emulator"
                continue
            try:
                self.resources[lid] = creator(lid, self.template.properties(lid))
            except UnresolvedReferenceError as e:
                raise TemplateError(f"{lid}: {e}") from e
            except _NotOnEmulator as e:
                self.skipped[lid] = str(e)
                log.warning("not provisioned: %s: %s", lid, e)
                continue
            log.debug("provisioned %s -> %s", lid, self.resources[lid].ref)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.endpoint.client(service)
        return self._clients[service]

    def _physical_name(self, logical_id: str) -> str:
        # CloudFormation appends a random suffix; a fixed one makes provisioning idempotent.
        return f"{self.template.pseudo.stack_name}-{logical_id}"

    def _arn(self, service: str, resource: str, *, region: bool = True) -> str:
        p = self.template.pseudo
        return f"arn:{p.partition}:{service}:{p.region if region else ''}:{p.account_id}:{resource}"

    # -- SQS

    def _queue(self, lid: str, props: dict[str, Any]) -> PhysicalResource:
        sqs = self.client("sqs")
        resolved = self.resolver.resolve(props)
        name = resolved.get("QueueName") or self._physical_name(lid)
        if resolved.get("FifoQueue") and not name.endswith(".fifo"):
            name += ".fifo"
        attributes = {k: _attr_text(resolved[k]) for k in _QUEUE_ATTRIBUTES if k in resolved}
        for policy in ("RedrivePolicy", "RedriveAllowPolicy"):
            if policy in resolved:
                attributes[policy] = json.dumps(resolved[policy])
        if self.visibility_cap is not None:
            vt = int(attributes.get("VisibilityTimeout", "30"))
            attributes["VisibilityTimeout"] = str(min(vt, self.visibility_cap))
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            mutable = {k: v for k, v in attributes.items() if k != "FifoQueue"}
            if mutable:
                sqs.set_queue_attributes(QueueUrl=url, Attributes=mutable)
        except sqs.exceptions.QueueDoesNotExist:
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        return PhysicalResource(
            lid, "AWS::SQS::Queue", url, {"Arn": arn, "QueueName": name, "QueueUrl": url}
        )

    def _queue_policy(self, lid: str, props: dict[str, Any]) -> PhysicalResource:
        sqs = self.client("sqs")
        resolved = self.resolver.resolve(props)
        policy = json.dumps(resolved["PolicyDocument"])
        for url in resolved["Queues"]:
            sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy})
        return PhysicalResource(lid, "AWS::SQS::QueuePolicy", self._physical_name(lid))

    # -- S3

    def _bucket(self, lid: str, props: dict[str, Any]) -> PhysicalResource:
        s3 = self.client("s3")
        # Resolve piece by piece: only what is applied below has to be resolvable.
        name = (
            self.resolver.resolve_str(props["BucketName"])
            if "BucketName" in props
            else self._physical_name(lid).lower()
        )
        try:
            s3.head_bucket(Bucket=name)
        except ClientError:
            region = self.endpoint.region
            extra = {} if region == "us-east-1" else {"LocationConstraint": region}
            s3.create_bucket(Bucket=name, **({"CreateBucketConfiguration": extra} if extra else {}))
        if "CorsConfiguration" in props:
            rules = self.resolver.resolve(props["CorsConfiguration"])["CorsRules"]
            s3.put_bucket_cors(
                Bucket=name, CORSConfiguration={"CORSRules": [_cors_rule(r) for r in rules]}
            )
        if "BucketEncryption" in props:
            rules = self.resolver.resolve(props["BucketEncryption"])[
                "ServerSideEncryptionConfiguration"
            ]
            s3.put_bucket_encryption(
                Bucket=name,
                ServerSideEncryptionConfiguration={"Rules": [_encryption_rule(r) for r in rules]},
            )
        if "PublicAccessBlockConfiguration" in props:
            s3.put_public_access_block(
                Bucket=name,
                PublicAccessBlockConfiguration=self.resolver.resolve(
                    props["PublicAccessBlockConfiguration"]
                ),
            )
        if "OwnershipControls" in props:
            s3.put_bucket_ownership_controls(
                Bucket=name, OwnershipControls=self.resolver.resolve(props["OwnershipControls"])
            )
        if "NotificationConfiguration" in props:
            notification = self.resolver.resolve(props["NotificationConfiguration"])
            s3.put_bucket_notification_configuration(
                Bucket=name, NotificationConfiguration=_notification(lid, notification)
            )
        # Not applied: LifecycleConfiguration (expiry does not matter to a local run) and
        # bucket policies (a TLS-only deny would lock out the emulator's plain-http endpoint).
        return PhysicalResource(
            lid,
            "AWS::S3::Bucket",
            name,
            {
                "Arn": f"arn:{self.template.pseudo.partition}:s3:::{name}",
                "DomainName": f"{name}.s3.{self.template.pseudo.url_suffix}",
                "RegionalDomainName": (
                    f"{name}.s3.{self.endpoint.region}.{self.template.pseudo.url_suffix}"
                ),
            },
        )

    # -- Secrets Manager

    def _secret(self, lid: str, props: dict[str, Any]) -> PhysicalResource:
        client = self.client("secretsmanager")
        resolved = self.resolver.resolve(props)
        name = resolved.get("Name") or self._physical_name(lid)
        given = self.secret_values.get(lid)

        def value() -> str:
            if given is not None:
                return given
            if "SecretString" in resolved:
                return str(resolved["SecretString"])
            return _generate_secret_string(client, resolved.get("GenerateSecretString") or {})

        arn = _ensure_secret(client, name, value, force=given is not None)
        return PhysicalResource(lid, "AWS::SecretsManager::Secret", arn, {"Id": arn})

    # -- Step Functions

    def _state_machine(self, lid: str, props: dict[str, Any]) -> PhysicalResource:
        sfn = self.client("stepfunctions")
        name = self.resolver.resolve_str(props.get("Name") or props.get("StateMachineName") or "")
        name = name or self._physical_name(lid)
        if "DefinitionUri" in props:
            text = self.template.local_path(props["DefinitionUri"]).read_text(encoding="utf-8")
        elif "DefinitionString" in props:
            text = self.resolver.resolve_str(props["DefinitionString"])
        else:
            text = json.dumps(self.resolver.resolve(props["Definition"]))
        substitutions = self.resolver.resolve(props.get("DefinitionSubstitutions") or {})
        definition = substitute_definition(lid, text, substitutions)
        # Neither emulator checks IAM; the role only has to look like one.
        role = self._arn("iam", f"role/{self._physical_name(lid)}-role", region=False)
        existing = {
            m["name"]: m["stateMachineArn"]
            for page in sfn.get_paginator("list_state_machines").paginate()
            for m in page["stateMachines"]
        }
        if name in existing:
            arn = existing[name]
            sfn.update_state_machine(stateMachineArn=arn, definition=definition, roleArn=role)
        else:
            arn = sfn.create_state_machine(
                name=name,
                definition=definition,
                roleArn=role,
                type=str(props.get("Type", "STANDARD")),
            )["stateMachineArn"]
        return PhysicalResource(lid, "AWS::StepFunctions::StateMachine", arn, {"Name": name})

    # -- operations: keys, topics, the event bus, alarms and dashboards

    def _kms_key(self, lid: str, props: dict[str, Any]) -> PhysicalResource:
        kms = self.client("kms")
        # Keys have no names; an alias per logical id makes provisioning idempotent.
        alias = f"alias/{self._physical_name(lid)}"
        try:
            key_id = kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"]
        except kms.exceptions.NotFoundException:
            resolved = self.resolver.resolve(props)
            key_id = kms.create_key(
                Description=str(resolved.get("Description", lid)),
                Policy=json.dumps(resolved["KeyPolicy"]),
            )["KeyMetadata"]["KeyId"]
            kms.create_alias(AliasName=alias, TargetKeyId=key_id)
        arn = self._arn("kms", f"key/{key_id}")
        return PhysicalResource(lid, "AWS::KMS::Key", key_id, {"Arn": arn, "KeyId": key_id})

    def _topic(self, lid: str, props: dict[str, Any]) -> PhysicalResource:
        resolved = self.resolver.resolve(props)
        attributes = {
            k: _attr_text(resolved[k]) for k in ("DisplayName", "KmsMasterKeyId") if k in resolved
        }
        name = resolved.get("TopicName") or self._physical_name(lid)
        arn = self.client("sns").create_topic(Name=name, Attributes=attributes)["TopicArn"]
        return PhysicalResource(lid, "AWS::SNS::Topic", arn, {"TopicArn": arn, "TopicName": name})

    def _event_bus(self, lid: str, props: dict[str, Any]) -> PhysicalResource:
        events = self.client("events")
        name = self.resolver.resolve_str(props.get("Name") or self._physical_name(lid))
        try:
            arn = events.create_event_bus(Name=name)["EventBusArn"]
        except events.exceptions.ResourceAlreadyExistsException:
            arn = events.describe_event_bus(Name=name)["Arn"]
        return PhysicalResource(lid, "AWS::Events::EventBus", name, {"Arn": arn, "Name": name})

    def _alarm(self, lid: str, props: dict[str, Any]) -> PhysicalResource:
        cloudwatch = self.client("cloudwatch")
        # PutMetricAlarm takes the resource's properties under the same names; it is an upsert.
        resolved = self.resolver.resolve(props)
        name = resolved.pop("AlarmName", None) or self._physical_name(lid)
        if "Threshold" in resolved:
            resolved["Threshold"] = float(resolved["Threshold"])
        try:
            cloudwatch.put_metric_alarm(AlarmName=name, **resolved)
        except ClientError as e:
            # e.g. anomaly detection bands, which not every emulator evaluates
            raise _NotOnEmulator(f"the emulator refused the alarm: {e}") from e
        arn = self._arn("cloudwatch", f"alarm:{name}")
        return PhysicalResource(lid, "AWS::CloudWatch::Alarm", name, {"Arn": arn})

    def _dashboard(self, lid: str, props: dict[str, Any]) -> PhysicalResource:
        name = self.resolver.resolve_str(props.get("DashboardName") or self._physical_name(lid))
        # A dashboard only displays: what the emulator lacks (the HttpApi) keeps its logical id.
        stand_ins = {
            skipped: PhysicalResource(skipped, "AWS::NoValue", skipped) for skipped in self.skipped
        }
        body = Resolver(self.template, {**stand_ins, **self.resources}).resolve_str(
            props["DashboardBody"]
        )
        self.client("cloudwatch").put_dashboard(DashboardName=name, DashboardBody=body)
        return PhysicalResource(lid, "AWS::CloudWatch::Dashboard", name)

    # -- functions: run by the function host, so only their names exist

    def _function(self, lid: str, props: dict[str, Any]) -> PhysicalResource:
        name = self.resolver.resolve_str(props.get("FunctionName") or self._physical_name(lid))
        arn = self._arn("lambda", f"function:{name}")
        return PhysicalResource(lid, FUNCTION_TYPE, name, {"Arn": arn})


def _attr_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _cors_rule(rule: dict[str, Any]) -> dict[str, Any]:
    renamed = {"Id": "ID", "MaxAge": "MaxAgeSeconds", "ExposedHeaders": "ExposeHeaders"}
    return {renamed.get(k, k): v for k, v in rule.items()}


def _encryption_rule(rule: dict[str, Any]) -> dict[str, Any]:
    renamed = {"ServerSideEncryptionByDefault": "ApplyServerSideEncryptionByDefault"}
    return {renamed.get(k, k): v for k, v in rule.items()}


def _notification(lid: str, config: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's NotificationConfiguration in the S3 API's shape (queues only)."""
    if config.get("LambdaConfigurations") or config.get("TopicConfigurations"):
        # S3 -> Lambda cannot run here (no Docker); the design routes S3 events through SQS.
        log.warning("%s: only QueueConfigurations are applied locally", lid)
    queues = []
    for q in config.get("QueueConfigurations") or []:
        entry: dict[str, Any] = {"QueueArn": q["Queue"], "Events": [q["Event"]]}
        rules = ((q.get("Filter") or {}).get("S3Key") or {}).get("Rules")
        if rules:
            entry["Filter"] = {"Key": {"FilterRules": rules}}
        queues.append(entry)
    return {"QueueConfigurations": queues}


def _generate_secret_string(client: Any, options: dict[str, Any]) -> str:
    password = client.get_random_password(
        **{k: options[k] for k in _PASSWORD_OPTIONS if k in options}
    )["RandomPassword"]
    if "SecretStringTemplate" not in options:
        return str(password)
    document = json.loads(options["SecretStringTemplate"])
    document[options["GenerateStringKey"]] = password
    return json.dumps(document)


def _ensure_secret(client: Any, name: str, value: str | Callable[[], str], *, force: bool) -> str:
    """The secret's ARN, creating it if missing; `force` also replaces an existing value.

    `value` may be a callable so that a value is only generated when one is needed.
    """
    try:
        arn = str(client.describe_secret(SecretId=name)["ARN"])
    except client.exceptions.ResourceNotFoundException:
        text = value() if callable(value) else value
        return str(client.create_secret(Name=name, SecretString=text)["ARN"])
    if force:
        client.put_secret_value(SecretId=arn, SecretString=value() if callable(value) else value)
    return arn


def substitute_definition(lid: str, text: str, substitutions: Mapping[str, Any]) -> str:
    """DefinitionSubstitutions, applied textually like CloudFormation (numbers unquoted)."""

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        return _attr_text(substitutions[key]) if key in substitutions else match.group(0)

    definition = _SUBSTITUTION.sub(replace, text)
    try:
        json.loads(definition)
    except json.JSONDecodeError as e:
        left = sorted(set(_SUBSTITUTION.findall(definition)))
        raise TemplateError(f"{lid}: definition is not JSON ({e}); unsubstituted: {left}") from e
    return definition


def _function_spec(
    template: Template, resolver: Resolver, lid: str, skipped: set[str]
) -> FunctionSpec:
    props = template.properties(lid)
    physical = resolver.resources[lid]
    variables = (props.get("Environment") or {}).get("Variables") or {}
    queues = {
        r.attributes["Arn"]: r.ref
        for r in resolver.resources.values()
        if r.type == "AWS::SQS::Queue"
    }
    sources = []
    for event in template.sqs_event_sources(lid):
        arn = resolver.resolve_str(event.queue)
        if arn not in queues:
            raise TemplateError(f"{lid}.{event.name}: queue {arn} is not in this stack")
        sources.append(BoundSqsSource(event, arn, queues[arn]))
    return FunctionSpec(
        logical_id=lid,
        name=physical.ref,
        arn=physical.attributes["Arn"],
        code_dir=template.local_path(props["CodeUri"]),
        handler=str(props["Handler"]),
        layer_dirs=tuple(_layer_dir(template, layer) for layer in props.get("Layers") or []),
        runtime=str(props.get("Runtime", "")),
        timeout_s=int(props.get("Timeout", 3)),
        memory_mb=int(props.get("MemorySize", 128)),
        environment=_environment(resolver, variables, skipped),
        sqs_sources=tuple(sources),
        http_routes=tuple(template.http_api_routes(lid)),
    )


def _environment(
    resolver: Resolver, variables: dict[str, Any], skipped: set[str]
) -> dict[str, str]:
    """A function's environment variables, but those naming a resource the emulator does not
    create: the created database and cache (the local cloud brings its own PostgreSQL and
    Redis, and says where in STT_DATABASE_URL / STT_REDIS_URL)."""
    environment = {}
    for name, value in variables.items():
        try:
            resolved = resolver.resolve(value)
        except UnresolvedReferenceError:
            if not references(value) & skipped:
                raise
            log.debug("%s is left unset: it names a resource not created here", name)
            continue
        if resolved is not NO_VALUE:
            environment[name] = _attr_text(resolved)
    return environment


def _layer_dir(template: Template, layer: Any) -> Path:
    """The local ContentUri of a layer the template declares (`!Ref SomeLayer`)."""
    lid = layer.get("Ref") if isinstance(layer, dict) else None
    if lid not in template.resources(LAYER_TYPE):
        raise TemplateError(f"layer {layer!r}: only layers declared in the template run locally")
    return template.local_path(template.properties(lid)["ContentUri"])


def _http_api_cors(template: Template, resolver: Resolver) -> dict[str | None, Any]:
    apis: dict[str | None, Any] = {
        lid: template.properties(lid) for lid in template.resources(HTTP_API_TYPE)
    }
    apis[None] = (template.doc.get("Globals") or {}).get("HttpApi") or {}  # the implicit API
    cors: dict[str | None, Any] = {}
    for lid, props in apis.items():
        config = resolver.resolve(props.get("CorsConfiguration"))
        if config is True:  # `CorsConfiguration: true` allows every origin
            config = {"AllowOrigins": ["*"], "AllowMethods": ["*"], "AllowHeaders": ["*"]}
        cors[lid] = config or None
    return cors


def _outputs(template: Template, resolver: Resolver) -> dict[str, str]:
    """Outputs that can be computed locally (those naming the HttpApi cannot: see api_url)."""
    outputs = {}
    for name, output in (template.doc.get("Outputs") or {}).items():
        try:
            outputs[name] = resolver.resolve_str(output["Value"])
        except UnresolvedReferenceError:
            continue
    return outputs
