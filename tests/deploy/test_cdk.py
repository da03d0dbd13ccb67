"""infra/: the CDK constructs synthesize offline and pin the same security and wiring as SAM.

One synthesis serves the session (tests/deploy/conftest.py): an app with a stack with IAM auth
and three providers, one without IAM auth and with OpenAI only, and one with every option set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flexiai_dev.cloudformation import load_template
from tests.deploy.conftest import (
    ALARM_TOPIC_ARN,
    ANTHROPIC_ARN,
    BEDROCK_MODEL,
    NETWORK,
    NON_DEFAULT_CONTEXT,
    OPENAI_ARN,
    REPO_ROOT,
)

pytestmark = [pytest.mark.cdk]

#: Checks CDK-generated templates trip by design, each with its reason.
CDK_LINT_IGNORES = [
    # CDK makes a Lambda function DependsOn its role (and the role's default policy) so the
    # policy exists before the first invocation; the role is also referenced by GetAtt.
    "W3005",
]


def _json(synthesized: dict[str, Any], key: str) -> dict[str, Any]:
    template: dict[str, Any] = synthesized[key][1].to_json()
    return template


def _of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def _logical_id(template: dict[str, Any], type_: str, prefix: str) -> str:
    (found,) = [k for k in _of_type(template, type_) if k.startswith(prefix)]
    return found


def _statements_by_role(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Inline statements per role logical id, from every AWS::IAM::Policy and role policy."""
    by_role: dict[str, list[dict[str, Any]]] = {}
    for policy in _of_type(template, "AWS::IAM::Policy").values():
        for role in policy["Properties"]["Roles"]:
            by_role.setdefault(role["Ref"], []).extend(
                policy["Properties"]["PolicyDocument"]["Statement"]
            )
    for logical_id, role in _of_type(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            by_role.setdefault(logical_id, []).extend(policy["PolicyDocument"]["Statement"])
    return by_role


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _function_env(template: dict[str, Any], prefix: str) -> dict[str, Any]:
    logical_id = _logical_id(template, "AWS::Lambda::Function", prefix)
    env: dict[str, Any] = template["Resources"][logical_id]["Properties"]["Environment"][
        "Variables"
    ]
    return env


def _role_of(template: dict[str, Any], function_prefix: str) -> str:
    logical_id = _logical_id(template, "AWS::Lambda::Function", function_prefix)
    role: str = template["Resources"][logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    return role


# ----------------------------------------------------------------------------- network


@pytest.mark.parametrize("variant", ["iam", "no_iam"])
def test_store_accepts_valkey_only_from_the_functions_security_group(
    synthesized: dict[str, Any], variant: str
) -> None:
    template = _json(synthesized, variant)
    store_sg = _logical_id(template, "AWS::EC2::SecurityGroup", "BreakerStoreSecurityGroup")
    functions_sg = _logical_id(template, "AWS::EC2::SecurityGroup", "FunctionsSecurityGroup")
    assert "SecurityGroupIngress" not in template["Resources"][store_sg]["Properties"]
    ingress = [
        rule["Properties"]
        for rule in _of_type(template, "AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == {"Fn::GetAtt": [store_sg, "GroupId"]}
    ]
    assert len(ingress) == 1
    rule = ingress[0]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 6379, 6380)
    assert rule["SourceSecurityGroupId"] == {"Fn::GetAtt": [functions_sg, "GroupId"]}

    egress = template["Resources"][functions_sg]["Properties"]["SecurityGroupEgress"]
    assert [(e["CidrIp"], e["FromPort"], e["ToPort"]) for e in egress] == [("0.0.0.0/0", 443, 443)]
    (to_store,) = _of_type(template, "AWS::EC2::SecurityGroupEgress").values()
    assert to_store["Properties"]["DestinationSecurityGroupId"] == {
        "Fn::GetAtt": [store_sg, "GroupId"]
    }
    assert (to_store["Properties"]["FromPort"], to_store["Properties"]["ToPort"]) == (6379, 6380)

    (cache,) = _of_type(template, "AWS::ElastiCache::ServerlessCache").values()
    assert cache["Properties"]["Engine"] == "valkey"
    assert cache["Properties"]["SecurityGroupIds"] == [{"Fn::GetAtt": [store_sg, "GroupId"]}]
    assert cache["Properties"]["SubnetIds"] == NETWORK["privateSubnetIds"].split(",")


# --------------------------------------------------------------------------------- IAM


def test_only_generate_reads_secrets_and_only_the_given_arns(synthesized: dict[str, Any]) -> None:
    for variant, arns in (("iam", {OPENAI_ARN, ANTHROPIC_ARN}), ("no_iam", {OPENAI_ARN})):
        template = _json(synthesized, variant)
        generate_role = _role_of(template, "FunctionsGenerate")
        for role, statements in _statements_by_role(template).items():
            secret_reads = [
                s for s in statements if any(a.startswith("secretsmanager:") for a in _actions(s))
            ]
            if role != generate_role:
                assert secret_reads == [], f"{variant}: {role} must not read provider secrets"
                continue
            resources: set[str] = set()
            for statement in secret_reads:
                assert set(_actions(statement)) <= {
                    "secretsmanager:GetSecretValue",
                    "secretsmanager:DescribeSecret",
                }
                resource = statement["Resource"]
                resources.update([resource] if isinstance(resource, str) else resource)
            assert resources == arns, variant


def test_elasticache_connect_only_with_iam_auth(synthesized: dict[str, Any]) -> None:
    template = _json(synthesized, "iam")
    cache = _logical_id(template, "AWS::ElastiCache::ServerlessCache", "BreakerStoreCache")
    app = _logical_id(template, "AWS::ElastiCache::User", "BreakerStoreAppUser")
    status = _logical_id(template, "AWS::ElastiCache::User", "BreakerStoreStatusUser")
    users = _of_type(template, "AWS::ElastiCache::User")
    by_role = _statements_by_role(template)
    # Each function connects as its own user, and names that user in its environment.
    for function, user in (("FunctionsGenerate", app), ("FunctionsBreakerStatus", status)):
        connects = [
            s for s in by_role[_role_of(template, function)] if "elasticache:Connect" in _actions(s)
        ]
        assert len(connects) == 1, function
        assert connects[0]["Resource"] == [
            {"Fn::GetAtt": [cache, "ARN"]},
            {"Fn::GetAtt": [user, "Arn"]},
        ]
        env = _function_env(template, function)
        assert env["FLEXIAI_SYNC_REDIS_USERNAME"] == users[user]["Properties"]["UserId"]
    for user in (app, status):
        props = users[user]["Properties"]
        assert props["AuthenticationMode"] == {"Type": "iam"}
        assert props["UserId"] == props["UserName"]
    (default_user,) = [
        u["Properties"] for u in users.values() if u["Properties"]["UserName"] == "default"
    ]
    assert default_user["AccessString"].startswith("off ")
    assert default_user["AuthenticationMode"]["Type"] == "password"
    (group,) = _of_type(template, "AWS::ElastiCache::UserGroup").values()
    assert template["Resources"][cache]["Properties"]["UserGroupId"] == {
        "Ref": next(iter(_of_type(template, "AWS::ElastiCache::UserGroup")))
    }
    assert group["Properties"]["UserIds"] == [{"Ref": u} for u in users]

    plain = _json(synthesized, "no_iam")
    for statements in _statements_by_role(plain).values():
        assert not [s for s in statements if "elasticache:Connect" in _actions(s)]
    assert not _of_type(plain, "AWS::ElastiCache::User")
    assert not _of_type(plain, "AWS::ElastiCache::UserGroup")
    (plain_cache,) = _of_type(plain, "AWS::ElastiCache::ServerlessCache").values()
    assert "UserGroupId" not in plain_cache["Properties"]


def test_bedrock_is_invokable_only_by_generate_and_only_for_its_model(
    synthesized: dict[str, Any],
) -> None:
    template = _json(synthesized, "iam")
    generate_role = _role_of(template, "FunctionsGenerate")
    for role, statements in _statements_by_role(template).items():
        bedrock = [s for s in statements if any(a.startswith("bedrock:") for a in _actions(s))]
        if role != generate_role:
            assert bedrock == []
            continue
        (statement,) = bedrock
        assert _actions(statement) == ["bedrock:InvokeModel"]
        assert json.dumps(statement["Resource"]).endswith(
            f'::foundation-model/{BEDROCK_MODEL}"]]}}'
        )


# --------------------------------------------------------------------------- functions


def test_functions_environment(synthesized: dict[str, Any]) -> None:
    template = _json(synthesized, "iam")
    cache = _logical_id(template, "AWS::ElastiCache::ServerlessCache", "BreakerStoreCache")
    generate = _function_env(template, "FunctionsGenerate")
    status = _function_env(template, "FunctionsBreakerStatus")
    # The same settings but for the cache user (the read-only one for the status route).
    assert {k: v for k, v in generate.items() if k != "FLEXIAI_SYNC_REDIS_USERNAME"} == {
        k: v for k, v in status.items() if k != "FLEXIAI_SYNC_REDIS_USERNAME"
    }
    user_id = _of_type(template, "AWS::ElastiCache::User")[
        _logical_id(template, "AWS::ElastiCache::User", "BreakerStoreAppUser")
    ]["Properties"]["UserId"]
    expected = {
        "POWERTOOLS_SERVICE_NAME": "flexiai",
        "POWERTOOLS_METRICS_NAMESPACE": "FlexiAI",
        "FLEXIAI_SYNC_ENABLED": "true",
        "FLEXIAI_SYNC_BACKEND": "redis",
        "FLEXIAI_SYNC_MODE": "snapshot",
        "FLEXIAI_SYNC_REDIS_HOST": {"Fn::GetAtt": [cache, "Endpoint.Address"]},
        "FLEXIAI_SYNC_REDIS_PORT": {"Fn::GetAtt": [cache, "Endpoint.Port"]},
        "FLEXIAI_SYNC_REDIS_SSL": "true",
        "FLEXIAI_SYNC_REDIS_CLUSTER": "true",
        "FLEXIAI_SYNC_REDIS_IAM_AUTH": "true",
        "FLEXIAI_SYNC_REDIS_USERNAME": user_id,
        "FLEXIAI_SYNC_REDIS_IAM_CACHE_NAME": template["Resources"][cache]["Properties"][
            "ServerlessCacheName"
        ],
        "FLEXIAI_SYNC_KEY_PREFIX": "flexiai",
        "FLEXIAI_SYNC_CHANNEL": "flexiai:events",
        "FLEXIAI_SYNC_STATE_TTL": "300",
        "FLEXIAI_PROVIDER_1_NAME": "openai",
        "FLEXIAI_PROVIDER_1_API_KEY": f"secretsmanager:{OPENAI_ARN}#api_key",
        "FLEXIAI_PROVIDER_1_PRIORITY": "1",
        "FLEXIAI_PROVIDER_1_BASE_URL": "",  # declared, unset for the library (as in SAM)
        "FLEXIAI_PROVIDER_2_NAME": "anthropic",
        "FLEXIAI_PROVIDER_2_API_KEY": f"secretsmanager:{ANTHROPIC_ARN}#api_key",
        "FLEXIAI_PROVIDER_3_NAME": "bedrock",
        "FLEXIAI_PROVIDER_3_MODEL": BEDROCK_MODEL,
        "FLEXIAI_LAMBDA_SAFETY_MARGIN_MS": "1000",
    }
    assert {k: generate.get(k) for k in expected} == expected
    assert "FLEXIAI_PROVIDER_3_API_KEY" not in generate

    plain = _function_env(_json(synthesized, "no_iam"), "FunctionsGenerate")
    assert plain["FLEXIAI_SYNC_REDIS_IAM_AUTH"] == "false"
    assert "FLEXIAI_SYNC_REDIS_USERNAME" not in plain
    assert not [k for k in plain if k.startswith("FLEXIAI_PROVIDER_2_")]


def test_cdk_sets_the_same_variables_as_the_sam_template(synthesized: dict[str, Any]) -> None:
    """Both routes configure the library identically (the SAM drift test covers the names)."""
    sam = load_template(REPO_ROOT / "template.yaml")
    sam_names = set(sam["Globals"]["Function"]["Environment"]["Variables"])
    cdk_names = set(_function_env(_json(synthesized, "iam"), "FunctionsGenerate"))
    assert cdk_names == sam_names


def _joined(value: Any) -> str:
    """A synthesized Fn::Join as text, pseudo parameters as ${Name} (as in a Fn::Sub)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return "${" + str(value["Ref"]) + "}"
    separator, parts = value["Fn::Join"]
    return str(separator).join(_joined(part) for part in parts)


def test_functions_run_python312_in_the_vpc_with_the_public_powertools_layer(
    synthesized: dict[str, Any],
) -> None:
    """The same literal layer ARN as template.yaml: region, architecture, layer version."""
    template = _json(synthesized, "iam")
    powertools = (
        "arn:${AWS::Partition}:lambda:${AWS::Region}:017000801446:layer:"
        "AWSLambdaPowertoolsPythonV3-python312-x86_64:27"
    )
    sam = load_template(REPO_ROOT / "template.yaml")
    sam_layer = sam["Globals"]["Function"]["Layers"][0]["Fn::Sub"]
    assert (
        sam_layer.replace("${Architecture}", "x86_64").replace(
            "${PowertoolsLayerVersion}", str(sam["Parameters"]["PowertoolsLayerVersion"]["Default"])
        )
        == powertools
    )
    parameters = template.get("Parameters", {}).values()
    assert not [p for p in parameters if "powertools" in str(p.get("Default", ""))]
    layer = _logical_id(template, "AWS::Lambda::LayerVersion", "FunctionsFlexiAILayer")
    functions = _of_type(template, "AWS::Lambda::Function")
    assert len(functions) == 2
    for fn in functions.values():
        props = fn["Properties"]
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["x86_64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert [_joined(props["Layers"][0]), props["Layers"][1]] == [powertools, {"Ref": layer}]
        assert props["VpcConfig"]["SubnetIds"] == NETWORK["privateSubnetIds"].split(",")
    handlers = sorted(fn["Properties"]["Handler"] for fn in functions.values())
    assert handlers == ["breaker_status.handler", "generate.handler"]
    generate = functions[_logical_id(template, "AWS::Lambda::Function", "FunctionsGenerate")]
    assert generate["Properties"]["Timeout"] <= 29


def test_alarm_on_circuit_opened(synthesized: dict[str, Any]) -> None:
    synthesized["iam"][1].has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "FlexiAI",
            "MetricName": "CircuitOpened",
            "Dimensions": [{"Name": "service", "Value": "flexiai"}],
            "Statistic": "Sum",
            "Period": 300,
            "Threshold": 1,
            "EvaluationPeriods": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
        },
    )


def test_http_api_routes_require_iam(synthesized: dict[str, Any]) -> None:
    template = _json(synthesized, "iam")
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in _of_type(template, "AWS::ApiGatewayV2::Route").values()
    }
    assert set(routes) == {"POST /generate", "GET /breakers"}
    assert {r["AuthorizationType"] for r in routes.values()} == {"AWS_IAM"}


# ------------------------------------------------------------------------------ lint


@pytest.mark.parametrize("variant", ["iam", "no_iam", "options"])
def test_cfn_lint_passes_on_the_synthesized_template(
    synthesized: dict[str, Any], variant: str
) -> None:
    from cfnlint.api import ManualArgs, lint

    matches = lint(
        json.dumps(_json(synthesized, variant)),
        config=ManualArgs(regions=["us-east-1"], ignore_checks=CDK_LINT_IGNORES),
    )
    assert [str(m) for m in matches] == []


# -------------------------------------------------------------------- construct checks


def test_store_rejects_names_its_user_ids_or_key_patterns_cannot_hold(
    synthesized: dict[str, Any],
) -> None:
    from aws_cdk import App, Stack
    from aws_cdk import aws_ec2 as ec2
    from flexiai_infra import BreakerStore

    stack = Stack(App(), "Names")
    vpc = ec2.Vpc.from_vpc_attributes(
        stack,
        "Vpc",
        vpc_id=NETWORK["vpcId"],
        availability_zones=NETWORK["availabilityZones"].split(","),
        private_subnet_ids=NETWORK["privateSubnetIds"].split(","),
    )
    with pytest.raises(ValueError, match="cache_name"):
        BreakerStore(stack, "Store", vpc=vpc, cache_name="x" * 31)
    with pytest.raises(ValueError, match="cache_name"):
        BreakerStore(stack, "Store2", vpc=vpc, cache_name="Upper")
    with pytest.raises(ValueError, match="key_prefix"):
        BreakerStore(stack, "Store3", vpc=vpc, cache_name="ok", key_prefix="{tagged}")


def test_functions_refuse_to_guess_where_the_layer_is(
    synthesized: dict[str, Any], tmp_path: Path
) -> None:
    from aws_cdk import App, Stack
    from aws_cdk import aws_ec2 as ec2
    from flexiai_infra import BreakerStore, FlexiAIFunctions, ProviderSpec

    stack = Stack(App(), "Layer")
    vpc = ec2.Vpc.from_vpc_attributes(
        stack,
        "Vpc",
        vpc_id=NETWORK["vpcId"],
        availability_zones=NETWORK["availabilityZones"].split(","),
        private_subnet_ids=NETWORK["privateSubnetIds"].split(","),
    )
    store = BreakerStore(stack, "Store", vpc=vpc)
    with pytest.raises(ValueError, match="make -C layer build-FlexiAILayer"):
        FlexiAIFunctions(
            stack,
            "Functions",
            vpc=vpc,
            store=store,
            providers=[ProviderSpec(name="bedrock", model=BEDROCK_MODEL)],
            handlers_path=tmp_path,
            flexiai_layer_path=tmp_path / "missing",
        )


# ------------------------------------------------------------- same options in SAM and CDK


def _sam_parameters() -> dict[str, dict[str, Any]]:
    parameters: dict[str, dict[str, Any]] = load_template(REPO_ROOT / "template.yaml")["Parameters"]
    return parameters


def test_every_sam_parameter_is_a_context_key_of_the_cdk_app(synthesized: dict[str, Any]) -> None:
    app = synthesized["app"]
    assert set(app.SAM_PARAMETERS) == set(_sam_parameters())
    handled = set(app.REQUIRED_CONTEXT) | set(app._OPTION_KEYS)
    handled |= {"anthropicSecretArn", "bedrockModelId"}
    assert set(app.SAM_PARAMETERS.values()) <= handled
    # ... and every option the drift test below follows is one of them.
    assert set(app._OPTION_KEYS) == set(NON_DEFAULT_CONTEXT) | {"iamAuth"}


def test_cdk_defaults_are_the_sam_defaults(synthesized: dict[str, Any]) -> None:
    app = synthesized["app"]
    defaults = app.StackOptions()
    for parameter, key in app.SAM_PARAMETERS.items():
        if key not in app._OPTION_KEYS:
            continue
        name, convert = app._OPTION_KEYS[key]
        sam_default = _sam_parameters()[parameter]["Default"]
        expected = None if sam_default == "" else convert(sam_default)
        assert getattr(defaults, name) == expected, parameter


def _only(template: dict[str, Any], type_: str) -> dict[str, Any]:
    (resource,) = _of_type(template, type_).values()
    props: dict[str, Any] = resource["Properties"]
    return props


def _option_checks() -> dict[str, Any]:
    """For each option of NON_DEFAULT_CONTEXT, a check of its effect on the synthesized
    template (given the template and the option's value)."""

    def env(t: dict[str, Any], name: str) -> Any:
        return _function_env(t, "FunctionsGenerate")[name]

    def functions(t: dict[str, Any]) -> list[dict[str, Any]]:
        return [f["Properties"] for f in _of_type(t, "AWS::Lambda::Function").values()]

    def users(t: dict[str, Any]) -> list[dict[str, Any]]:
        return [u["Properties"] for u in _of_type(t, "AWS::ElastiCache::User").values()]

    def powertools(t: dict[str, Any]) -> str:
        (arn,) = {_joined(f["Layers"][0]) for f in functions(t)}
        return arn

    def stage(t: dict[str, Any]) -> dict[str, Any]:
        return _only(t, "AWS::ApiGatewayV2::Stage")

    return {
        "openaiModel": lambda t, v: env(t, "FLEXIAI_PROVIDER_1_MODEL") == v,
        "openaiBaseUrl": lambda t, v: env(t, "FLEXIAI_PROVIDER_1_BASE_URL") == v,
        "anthropicModel": lambda t, v: env(t, "FLEXIAI_PROVIDER_2_MODEL") == v,
        "cacheName": lambda t, v: (
            _only(t, "AWS::ElastiCache::ServerlessCache")["ServerlessCacheName"] == v
            and {u["UserId"] for u in users(t)} == {f"{v}-default", f"{v}-app", f"{v}-status"}
        ),
        "valkeyMajorVersion": lambda t, v: (
            _only(t, "AWS::ElastiCache::ServerlessCache")["MajorEngineVersion"] == v
        ),
        "maxDataStorageGb": lambda t, v: (
            _only(t, "AWS::ElastiCache::ServerlessCache")["CacheUsageLimits"]["DataStorage"][
                "Maximum"
            ]
            == int(v)
        ),
        "maxEcpuPerSecond": lambda t, v: (
            _only(t, "AWS::ElastiCache::ServerlessCache")["CacheUsageLimits"]["ECPUPerSecond"][
                "Maximum"
            ]
            == int(v)
        ),
        "keyPrefix": lambda t, v: (
            env(t, "FLEXIAI_SYNC_KEY_PREFIX") == v
            and env(t, "FLEXIAI_SYNC_CHANNEL") == f"{v}:events"
            and all(
                f"~{{{v}}}* ~{v}:* &{v}:events " in u["AccessString"]
                for u in users(t)
                if u["UserName"] != "default"
            )
        ),
        "stateTtlSeconds": lambda t, v: env(t, "FLEXIAI_SYNC_STATE_TTL") == v,
        "failureThreshold": lambda t, v: env(t, "FLEXIAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD") == v,
        "recoveryTimeoutSeconds": lambda t, v: (
            env(t, "FLEXIAI_CIRCUIT_BREAKER_RECOVERY_TIMEOUT") == v
        ),
        "safetyMarginMs": lambda t, v: env(t, "FLEXIAI_LAMBDA_SAFETY_MARGIN_MS") == v,
        "serviceName": lambda t, v: (
            env(t, "POWERTOOLS_SERVICE_NAME") == v
            and _only(t, "AWS::CloudWatch::Alarm")["Dimensions"]
            == [{"Name": "service", "Value": v}]
        ),
        "logLevel": lambda t, v: env(t, "POWERTOOLS_LOG_LEVEL") == v,
        "logRetentionDays": lambda t, v: (
            {
                g["Properties"]["RetentionInDays"]
                for g in _of_type(t, "AWS::Logs::LogGroup").values()
            }
            == {int(v)}
            and len(_of_type(t, "AWS::Logs::LogGroup")) == 3  # two functions, the access log
        ),
        "architecture": lambda t, v: (
            all(f["Architectures"] == [v] for f in functions(t))
            and _only(t, "AWS::Lambda::LayerVersion")["CompatibleArchitectures"] == [v]
            and f"-python312-{v}:" in powertools(t)
        ),
        "reservedConcurrency": lambda t, v: all(
            f["ReservedConcurrentExecutions"] == int(v) for f in functions(t)
        ),
        "powertoolsLayerVersion": lambda t, v: powertools(t).endswith(f":{v}"),
        "apiThrottleRateLimit": lambda t, v: (
            stage(t)["DefaultRouteSettings"]["ThrottlingRateLimit"] == int(v)
        ),
        "apiThrottleBurstLimit": lambda t, v: (
            stage(t)["DefaultRouteSettings"]["ThrottlingBurstLimit"] == int(v)
        ),
        "alarmTopicArn": lambda t, v: (
            _only(t, "AWS::CloudWatch::Alarm")["AlarmActions"] == [v]
            and not _of_type(t, "AWS::SNS::Topic")
        ),
        "alarmEmail": lambda t, v: (
            _only(t, "AWS::SNS::Subscription")
            == {"Protocol": "email", "Endpoint": v, "TopicArn": ALARM_TOPIC_ARN}
        ),
    }


def test_every_option_reaches_the_synthesized_template(synthesized: dict[str, Any]) -> None:
    """The ``options`` stack sets every option to a non-default value: each one shows."""
    checks = _option_checks()
    assert set(checks) == set(NON_DEFAULT_CONTEXT)
    template = _json(synthesized, "options")
    failed = [key for key, value in NON_DEFAULT_CONTEXT.items() if not checks[key](template, value)]
    assert failed == []
    # ... and none of them shows in the default stack.
    default = _json(synthesized, "iam")

    def holds(key: str, value: str) -> bool:
        try:
            return bool(checks[key](default, value))
        except (KeyError, ValueError):  # the property, or the resource, is absent
            return False

    assert [key for key, value in NON_DEFAULT_CONTEXT.items() if holds(key, value)] == []


def test_by_default_the_alarm_notifies_a_topic_of_its_own(synthesized: dict[str, Any]) -> None:
    for variant in ("iam", "no_iam"):
        template = _json(synthesized, variant)
        (topic,) = _of_type(template, "AWS::SNS::Topic")
        assert _only(template, "AWS::CloudWatch::Alarm")["AlarmActions"] == [{"Ref": topic}]
        assert not _of_type(template, "AWS::SNS::Subscription")
    sam = load_template(REPO_ROOT / "template.yaml")
    resources = sam["Resources"]
    assert resources["AlarmTopic"]["Condition"] == "CreateAlarmTopic"
    assert sam["Conditions"]["CreateAlarmTopic"] == {"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}
    sam_topic = {"Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]}
    assert resources["CircuitOpenedAlarm"]["Properties"]["AlarmActions"] == [sam_topic]
    subscription = resources["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"] == {
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
        "TopicArn": sam_topic,
    }


def test_http_api_access_log_names_the_caller_in_sam_and_cdk(synthesized: dict[str, Any]) -> None:
    from infra.flexiai_infra._functions import ACCESS_LOG_FIELDS

    assert {"userArn", "caller", "accountId", "principalOrgId", "sourceIp"} <= set(
        ACCESS_LOG_FIELDS
    )
    assert ACCESS_LOG_FIELDS["userArn"] == "$context.identity.userArn"
    template = _json(synthesized, "iam")
    settings = _only(template, "AWS::ApiGatewayV2::Stage")["AccessLogSettings"]
    assert json.loads(settings["Format"]) == ACCESS_LOG_FIELDS
    group = _logical_id(template, "AWS::Logs::LogGroup", "HttpApiAccessLogs")
    assert settings["DestinationArn"] == {"Fn::GetAtt": [group, "Arn"]}

    sam = load_template(REPO_ROOT / "template.yaml")
    sam_settings = sam["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"]
    assert json.loads(sam_settings["Format"]) == ACCESS_LOG_FIELDS
    assert sam_settings["DestinationArn"] == {"Fn::GetAtt": ["HttpApiAccessLogGroup", "Arn"]}
    retention = sam["Resources"]["HttpApiAccessLogGroup"]["Properties"]["RetentionInDays"]
    assert retention == {"Ref": "LogRetentionDays"}


def test_sam_parameters_reach_the_resources_they_name() -> None:
    """The SAM side of the options the CDK test above follows, where they are new."""
    sam = load_template(REPO_ROOT / "template.yaml")
    globals_ = sam["Globals"]["Function"]
    assert globals_["ReservedConcurrentExecutions"] == {
        "Fn::If": [
            "HasReservedConcurrency",
            {"Ref": "ReservedConcurrency"},
            {"Ref": "AWS::NoValue"},
        ]
    }
    assert globals_["Layers"][0] == {
        "Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:017000801446:layer:"
        "AWSLambdaPowertoolsPythonV3-python312-${Architecture}:${PowertoolsLayerVersion}"
    }
    variables = globals_["Environment"]["Variables"]
    assert variables["FLEXIAI_PROVIDER_1_BASE_URL"] == {"Ref": "OpenAIBaseUrl"}
    log_groups = [
        r["Properties"]["RetentionInDays"]
        for r in sam["Resources"].values()
        if r["Type"] == "AWS::Logs::LogGroup"
    ]
    assert log_groups == [{"Ref": "LogRetentionDays"}] * 3


def test_functions_refuse_a_layer_built_for_the_other_architecture(
    synthesized: dict[str, Any], tmp_path: Path
) -> None:
    from aws_cdk import App, Stack
    from aws_cdk import aws_ec2 as ec2
    from aws_cdk import aws_lambda as lambda_
    from flexiai_infra import BreakerStore, FlexiAIFunctions, ProviderSpec

    from tests.deploy.conftest import _fake_layer

    stack = Stack(App(), "Arch")
    vpc = ec2.Vpc.from_vpc_attributes(
        stack,
        "Vpc",
        vpc_id=NETWORK["vpcId"],
        availability_zones=NETWORK["availabilityZones"].split(","),
        private_subnet_ids=NETWORK["privateSubnetIds"].split(","),
    )
    store = BreakerStore(stack, "Store", vpc=vpc)
    x86_layer = _fake_layer(tmp_path / "x86", "x86_64")
    with pytest.raises(ValueError, match="make -C layer build-FlexiAILayerArm64"):
        FlexiAIFunctions(
            stack,
            "Functions",
            vpc=vpc,
            store=store,
            providers=[ProviderSpec(name="bedrock", model=BEDROCK_MODEL)],
            handlers_path=tmp_path,
            flexiai_layer_path=x86_layer,
            architecture=lambda_.Architecture.ARM_64,
        )


def test_the_cdk_app_has_the_outputs_of_the_sam_template(synthesized: dict[str, Any]) -> None:
    sam = load_template(REPO_ROOT / "template.yaml")
    assert set(_json(synthesized, "iam")["Outputs"]) == set(sam["Outputs"])
    plain = set(_json(synthesized, "no_iam")["Outputs"])
    conditional = {k for k, v in sam["Outputs"].items() if v.get("Condition") == "UseIamAuth"}
    assert plain == set(sam["Outputs"]) - conditional
