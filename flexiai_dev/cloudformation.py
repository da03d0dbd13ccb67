"""Read a function's settings from a SAM template the way ``sam local invoke`` does, without
Docker: ``Handler``, ``CodeUri``, ``Timeout``, ``MemorySize`` and ``Environment.Variables``,
with ``Globals.Function`` merged in.

CloudFormation tags (``!Ref``, ``!Sub``, ``!GetAtt``, ``!If``, ``!Join``...) are read into their
long forms (``{"Ref": ...}``, ``{"Fn::Sub": ...}``) by a SafeLoader subclass, then resolved
where that is possible offline: parameters (override, else ``Default``), SAM's pseudo
parameter values (``AWS::Region`` is ``us-east-1`` unless ``AWS_REGION`` says otherwise),
``Fn::Sub``, ``Fn::Join``, ``Fn::Select``, ``Fn::Split``, ``Fn::FindInMap``, ``Fn::Base64`` and
``Fn::If`` over the template's ``Conditions``. What needs a deployed stack (``!GetAtt``, a
``!Ref`` to a resource, ``{{resolve:...}}``) cannot be resolved: such a variable is dropped
and listed in ``FunctionSpec.unresolved``, so the caller can supply it with ``--env-vars``.
(``sam local invoke`` passes such variables as an empty or placeholder string instead; flexiai
would reject those, while a dropped variable falls back to flexiai's default.)

Environment priority, highest first, as in SAM: the function's section of the env-vars file,
its ``Parameters`` section, the shell's value for a variable the template declares, the
template's value.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FunctionSpec",
    "LayerRef",
    "Route",
    "TemplateError",
    "invocation_environment",
    "load_template",
    "read_env_vars_file",
    "read_function",
]

DEFAULT_TIMEOUT = 3  # Lambda's defaults
DEFAULT_MEMORY = 128
DEFAULT_REGION = "us-east-1"
PSEUDO_PARAMETERS: dict[str, Any] = {  # the values sam local uses
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::StackName": "local",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/local/"
    "51af3dc0-da77-11e4-872e-1234567db123",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::NotificationARNs": [],
}
_FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
_LAYER_TYPES = ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class TemplateError(ValueError):
    """The template cannot be read, or does not describe a function this tool can run."""


class _Unresolvable(Exception):
    """A value needs a deployed stack (or a missing parameter); ``str()`` says which."""


class _NoValue:
    """``!Ref AWS::NoValue``: the property is removed."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


# -- YAML with CloudFormation tags -------------------------------------------------------------


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise TemplateError("reading template.yaml needs PyYAML: pip install pyyaml") from None
    return yaml


def _loader_class() -> Any:
    yaml = _yaml()

    class CloudFormationLoader(yaml.SafeLoader):  # type: ignore[name-defined,misc]
        """SafeLoader that reads ``!Tag value`` as CloudFormation's long form."""

    def construct(loader: Any, suffix: str, node: Any) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if suffix == "Ref":
            return {"Ref": value}
        if suffix == "Condition":
            return {"Condition": value}
        if suffix == "GetAtt" and isinstance(value, str):
            resource, _, attribute = value.partition(".")
            value = [resource, attribute]
        return {f"Fn::{suffix}": value}

    CloudFormationLoader.add_multi_constructor("!", construct)
    return CloudFormationLoader


def load_template(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The template as plain data (YAML or JSON), tags in long form."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TemplateError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    yaml = _yaml()
    try:
        document = yaml.load(text, Loader=_loader_class())  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise TemplateError(f"{str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"{str(path)!r} has no Resources section")
    return document


# -- resolving intrinsic functions -------------------------------------------------------------


class _Resolver:
    def __init__(
        self,
        template: Mapping[str, Any],
        overrides: Mapping[str, str],
        region: str,
        *,
        resource_refs: Mapping[str, Any] | None = None,
        keep_dynamic: bool = False,
    ) -> None:
        self._template = template
        #: What ``!Ref`` to these resources means locally (a built layer's directory).
        self._resource_refs: Mapping[str, Any] = resource_refs or {}
        #: Leave ``{{resolve:...}}`` in place (a layer reference is reported, not resolved).
        self._keep_dynamic = keep_dynamic
        self._parameters: Mapping[str, Any] = template.get("Parameters") or {}
        self._resources: Mapping[str, Any] = template.get("Resources") or {}
        self._conditions: Mapping[str, Any] = template.get("Conditions") or {}
        self._mappings: Mapping[str, Any] = template.get("Mappings") or {}
        self._overrides = overrides
        self._pseudo: dict[str, Any] = {**PSEUDO_PARAMETERS, "AWS::Region": region}
        self._evaluating: set[str] = set()

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if isinstance(value, str):
            if "{{resolve:" in value and not self._keep_dynamic:
                raise _Unresolvable(f"dynamic reference {value!r}")
            return value
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Condition" or (key.startswith("Fn::") and key != "Fn::Transform"):
                return self._function(key, arg)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def _ref(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise _Unresolvable("Ref to a non-string")
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self._parameters:
            return self._parameter(name)
        if name in self._resource_refs:
            return self._resource_refs[name]
        if name in self._resources:
            raise _Unresolvable(f"!Ref {name} (a resource, known only once deployed)")
        raise _Unresolvable(f"!Ref {name} (no such parameter or resource)")

    def _parameter(self, name: str) -> Any:
        spec = self._parameters[name] or {}
        if name in self._overrides:
            value: Any = self._overrides[name]
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise _Unresolvable(f"parameter {name} (no Default; pass --parameter-overrides)")
        kind = str(spec.get("Type", "String"))
        if kind == "CommaDelimitedList" or kind.startswith("List<"):
            if isinstance(value, list):
                return [str(v) for v in value]
            return [item.strip() for item in str(value).split(",")] if str(value) else []
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def _function(self, key: str, arg: Any) -> Any:
        name = key.removeprefix("Fn::")
        if name == "Sub":
            return self._sub(arg)
        if name == "Join":
            delimiter, items = self._pair(arg, "Fn::Join")
            values = self.resolve(items)
            if not isinstance(values, list):
                raise _Unresolvable("Fn::Join of a non-list")
            return str(delimiter).join(_scalar(v) for v in values)
        if name == "If":
            if not isinstance(arg, list) or len(arg) != 3:
                raise _Unresolvable("malformed Fn::If")
            return self.resolve(arg[1] if self._condition(arg[0]) else arg[2])
        if name in ("Equals", "Not", "And", "Or") or key == "Condition":
            return self._evaluate({key: arg})
        if name == "Select":
            index, items = self._pair(arg, "Fn::Select")
            values = self.resolve(items)
            position = int(self.resolve(index))
            if not isinstance(values, list) or not 0 <= position < len(values):
                raise _Unresolvable("Fn::Select out of range")
            return values[position]
        if name == "Split":
            delimiter, text = self._pair(arg, "Fn::Split")
            return _scalar(self.resolve(text)).split(str(delimiter))
        if name == "FindInMap":
            if not isinstance(arg, list) or len(arg) < 3:
                raise _Unresolvable("malformed Fn::FindInMap")
            mapping, top, second = (_scalar(self.resolve(a)) for a in arg[:3])
            try:
                return self.resolve(self._mappings[mapping][top][second])
            except (KeyError, TypeError):
                raise _Unresolvable(f"Fn::FindInMap {mapping}.{top}.{second}") from None
        if name == "Base64":
            return base64.b64encode(_scalar(self.resolve(arg)).encode()).decode()
        if name == "GetAtt":
            target = ".".join(str(a) for a in arg) if isinstance(arg, list) else str(arg)
            raise _Unresolvable(f"!GetAtt {target} (known only once deployed)")
        raise _Unresolvable(f"{key} is not resolved locally")

    def _pair(self, arg: Any, what: str) -> tuple[Any, Any]:
        if not isinstance(arg, list) or len(arg) != 2:
            raise _Unresolvable(f"malformed {what}")
        return arg[0], arg[1]

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], dict):
            text, variables = arg[0], arg[1]
        elif isinstance(arg, str):
            text, variables = arg, {}
        else:
            raise _Unresolvable("malformed Fn::Sub")

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"  # ${!Literal} is written as ${Literal}
            if name in variables:
                return _scalar(self.resolve(variables[name]))
            if "." in name and name not in self._pseudo:
                raise _Unresolvable(f"${{{name}}} (an attribute, known only once deployed)")
            return _scalar(self._ref(name))

        return _SUB_VARIABLE.sub(replace, str(text))

    def _condition(self, name: Any) -> bool:
        if not isinstance(name, str) or name not in self._conditions:
            raise _Unresolvable(f"condition {name!r} is not defined")
        if name in self._evaluating:
            raise _Unresolvable(f"condition {name!r} refers to itself")
        self._evaluating.add(name)
        try:
            return self._evaluate(self._conditions[name])
        finally:
            self._evaluating.discard(name)

    def _evaluate(self, expression: Any) -> bool:
        if isinstance(expression, bool):
            return expression
        if not isinstance(expression, dict) or len(expression) != 1:
            raise _Unresolvable("malformed condition")
        ((key, arg),) = expression.items()
        if key == "Condition":
            return self._condition(arg)
        if key == "Fn::Equals":
            left, right = self._pair(arg, "Fn::Equals")
            return _scalar(self.resolve(left)) == _scalar(self.resolve(right))
        if key == "Fn::Not":
            inner = arg[0] if isinstance(arg, list) and len(arg) == 1 else arg
            return not self._evaluate(inner)
        if key in ("Fn::And", "Fn::Or") and isinstance(arg, list):
            results = [self._evaluate(a) for a in arg]
            return all(results) if key == "Fn::And" else any(results)
        raise _Unresolvable(f"{key} is not a condition function")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list):
        return ",".join(_scalar(v) for v in value)
    raise _Unresolvable("a value that is not a string")


# -- the function ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerRef:
    """One entry of a function's ``Layers``, in order: a layer resource of this template
    (``directory``: its ``ContentUri``, the built one in a ``sam build`` output) or a layer
    published elsewhere (``reference``: an ARN or a ``{{resolve:ssm:...}}`` string)."""

    name: str
    directory: Path | None = None
    reference: str | None = None
    #: The resource has a ``BuildMethod``: its source directory is not what Lambda gets.
    built_by_sam: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """An ``HttpApi`` event of a function: ``method`` is upper case or ``ANY``; ``path`` may
    hold ``{name}`` and ``{name+}`` parts, or be ``$default`` (every request)."""

    method: str
    path: str


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """What ``sam local invoke`` would run, as far as it can be known offline."""

    logical_id: str
    function_name: str
    handler: str
    code_uri: Path
    runtime: str | None
    timeout: float
    memory_size: int
    log_group: str | None
    #: Declared variables whose values could be resolved, as strings.
    environment: dict[str, str] = field(default_factory=dict)
    #: Declared variables that could not be resolved: name -> why.
    unresolved: dict[str, str] = field(default_factory=dict)
    #: Declared variables removed by ``!Ref AWS::NoValue`` (an ``!If`` that chose nothing).
    removed: tuple[str, ...] = ()
    #: ``Layers`` (``Globals.Function`` first, as SAM merges lists), in order.
    layers: tuple[LayerRef, ...] = ()
    #: The function's ``HttpApi`` events.
    routes: tuple[Route, ...] = ()

    @property
    def declared(self) -> frozenset[str]:
        return frozenset(self.environment) | frozenset(self.unresolved) | frozenset(self.removed)


def read_function(
    template_path: str | os.PathLike[str],
    logical_id: str,
    *,
    parameter_overrides: Mapping[str, str] | None = None,
    region: str | None = None,
) -> FunctionSpec:
    """The function ``logical_id`` of the template at ``template_path``."""
    template = load_template(template_path)
    resources: dict[str, Any] = template["Resources"]
    functions = sorted(
        k for k, v in resources.items() if isinstance(v, dict) and v.get("Type") in _FUNCTION_TYPES
    )
    resource = resources.get(logical_id)
    if not isinstance(resource, dict) or resource.get("Type") not in _FUNCTION_TYPES:
        known = ", ".join(functions) or "none"
        raise TemplateError(f"no function {logical_id!r} in the template (functions: {known})")
    region = region or os.environ.get("AWS_REGION") or DEFAULT_REGION
    resolver = _Resolver(template, dict(parameter_overrides or {}), region)
    serverless = resource["Type"] == "AWS::Serverless::Function"
    globals_: dict[str, Any] = {}
    if serverless:
        globals_ = ((template.get("Globals") or {}).get("Function") or {}).copy()
    properties: dict[str, Any] = resource.get("Properties") or {}

    def prop(name: str, default: Any = None) -> Any:
        raw = properties.get(name, globals_.get(name, default))
        try:
            value = resolver.resolve(raw)
        except _Unresolvable as exc:
            raise TemplateError(f"{logical_id}.{name} cannot be resolved locally: {exc}") from None
        return default if value is NO_VALUE else value

    if prop("PackageType", "Zip") == "Image":
        raise TemplateError(f"{logical_id} is a container image function; run it with sam")
    runtime = prop("Runtime")
    if runtime is not None and not str(runtime).startswith("python"):
        raise TemplateError(f"{logical_id} runs {runtime}; flexiai invoke runs Python handlers")
    handler = prop("Handler")
    if not isinstance(handler, str) or "." not in handler:
        raise TemplateError(f"{logical_id}.Handler must look like module.function")
    code = prop("CodeUri" if serverless else "Code", ".")
    if not isinstance(code, str) or code.startswith("s3://"):
        raise TemplateError(f"{logical_id}'s code is not a local directory (S3 or inline)")
    code_uri = (Path(template_path).resolve().parent / code).resolve()
    if not code_uri.is_dir():
        raise TemplateError(f"{logical_id}.CodeUri {code!r} is not a directory ({code_uri})")
    try:
        timeout = float(prop("Timeout", DEFAULT_TIMEOUT))
        memory = int(prop("MemorySize", DEFAULT_MEMORY))
    except (TypeError, ValueError):
        raise TemplateError(f"{logical_id}: Timeout and MemorySize must be numbers") from None
    if timeout <= 0 or memory <= 0:
        raise TemplateError(f"{logical_id}: Timeout and MemorySize must be positive")
    name = prop("FunctionName")
    logging_config = properties.get("LoggingConfig", globals_.get("LoggingConfig")) or {}
    try:
        log_group = resolver.resolve(logging_config.get("LogGroup"))
    except (_Unresolvable, AttributeError):
        log_group = None

    variables: dict[str, Any] = {}
    for source in (globals_, properties):  # the function's own values win, as in SAM
        env = source.get("Environment")
        if isinstance(env, dict) and isinstance(env.get("Variables"), dict):
            variables.update(env["Variables"])
    environment: dict[str, str] = {}
    unresolved: dict[str, str] = {}
    removed: list[str] = []
    for key, raw in variables.items():
        try:
            value = resolver.resolve(raw)
            if value is NO_VALUE:
                removed.append(str(key))
                continue
            environment[str(key)] = _scalar(value)
        except _Unresolvable as exc:
            unresolved[str(key)] = str(exc)
    base = Path(template_path).resolve().parent
    layer_resolver = _Resolver(
        template,
        dict(parameter_overrides or {}),
        region,
        resource_refs=_layer_resources(resources, base),
        keep_dynamic=True,
    )
    layers: list[LayerRef] = []
    for item in [*(globals_.get("Layers") or []), *(properties.get("Layers") or [])]:
        try:
            layer = layer_resolver.resolve(item)
        except _Unresolvable as exc:
            raise TemplateError(f"{logical_id}.Layers cannot be resolved locally: {exc}") from None
        if isinstance(layer, LayerRef):
            layers.append(layer)
        elif isinstance(layer, str):
            layers.append(LayerRef(name=layer, reference=layer))
    return FunctionSpec(
        logical_id=logical_id,
        function_name=name if isinstance(name, str) and name else logical_id,
        handler=handler,
        code_uri=code_uri,
        runtime=str(runtime) if runtime is not None else None,
        timeout=timeout,
        memory_size=memory,
        log_group=log_group if isinstance(log_group, str) else None,
        environment=environment,
        unresolved=unresolved,
        removed=tuple(removed),
        layers=tuple(layers),
        routes=_routes(properties.get("Events")),
    )


def function_ids(template_path: str | os.PathLike[str]) -> list[str]:
    """The logical ids of the template's functions, sorted."""
    resources = load_template(template_path).get("Resources") or {}
    return sorted(
        k for k, v in resources.items() if isinstance(v, dict) and v.get("Type") in _FUNCTION_TYPES
    )


def parameter_names(template_path: str | os.PathLike[str]) -> list[str]:
    """The template's parameter names, in the template's order."""
    return [str(name) for name in load_template(template_path).get("Parameters") or {}]


def _layer_resources(resources: Mapping[str, Any], base: Path) -> dict[str, LayerRef]:
    layers: dict[str, LayerRef] = {}
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict) or resource.get("Type") not in _LAYER_TYPES:
            continue
        properties = resource.get("Properties") or {}
        content = properties.get("ContentUri", properties.get("Content"))
        directory = (base / content).resolve() if isinstance(content, str) else None
        metadata = resource.get("Metadata") or {}
        layers[str(logical_id)] = LayerRef(
            name=str(logical_id),
            directory=directory,
            built_by_sam="BuildMethod" in metadata,
        )
    return layers


def _routes(events: Any) -> tuple[Route, ...]:
    routes: list[Route] = []
    for event in (events or {}).values() if isinstance(events, dict) else ():
        if not isinstance(event, dict) or event.get("Type") != "HttpApi":
            continue
        properties = event.get("Properties") or {}
        path, method = properties.get("Path"), properties.get("Method")
        if not isinstance(path, str) or not isinstance(method, str):
            routes.append(Route("ANY", "$default"))  # an HttpApi event with no route: $default
            continue
        method = method.upper()
        routes.append(
            Route("ANY" if method in ("ANY", "X-AMAZON-APIGATEWAY-ANY-METHOD") else method, path)
        )
    return tuple(routes)


def read_env_vars_file(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """An env-vars file in SAM's format: ``{"Parameters": {...}, "<LogicalId>": {...}}``."""
    try:
        document = json.loads(Path(path).read_text())
    except OSError as exc:
        raise TemplateError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except ValueError:
        raise TemplateError(f"{str(path)!r} is not valid JSON") from None
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise TemplateError(
            f"{str(path)!r} must map 'Parameters' or a function's logical id to an object "
            'of variables, as sam does: {"GenerateFunction": {"NAME": "value"}}'
        )
    return {
        str(section): {str(k): _scalar(v) if v is not None else "" for k, v in values.items()}
        for section, values in document.items()
    }


def invocation_environment(
    spec: FunctionSpec,
    env_vars: Mapping[str, Mapping[str, str]] | None = None,
    shell: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The function's variables (SAM's priority order, see the module docstring) and notes
    for the user: variables dropped because unresolvable, and overrides the template does not
    declare for this function (ignored, as ``sam local invoke`` ignores them)."""
    shell = os.environ if shell is None else shell
    env_vars = env_vars or {}
    overrides = {**env_vars.get("Parameters", {}), **env_vars.get(spec.logical_id, {})}
    declared = spec.declared
    environment = dict(spec.environment)
    notes: list[str] = []
    for name in declared:
        if name in shell:
            environment[name] = shell[name]
    for name, value in overrides.items():
        if name in declared:
            environment[name] = value
        else:
            notes.append(
                f"{name} is not declared in the template for {spec.logical_id}: ignored, "
                "as sam local invoke does (declare it under Environment.Variables)"
            )
    for name, why in sorted(spec.unresolved.items()):
        if name not in environment:
            notes.append(f"{name} dropped: {why}; set it in --env-vars")
    return environment, notes
