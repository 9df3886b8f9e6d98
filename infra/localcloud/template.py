"""Reading the SAM template: short tags, parameters, conditions, Globals and intrinsic functions.

template.yaml is the single source of truth: everything the local cloud creates or runs is
derived from it here, so nothing in `localcloud` repeats a name the template declares.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

FUNCTION_TYPE: Final = "AWS::Serverless::Function"
LAYER_TYPE: Final = "AWS::Serverless::LayerVersion"
HTTP_API_TYPE: Final = "AWS::Serverless::HttpApi"

# The physical account and partition facts the pseudo parameters need.
DEFAULT_PARTITION: Final = "aws"
DEFAULT_URL_SUFFIX: Final = "amazonaws.com"


class TemplateError(ValueError):
    """The template (or a parameter value) is not one the local cloud can work with."""


class UnresolvedReferenceError(TemplateError):
    """An intrinsic function names a resource that has no physical id (yet)."""


class _NoValue:
    """AWS::NoValue: the property it stands for is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Final = _NoValue()


# ------------------------------------------------------------------------------ YAML loading


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags into their long JSON form."""


def _short_tag(name: str) -> Callable[[_CfnLoader, yaml.Node], dict[str, Any]]:
    key = name if name in ("Ref", "Condition") else f"Fn::{name}"

    def construct(loader: _CfnLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if name == "GetAtt":  # !GetAtt Res.Attr is the short form of [Res, Attr]
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {key: value}

    return construct


_SHORT_TAGS = (
    "Ref Condition Base64 Cidr FindInMap GetAtt GetAZs ImportValue Join Select Split Sub "
    "Transform And Equals If Not Or Length ToJsonString"
)
for _tag in _SHORT_TAGS.split():
    _CfnLoader.add_constructor(f"!{_tag}", _short_tag(_tag))


def load_template_document(path: Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML (or JSON) file with its short tags."""
    with path.open(encoding="utf-8") as f:
        doc = yaml.load(f, Loader=_CfnLoader)  # a SafeLoader subclass: no arbitrary objects
    if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict):
        raise TemplateError(f"{path}: not a CloudFormation template (no Resources)")
    return doc


# ------------------------------------------------------------------------------ physical side


@dataclass(frozen=True)
class PhysicalResource:
    """What a created resource answers to `Ref` and `Fn::GetAtt`."""

    logical_id: str
    type: str
    ref: str
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PseudoParameters:
    stack_name: str
    region: str
    account_id: str
    partition: str = DEFAULT_PARTITION
    url_suffix: str = DEFAULT_URL_SUFFIX

    def as_dict(self) -> dict[str, Any]:
        return {
            "AWS::StackName": self.stack_name,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": self.url_suffix,
            "AWS::StackId": (
                f"arn:{self.partition}:cloudformation:{self.region}:{self.account_id}:"
                f"stack/{self.stack_name}/local"
            ),
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }


# ------------------------------------------------------------------------------ template model


@dataclass(frozen=True)
class SqsEventSource:
    """One `Type: SQS` event of a function (an event source mapping on AWS)."""

    name: str
    queue: Any  # as the template gives it: usually {"Fn::GetAtt": [Queue, Arn]}
    batch_size: int
    report_batch_item_failures: bool
    maximum_concurrency: int | None
    enabled: bool


@dataclass(frozen=True)
class HttpApiRoute:
    """One `Type: HttpApi` event of a function."""

    name: str
    method: str  # upper case; "ANY" matches every method
    path: str  # "/jobs/{job_id}", "/{proxy+}" or "$default"
    api_logical_id: str | None  # None: SAM's implicit ServerlessHttpApi


_SUB_VAR = re.compile(r"\$\{([^}]*)\}")


class Template:
    """A SAM template with its parameter values and conditions bound.

    `parameter_overrides` are validated like CloudFormation does (AllowedValues, AllowedPattern,
    Min/MaxValue, Min/MaxLength); a parameter without a default must be given.
    """

    def __init__(
        self,
        path: Path,
        pseudo: PseudoParameters,
        parameter_overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path.resolve()
        self.base_dir = self.path.parent
        self.doc = load_template_document(self.path)
        self.pseudo = pseudo
        self.parameters = self._bind_parameters(dict(parameter_overrides or {}))
        self._conditions: dict[str, bool] = {}
        self._globals = self.doc.get("Globals") or {}

    # -- parameters and conditions

    def _bind_parameters(self, overrides: dict[str, str]) -> dict[str, Any]:
        declared: dict[str, Any] = self.doc.get("Parameters") or {}
        unknown = set(overrides) - set(declared)
        if unknown:
            raise TemplateError(f"unknown parameters: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, decl in declared.items():
            if name in overrides:
                raw = str(overrides[name])
            elif "Default" in decl:
                raw = _scalar_text(decl["Default"])
            else:
                raise TemplateError(f"parameter {name} has no default: pass a value for it")
            _validate_parameter(name, decl, raw)
            ptype = str(decl.get("Type", "String"))
            is_list = ptype == "CommaDelimitedList" or ptype.startswith("List<")
            values[name] = [s.strip() for s in raw.split(",")] if is_list else raw
        return values

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            declared = self.doc.get("Conditions") or {}
            if name not in declared:
                raise TemplateError(f"unknown condition {name}")
            # Conditions see only parameters and pseudo parameters, never resources.
            result = Resolver(self, {}).resolve(declared[name])
            if not isinstance(result, bool):
                raise TemplateError(f"condition {name} is not a boolean: {result!r}")
            self._conditions[name] = result
        return self._conditions[name]

    # -- resources

    def resources(self, type_: str | None = None) -> dict[str, dict[str, Any]]:
        """Resources whose Condition holds, optionally only those of one type."""
        return {
            lid: res
            for lid, res in self.doc["Resources"].items()
            if (type_ is None or res.get("Type") == type_)
            and ("Condition" not in res or self.condition(res["Condition"]))
        }

    def properties(self, logical_id: str) -> dict[str, Any]:
        """A resource's Properties, with SAM Globals merged in for serverless resources."""
        res = self.doc["Resources"][logical_id]
        props: dict[str, Any] = res.get("Properties") or {}
        section = str(res.get("Type", "")).removeprefix("AWS::Serverless::")
        if res.get("Type", "").startswith("AWS::Serverless::") and section in self._globals:
            return _merge_globals(self._globals[section], props)
        return props

    def dependencies(self, logical_id: str) -> set[str]:
        """Other resources this one references (Ref, GetAtt, Sub) or names in DependsOn."""
        res = self.doc["Resources"][logical_id]
        depends = res.get("DependsOn", [])
        found = set([depends] if isinstance(depends, str) else depends)
        _collect_references(self.properties(logical_id), found)
        return found & set(self.doc["Resources"]) - {logical_id}

    def sqs_event_sources(self, function_id: str) -> list[SqsEventSource]:
        sources = []
        for name, event in self._events(function_id, "SQS"):
            props = event.get("Properties") or {}
            scaling = props.get("ScalingConfig") or {}
            mc = scaling.get("MaximumConcurrency")
            sources.append(
                SqsEventSource(
                    name=name,
                    queue=props["Queue"],
                    batch_size=int(props.get("BatchSize", 10)),
                    report_batch_item_failures="ReportBatchItemFailures"
                    in (props.get("FunctionResponseTypes") or []),
                    maximum_concurrency=int(mc) if mc is not None else None,
                    enabled=props.get("Enabled", True) is not False,
                )
            )
        return sources

    def http_api_routes(self, function_id: str) -> list[HttpApiRoute]:
        routes = []
        for name, event in self._events(function_id, "HttpApi"):
            props = event.get("Properties") or {}
            api = props.get("ApiId")
            routes.append(
                HttpApiRoute(
                    name=name,
                    method=str(props.get("Method", "ANY")).upper(),
                    path=str(props.get("Path", "$default")),
                    api_logical_id=api["Ref"] if isinstance(api, dict) else None,
                )
            )
        return routes

    def _events(self, function_id: str, event_type: str) -> list[tuple[str, dict[str, Any]]]:
        events: dict[str, Any] = self.properties(function_id).get("Events") or {}
        return [(n, e) for n, e in events.items() if e.get("Type") == event_type]

    def local_path(self, uri: Any) -> Path:
        """A CodeUri/ContentUri/DefinitionUri given as a local path, relative to the template."""
        if not isinstance(uri, str):
            raise TemplateError(f"only local paths are supported here, not {uri!r}")
        return (self.base_dir / uri).resolve()


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(_scalar_text(v) for v in value)
    return str(value)


def _validate_parameter(name: str, decl: Mapping[str, Any], raw: str) -> None:
    def fail(why: str) -> TemplateError:
        return TemplateError(f"parameter {name}={raw!r}: {why}")

    allowed = decl.get("AllowedValues")
    if allowed is not None and raw not in [_scalar_text(v) for v in allowed]:
        raise fail(f"not one of {allowed}")
    pattern = decl.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(pattern, raw):
        raise fail(f"does not match {pattern}")
    if "MinLength" in decl and len(raw) < int(decl["MinLength"]):
        raise fail(f"shorter than {decl['MinLength']}")
    if "MaxLength" in decl and len(raw) > int(decl["MaxLength"]):
        raise fail(f"longer than {decl['MaxLength']}")
    if decl.get("Type") == "Number":
        try:
            number = float(raw)
        except ValueError:
            raise fail("not a number") from None
        if "MinValue" in decl and number < float(decl["MinValue"]):
            raise fail(f"below {decl['MinValue']}")
        if "MaxValue" in decl and number > float(decl["MaxValue"]):
            raise fail(f"above {decl['MaxValue']}")


def _is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return key in ("Ref", "Condition") or key.startswith("Fn::")


def _merge_globals(glob: Any, local: Any) -> Any:
    """SAM's Globals rule: maps merge (the resource wins), lists add up, other values replace.

    An intrinsic function counts as a plain value, as in SAM.
    """
    if isinstance(glob, dict) and isinstance(local, dict):
        if _is_intrinsic(glob) or _is_intrinsic(local):
            return local
        merged = dict(glob)
        for key, value in local.items():
            merged[key] = _merge_globals(glob[key], value) if key in glob else value
        return merged
    if isinstance(glob, list) and isinstance(local, list):
        return glob + local
    return local


def references(value: Any) -> set[str]:
    """The names (resources, parameters) that Ref, GetAtt and Sub in `value` name."""
    found: set[str] = set()
    _collect_references(value, found)
    return found


def _collect_references(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        if len(value) == 1:
            key, arg = next(iter(value.items()))
            if key == "Ref" and isinstance(arg, str):
                found.add(arg)
            elif key == "Fn::GetAtt" and isinstance(arg, list | str):
                found.add((arg.split(".", 1) if isinstance(arg, str) else arg)[0])
            elif key == "Fn::Sub":
                text = arg if isinstance(arg, str) else arg[0]
                for var in _SUB_VAR.findall(text):
                    if not var.startswith("!"):
                        found.add(var.split(".", 1)[0])
        for item in value.values():
            _collect_references(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect_references(item, found)


# ------------------------------------------------------------------------------ resolver


class Resolver:
    """Evaluates intrinsic functions against bound parameters and created resources.

    `resources` maps logical ids to what their physical resource answers to Ref/GetAtt.
    AWS::NoValue removes the key or list item it stands for.
    """

    def __init__(self, template: Template, resources: Mapping[str, PhysicalResource]) -> None:
        self.template = template
        self.resources = resources
        self._pseudo = template.pseudo.as_dict()

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            if len(value) == 1:
                key, arg = next(iter(value.items()))
                if key.startswith("Fn::") and key not in self._functions:
                    raise TemplateError(f"{key} is not supported by the local cloud")
                # Ref and Condition take a name; a "Condition" key holding a map is a property.
                if key in self._functions and (key.startswith("Fn::") or isinstance(arg, str)):
                    return self._functions[key](self, arg)
            resolved = {k: self.resolve(v) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not NO_VALUE}
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        return value

    def resolve_str(self, value: Any) -> str:
        """Resolve to a string, as CloudFormation passes numbers and booleans on."""
        return _scalar_text(self.resolve(value))

    # -- lookups

    def ref(self, name: str) -> Any:
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self.template.parameters:
            return self.template.parameters[name]
        function, _, sam_ref = name.partition(".")
        if sam_ref == "Version":  # SAM's AutoPublishAlias: the version published; here, none
            return f"{self.get_att(function, 'Arn')}:$LATEST"
        return self._resource(name).ref

    def get_att(self, logical_id: str, attribute: str) -> str:
        res = self._resource(logical_id)
        if attribute not in res.attributes:
            raise UnresolvedReferenceError(
                f"{logical_id} ({res.type}) has no attribute {attribute}"
            )
        return res.attributes[attribute]

    def _resource(self, logical_id: str) -> PhysicalResource:
        if logical_id not in self.resources:
            if logical_id not in self.template.doc["Resources"]:
                raise TemplateError(f"unknown parameter or resource {logical_id}")
            raise UnresolvedReferenceError(f"{logical_id} has no physical resource here")
        return self.resources[logical_id]

    # -- intrinsic functions

    def _fn_ref(self, arg: str) -> Any:
        return self.ref(arg)

    def _fn_get_att(self, arg: Any) -> str:
        logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
        return self.get_att(logical_id, self.resolve_str(attribute))

    def _fn_sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        local = {k: self.resolve(v) for k, v in variables.items()}

        def substitute(match: re.Match[str]) -> str:
            var = match.group(1)
            if var.startswith("!"):  # ${!Literal} stays as ${Literal}
                return "${" + var[1:] + "}"
            if var in local:
                return _scalar_text(local[var])
            if "." in var and var.split(".", 1)[0] in self.template.doc["Resources"]:
                return self.get_att(*var.split(".", 1))
            return _scalar_text(self.ref(var))

        return _SUB_VAR.sub(substitute, text)

    def _fn_join(self, arg: list[Any]) -> str:
        delimiter, items = arg
        return str(delimiter).join(_scalar_text(v) for v in self._list(items))

    def _fn_select(self, arg: list[Any]) -> Any:
        index, items = arg
        return self._list(items)[int(self.resolve(index))]

    def _fn_split(self, arg: list[Any]) -> list[str]:
        delimiter, text = arg
        return self.resolve_str(text).split(str(delimiter))

    def _fn_if(self, arg: list[Any]) -> Any:
        name, then, otherwise = arg
        return self.resolve(then if self.template.condition(name) else otherwise)

    def _fn_equals(self, arg: list[Any]) -> bool:
        left, right = (self.resolve(v) for v in arg)
        return bool(_scalar_text(left) == _scalar_text(right))

    def _fn_not(self, arg: list[Any]) -> bool:
        return not self._bool(arg[0])

    def _fn_and(self, arg: list[Any]) -> bool:
        return all(self._bool(v) for v in arg)

    def _fn_or(self, arg: list[Any]) -> bool:
        return any(self._bool(v) for v in arg)

    def _fn_condition(self, arg: str) -> bool:
        return self.template.condition(arg)

    def _fn_find_in_map(self, arg: list[Any]) -> Any:
        name, top, second = (self.resolve_str(v) for v in arg[:3])
        try:
            return self.template.doc["Mappings"][name][top][second]
        except KeyError:
            raise TemplateError(f"Fn::FindInMap: no {name}/{top}/{second}") from None

    def _fn_base64(self, arg: Any) -> str:
        return base64.b64encode(self.resolve_str(arg).encode()).decode()

    def _fn_get_azs(self, arg: Any) -> list[str]:
        region = self.resolve_str(arg) or self.template.pseudo.region
        return [f"{region}{zone}" for zone in "abc"]

    def _fn_length(self, arg: Any) -> int:
        return len(self._list(arg))

    def _fn_to_json_string(self, arg: Any) -> str:
        return json.dumps(self.resolve(arg), separators=(",", ":"))

    def _list(self, value: Any) -> list[Any]:
        items = self.resolve(value)
        if not isinstance(items, list):
            raise TemplateError(f"expected a list, got {items!r}")
        return items

    def _bool(self, value: Any) -> bool:
        result = self.resolve(value)
        if not isinstance(result, bool):
            raise TemplateError(f"expected a condition, got {result!r}")
        return result

    _functions: Final[dict[str, Callable[[Resolver, Any], Any]]] = {
        "Ref": _fn_ref,
        "Fn::GetAtt": _fn_get_att,
        "Fn::Sub": _fn_sub,
        "Fn::Join": _fn_join,
        "Fn::Select": _fn_select,
        "Fn::Split": _fn_split,
        "Fn::If": _fn_if,
        "Fn::Equals": _fn_equals,
        "Fn::Not": _fn_not,
        "Fn::And": _fn_and,
        "Fn::Or": _fn_or,
        "Condition": _fn_condition,
        "Fn::FindInMap": _fn_find_in_map,
        "Fn::Base64": _fn_base64,
        "Fn::GetAZs": _fn_get_azs,
        "Fn::Length": _fn_length,
        "Fn::ToJsonString": _fn_to_json_string,
    }
