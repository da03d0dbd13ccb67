"""template.yaml: it lints, it validates with SAM, and it agrees with the code it deploys."""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flexiai_dev.cloudformation import load_template

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"
SAM_VALIDATE = REPO_ROOT / "scripts" / "sam-validate.sh"
SAM_VENV = Path(os.environ.get("SAM_VENV", REPO_ROOT / ".venv-sam"))

PROVIDER_VARIABLE = re.compile(
    r"FLEXIAI_PROVIDER_\d+_(NAME|KIND|API_KEY|MODEL|PRIORITY|BASE_URL|TIMEOUT|MAX_RETRIES)"
)
POWERTOOLS_VARIABLES = {
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
}
POWERTOOLS_LAYER = {
    "Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:017000801446:layer:"
    "AWSLambdaPowertoolsPythonV3-python312-${Architecture}:${PowertoolsLayerVersion}"
}
NO_VALUE = {"Ref": "AWS::NoValue"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def _resources(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _resources(template, "AWS::Serverless::Function")


def _environment(template: dict[str, Any]) -> dict[str, Any]:
    """Every environment variable the template sets, Globals and per function."""
    env = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    for fn in _functions(template).values():
        env.update(fn["Properties"].get("Environment", {}).get("Variables", {}))
    return env


def _statements(fn: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """(condition or None, statement) for every inline policy statement of a function."""
    found: list[tuple[str | None, dict[str, Any]]] = []

    def walk(item: Any, condition: str | None) -> None:
        if isinstance(item, dict) and "Fn::If" in item:
            cond, then, _else = item["Fn::If"]
            assert _else == NO_VALUE, "a conditional policy must add nothing when false"
            walk(then, cond)
        elif isinstance(item, dict) and "Statement" in item:
            for statement in item["Statement"]:
                walk(statement, condition)
        elif isinstance(item, dict) and "Effect" in item:
            found.append((condition, item))

    for policy in fn["Properties"].get("Policies", []):
        walk(policy, None)
    return found


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


# ------------------------------------------------------------------------------- linters


def test_cfn_lint_reports_nothing_not_even_informational() -> None:
    """cfn-lint (errors, warnings and informational checks) passes on template.yaml."""
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(TEMPLATE, config=ManualArgs(include_checks=["I"], regions=["us-east-1"]))
    assert [str(m) for m in matches] == []


def test_sam_validate_lint_passes() -> None:
    """`sam validate --lint` (in its own venv, created on first use) accepts template.yaml."""
    if not (SAM_VENV / "bin" / "sam").exists():
        prepare = subprocess.run(
            ["bash", str(SAM_VALIDATE), "--prepare"],
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
        )
        if prepare.returncode != 0:
            pytest.skip(
                f"could not create {SAM_VENV} for aws-sam-cli (no network to PyPI?); run "
                f"scripts/sam-validate.sh --prepare. stderr: {prepare.stderr[-500:]}"
            )
    result = subprocess.run(
        ["bash", str(SAM_VALIDATE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


# ------------------------------------------------------------------------- code drift


@pytest.mark.parametrize("logical_id", ["GenerateFunction", "BreakerStatusFunction"])
def test_each_handler_string_names_a_handler_function_in_handlers(
    template: dict[str, Any], logical_id: str
) -> None:
    """Handler `X.handler` with CodeUri handlers/ needs handlers/X.py defining `handler`."""
    props = template["Resources"][logical_id]["Properties"]
    module, _, attribute = props["Handler"].rpartition(".")
    path = REPO_ROOT / props["CodeUri"] / (module.replace(".", "/") + ".py")
    assert path.is_file(), f"{logical_id}: {path.relative_to(REPO_ROOT)} does not exist"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    assert attribute in names, f"{path.name} defines no module-level {attribute!r}"


def test_every_function_in_the_template_is_checked_above(template: dict[str, Any]) -> None:
    assert set(_functions(template)) == {"GenerateFunction", "BreakerStatusFunction"}


def test_every_flexiai_variable_the_template_sets_is_one_the_library_reads(
    template: dict[str, Any],
) -> None:
    """A renamed or misspelt FLEXIAI_* variable would be ignored silently at run time."""
    try:
        from flexiai.config import ENVIRONMENT_VARIABLES
    except ImportError as exc:  # the contract: a frozenset of the fixed names
        pytest.fail(f"flexiai.config.ENVIRONMENT_VARIABLES is missing: {exc}")
    names = set(_environment(template))
    unknown = sorted(
        name
        for name in names
        if name.startswith("FLEXIAI_")
        and name not in ENVIRONMENT_VARIABLES
        and not PROVIDER_VARIABLE.fullmatch(name)
    )
    assert unknown == []
    assert {n for n in names if not n.startswith("FLEXIAI_")} <= POWERTOOLS_VARIABLES


# ------------------------------------------------------------------ what the template pins


def test_api_keys_are_runtime_references_never_values(template: dict[str, Any]) -> None:
    keys = {k: v for k, v in _environment(template).items() if k.endswith("_API_KEY")}
    assert keys, "no provider API key is configured"
    for name, value in keys.items():
        if "Fn::If" in value:
            _cond, value, _else = value["Fn::If"]
            assert _else == NO_VALUE
        assert re.fullmatch(r"secretsmanager:\$\{\w+SecretArn\}#api_key", value["Fn::Sub"]), name


def test_the_cache_accepts_valkey_only_from_the_functions_security_group(
    template: dict[str, Any],
) -> None:
    cache_sg = template["Resources"]["CacheSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in cache_sg
    rules = [
        r["Properties"]
        for r in _resources(template, "AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Ref": "CacheSecurityGroup"}
    ]
    assert rules == [
        {
            "Description": rules[0]["Description"],
            "GroupId": {"Ref": "CacheSecurityGroup"},
            "IpProtocol": "tcp",
            "FromPort": 6379,
            "ToPort": 6380,
            "SourceSecurityGroupId": {"Ref": "FunctionsSecurityGroup"},
        }
    ]
    cache = template["Resources"]["Cache"]["Properties"]
    assert cache["SecurityGroupIds"] == [{"Ref": "CacheSecurityGroup"}]
    assert cache["Engine"] == "valkey"


def test_only_generate_reads_secrets_and_only_the_given_ones(template: dict[str, Any]) -> None:
    allowed = [
        {"Ref": "OpenAISecretArn"},
        {"Fn::If": ["HasAnthropic", {"Ref": "AnthropicSecretArn"}, NO_VALUE]},
    ]
    for logical_id, fn in _functions(template).items():
        secret_statements = [
            s
            for _c, s in _statements(fn)
            if any(a.startswith("secretsmanager:") for a in _actions(s))
        ]
        if logical_id == "GenerateFunction":
            assert len(secret_statements) == 1
            assert _actions(secret_statements[0]) == ["secretsmanager:GetSecretValue"]
            assert secret_statements[0]["Resource"] == allowed
        else:
            assert secret_statements == [], f"{logical_id} must not read provider secrets"


def test_elasticache_connect_is_granted_only_under_iam_auth(template: dict[str, Any]) -> None:
    """Each function connects as its own user (the status route's is read-only) and names
    that user in its environment."""
    users_of = {"GenerateFunction": "CacheAppUser", "BreakerStatusFunction": "CacheStatusUser"}
    globals_env = template["Globals"]["Function"]["Environment"]["Variables"]
    for logical_id, fn in _functions(template).items():
        user = users_of[logical_id]
        connects = [(c, s) for c, s in _statements(fn) if "elasticache:Connect" in _actions(s)]
        assert len(connects) == 1, logical_id
        condition, statement = connects[0]
        assert condition == "UseIamAuth"
        assert statement["Resource"] == [
            {"Fn::GetAtt": ["Cache", "ARN"]},
            {"Fn::GetAtt": [user, "Arn"]},
        ]
        env = {**globals_env, **fn["Properties"].get("Environment", {}).get("Variables", {})}
        assert env["FLEXIAI_SYNC_REDIS_USERNAME"] == {
            "Fn::If": ["UseIamAuth", {"Ref": user}, NO_VALUE]
        }
    for logical_id in ("CacheDefaultUser", "CacheAppUser", "CacheStatusUser", "CacheUserGroup"):
        assert template["Resources"][logical_id]["Condition"] == "UseIamAuth"
    users = _resources(template, "AWS::ElastiCache::User")
    for user in ("CacheAppUser", "CacheStatusUser"):
        assert users[user]["Properties"]["AuthenticationMode"] == {"Type": "iam"}
        assert users[user]["Properties"]["UserId"] == users[user]["Properties"]["UserName"]
    assert template["Resources"]["CacheUserGroup"]["Properties"]["UserIds"] == [
        {"Ref": "CacheDefaultUser"},
        {"Ref": "CacheAppUser"},
        {"Ref": "CacheStatusUser"},
    ]
    assert users["CacheDefaultUser"]["Properties"]["UserName"] == "default"
    assert users["CacheDefaultUser"]["Properties"]["AccessString"].startswith("off ")


def test_alarm_watches_circuit_opened_with_the_functions_service_dimension(
    template: dict[str, Any],
) -> None:
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    alarm = template["Resources"]["CircuitOpenedAlarm"]["Properties"]
    assert alarm["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"] == "FlexiAI"
    assert alarm["MetricName"] == "CircuitOpened"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
    assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"]) == ("Sum", 300, 1)
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"


def test_functions_run_python312_with_powertools_then_flexiai_layers(
    template: dict[str, Any],
) -> None:
    globals_ = template["Globals"]["Function"]
    assert globals_["Runtime"] == "python3.12"
    assert globals_["Architectures"] == [{"Ref": "Architecture"}]
    assert globals_["Tracing"] == "Active"
    assert globals_["Layers"] == [
        POWERTOOLS_LAYER,
        {"Fn::If": ["IsArm64", {"Ref": "FlexiAILayerArm64"}, {"Ref": "FlexiAILayerX8664"}]},
    ]
    assert template["Parameters"]["Architecture"]["AllowedValues"] == ["x86_64", "arm64"]
    # One layer per architecture, built for it, deployed only with it.
    for logical_id, arch, condition in (
        ("FlexiAILayerX8664", "x86_64", "IsX8664"),
        ("FlexiAILayerArm64", "arm64", "IsArm64"),
    ):
        layer = template["Resources"][logical_id]
        assert layer["Condition"] == condition
        assert template["Conditions"][condition] == {"Fn::Equals": [{"Ref": "Architecture"}, arch]}
        assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
        assert layer["Properties"]["CompatibleArchitectures"] == [arch]
        assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": arch}


def test_generate_gives_up_before_the_http_api_does(template: dict[str, Any]) -> None:
    """HTTP API integrations time out at 30 s; the Lambda deadline must come first."""
    props = template["Resources"]["GenerateFunction"]["Properties"]
    assert props["Timeout"] <= 29
    assert props["Events"]["Generate"]["Properties"]["Method"] == "POST"


def test_every_route_requires_iam_auth(template: dict[str, Any]) -> None:
    api = template["Resources"]["HttpApi"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    for fn in _functions(template).values():
        for event in fn["Properties"]["Events"].values():
            assert event["Type"] == "HttpApi"
            assert "Auth" not in event["Properties"], "a route overrides the IAM authorizer"


def test_app_user_may_run_only_the_commands_the_acl_tests_prove_necessary(
    template: dict[str, Any],
) -> None:
    """The cache user gets the README's least-privilege command list (cluster variant),
    the same list tests/sync proves necessary rule by rule, in SAM and in CDK alike, and the
    one channel its function publishes to."""
    pytest.importorskip("aws_cdk", reason="the CDK side needs the cdk extra")
    from flexiai_dev.servers import ACL_CLUSTER_COMMANDS, ACL_COMMANDS
    from infra.flexiai_infra._store import APP_COMMANDS, STATUS_COMMANDS

    expected = {"-@all", *(f"+{c}" for c in ACL_COMMANDS + ACL_CLUSTER_COMMANDS)}
    users = _resources(template, "AWS::ElastiCache::User")
    access = users["CacheAppUser"]["Properties"]["AccessString"]["Fn::Sub"]
    rules = access.split()
    assert rules[0] == "on"
    assert {r for r in rules if r[0] in "+-"} == expected
    assert [r for r in rules if r.startswith("~")] == ["~{${KeyPrefix}}*", "~${KeyPrefix}:*"]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["FLEXIAI_SYNC_CHANNEL"] == {"Fn::Sub": "${KeyPrefix}:events"}
    assert [r for r in rules if r.startswith("&")] == ["&${KeyPrefix}:events"]
    assert set(APP_COMMANDS.split()) == expected

    # The status user: same keys and channel, read commands only.
    status = users["CacheStatusUser"]["Properties"]["AccessString"]["Fn::Sub"].split()
    assert [r for r in status if r[0] in "on~&"] == [r for r in rules if r[0] in "on~&"]
    status_commands = {r for r in status if r[0] in "+-"}
    assert status_commands == set(STATUS_COMMANDS.split())
    writes = {"+set", "+publish", "+evalsha", "+eval", "+script|load", "+del", "+@all"}
    assert not status_commands & writes


def test_every_variable_the_docs_env_json_sets_is_declared_for_sam_local_invoke(
    template: dict[str, Any],
) -> None:
    """`sam local invoke --env-vars` passes on only the variables a template declares: an
    example env.json naming another one would be silently ignored."""
    import json
    import re

    declared = set(_environment(template))
    pattern = re.compile(r"cat > env\.json <<'JSON'\n(.*?)\nJSON\n", re.S)
    examples = [
        (page.name, json.loads(block))
        for page in sorted((REPO_ROOT / "docs").glob("*.md"))
        for block in pattern.findall(page.read_text())
    ]
    assert examples, "no env.json example found in docs/"
    for page, example in examples:
        for function, variables in example.items():
            assert set(variables) <= declared, (page, function, set(variables) - declared)


_SAM_LOCAL_VIEW = """
import json, sys
from samcli.lib.providers.sam_function_provider import SamFunctionProvider
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider

overrides = {"VpcId": "vpc-0", "SubnetIds": "subnet-0",
             "OpenAISecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x-AbCdEf"}
stacks, _ = SamLocalStackProvider.get_stacks(
    sys.argv[1], parameter_overrides=overrides,
    global_parameter_overrides={"AWS::Region": "eu-west-1"})
function = SamFunctionProvider(stacks).get("GenerateFunction")
print(json.dumps({
    "layers": [[layer.arn, layer.version, layer.is_defined_within_template]
               for layer in function.layers],
    "variables": sorted((function.environment or {}).get("Variables", {})),
}))
"""


def test_sam_local_resolves_the_powertools_layer_and_declares_the_base_url(
    tmp_path: Path,
) -> None:
    """What `sam local invoke` sees, read by the SAM CLI's own function provider: a layer ARN
    with a version its downloader accepts (a {{resolve:ssm:...}} reference is refused), and
    FLEXIAI_PROVIDER_1_BASE_URL among the variables --env-vars may set."""
    import json

    from tests.deploy.test_scanners import _sam_python

    script = tmp_path / "sam_local_view.py"
    script.write_text(_SAM_LOCAL_VIEW)
    result = subprocess.run(
        [str(_sam_python()), str(script), str(REPO_ROOT / "template.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    view = json.loads(result.stdout.strip().splitlines()[-1])
    assert view["layers"][0] == [
        "arn:aws:lambda:eu-west-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-x86_64:27",
        27,
        False,
    ]
    assert view["layers"][1][0] == "FlexiAILayerX8664"  # built by sam build
    assert "FLEXIAI_PROVIDER_1_BASE_URL" in view["variables"]
