"""Example CDK app: flexiai on Lambda in an existing VPC, offline-synthesizable.

    make -C ../layer build-FlexiAILayer          # builds ../layer/build/flexiai-layer
    cdk deploy \\
      -c vpcId=vpc-0123 -c availabilityZones=eu-west-1a,eu-west-1b \\
      -c privateSubnetIds=subnet-aaa,subnet-bbb \\
      -c openaiSecretArn=arn:aws:secretsmanager:eu-west-1:111122223333:secret:openai-AbCdEf \\
      [-c anthropicSecretArn=...] [-c bedrockModelId=...] [-c iamAuth=false] \\
      [-c architecture=arm64] [-c alarmEmail=ops@example.com] [-c stackName=...] ...

Every parameter of template.yaml has a context key here (``SAM_PARAMETERS``; tests/deploy
check that the two stay in step), plus ``availabilityZones``, ``flexiaiLayerPath``,
``handlersPath`` and ``stackName``. With ``-c architecture=arm64``, build the layer with
``make -C ../layer build-FlexiAILayerArm64``.

The stack is environment-agnostic and imports the VPC from attributes: nothing is looked up,
so `cdk synth` needs no AWS credentials. See docs/aws.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import App, CfnOutput, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from constructs import Construct
from flexiai_infra import (
    POWERTOOLS_LAYER_VERSION,
    BreakerStore,
    FlexiAIFunctions,
    FlexiAIHttpApi,
    ProviderSpec,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LAYER_PATH = REPO_ROOT / "layer" / "build" / "flexiai-layer"
REQUIRED_CONTEXT = ("vpcId", "availabilityZones", "privateSubnetIds", "openaiSecretArn")

#: template.yaml's parameters and the context key of this app that sets the same thing.
SAM_PARAMETERS = {
    "VpcId": "vpcId",
    "SubnetIds": "privateSubnetIds",
    "OpenAISecretArn": "openaiSecretArn",
    "OpenAIModel": "openaiModel",
    "OpenAIBaseUrl": "openaiBaseUrl",
    "AnthropicSecretArn": "anthropicSecretArn",
    "AnthropicModel": "anthropicModel",
    "BedrockModelId": "bedrockModelId",
    "CacheName": "cacheName",
    "ValkeyMajorVersion": "valkeyMajorVersion",
    "IamAuth": "iamAuth",
    "MaxDataStorageGB": "maxDataStorageGb",
    "MaxECPUPerSecond": "maxEcpuPerSecond",
    "KeyPrefix": "keyPrefix",
    "StateTtlSeconds": "stateTtlSeconds",
    "FailureThreshold": "failureThreshold",
    "RecoveryTimeoutSeconds": "recoveryTimeoutSeconds",
    "SafetyMarginMs": "safetyMarginMs",
    "ServiceName": "serviceName",
    "LogLevel": "logLevel",
    "LogRetentionDays": "logRetentionDays",
    "Architecture": "architecture",
    "ReservedConcurrency": "reservedConcurrency",
    "PowertoolsLayerVersion": "powertoolsLayerVersion",
    "ApiThrottleRateLimit": "apiThrottleRateLimit",
    "ApiThrottleBurstLimit": "apiThrottleBurstLimit",
    "AlarmTopicArn": "alarmTopicArn",
    "AlarmEmail": "alarmEmail",
}

_ARCHITECTURES = {"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}


@dataclass(frozen=True)
class StackOptions:
    """What template.yaml's parameters set, with the same defaults."""

    openai_model: str = "gpt-4o-mini"
    openai_base_url: str | None = None
    anthropic_model: str = "claude-3-5-haiku-latest"
    cache_name: str = "flexiai-breakers"
    valkey_major_version: str = "8"
    iam_auth: bool = True
    max_data_storage_gb: int = 1
    max_ecpu_per_second: int = 5000
    key_prefix: str = "flexiai"
    state_ttl_seconds: int = 300
    failure_threshold: int = 5
    recovery_timeout_seconds: int = 60
    safety_margin_ms: int = 1000
    service_name: str = "flexiai"
    log_level: str = "INFO"
    log_retention_days: int = 30
    architecture: str = "x86_64"
    reserved_concurrency: int | None = None
    powertools_layer_version: int = POWERTOOLS_LAYER_VERSION
    api_throttle_rate_limit: int = 10
    api_throttle_burst_limit: int = 20
    alarm_topic_arn: str | None = None
    alarm_email: str | None = None


class FlexiAIStack(Stack):
    """Breaker store, the two functions, the HTTP API and the alarm, with outputs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc_id: str,
        availability_zones: list[str],
        private_subnet_ids: list[str],
        openai_secret_arn: str,
        anthropic_secret_arn: str | None = None,
        bedrock_model_id: str | None = None,
        iam_auth: bool | None = None,
        flexiai_layer_path: str | Path = DEFAULT_LAYER_PATH,
        handlers_path: str | Path = REPO_ROOT / "handlers",
        alarm_topic_arn: str | None = None,
        options: StackOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        o = options or StackOptions()
        if iam_auth is None:
            iam_auth = o.iam_auth
        alarm_topic_arn = alarm_topic_arn or o.alarm_topic_arn
        vpc = ec2.Vpc.from_vpc_attributes(
            self,
            "Vpc",
            vpc_id=vpc_id,
            availability_zones=availability_zones,
            private_subnet_ids=private_subnet_ids,
        )
        providers = [
            ProviderSpec(
                name="openai",
                model=o.openai_model,
                # Always declared, as in template.yaml ("" is unset for the library), so a
                # local run can point the provider elsewhere.
                base_url=o.openai_base_url or "",
                api_key_secret=secretsmanager.Secret.from_secret_complete_arn(
                    self, "OpenAISecret", openai_secret_arn
                ),
            )
        ]
        if anthropic_secret_arn:
            providers.append(
                ProviderSpec(
                    name="anthropic",
                    model=o.anthropic_model,
                    api_key_secret=secretsmanager.Secret.from_secret_complete_arn(
                        self, "AnthropicSecret", anthropic_secret_arn
                    ),
                )
            )
        if bedrock_model_id:
            providers.append(ProviderSpec(name="bedrock", model=bedrock_model_id))

        store = BreakerStore(
            self,
            "BreakerStore",
            vpc=vpc,
            iam_auth=iam_auth,
            cache_name=o.cache_name,
            major_engine_version=o.valkey_major_version,
            max_data_storage_gb=o.max_data_storage_gb,
            max_ecpu_per_second=o.max_ecpu_per_second,
            key_prefix=o.key_prefix,
        )
        if o.architecture not in _ARCHITECTURES:
            raise ValueError(f"architecture must be x86_64 or arm64, not {o.architecture!r}")
        retention = _retention(o.log_retention_days)
        functions = FlexiAIFunctions(
            self,
            "Functions",
            vpc=vpc,
            store=store,
            providers=providers,
            handlers_path=handlers_path,
            flexiai_layer_path=flexiai_layer_path,
            service_name=o.service_name,
            log_level=o.log_level,
            failure_threshold=o.failure_threshold,
            recovery_timeout_seconds=o.recovery_timeout_seconds,
            state_ttl_seconds=o.state_ttl_seconds,
            safety_margin_ms=o.safety_margin_ms,
            log_retention=retention,
            architecture=_ARCHITECTURES[o.architecture],
            reserved_concurrency=o.reserved_concurrency,
            powertools_layer_version=o.powertools_layer_version,
            alarm_topic=(
                sns.Topic.from_topic_arn(self, "AlarmTopic", alarm_topic_arn)
                if alarm_topic_arn
                else None
            ),
            alarm_email=o.alarm_email,
        )
        api = FlexiAIHttpApi(
            self,
            "HttpApi",
            functions=functions,
            throttle_rate_limit=o.api_throttle_rate_limit,
            throttle_burst_limit=o.api_throttle_burst_limit,
            log_retention=retention,
        )

        CfnOutput(self, "ApiEndpoint", value=api.url)
        CfnOutput(self, "GenerateUrl", value=f"{api.url}generate")
        CfnOutput(self, "BreakersUrl", value=f"{api.url}breakers")
        CfnOutput(
            self, "FunctionsSecurityGroupId", value=functions.security_group.security_group_id
        )
        CfnOutput(self, "FlexiAILayerArn", value=functions.flexiai_layer.layer_version_arn)
        CfnOutput(self, "CacheEndpointAddress", value=store.endpoint_address)
        CfnOutput(self, "CacheEndpointPort", value=store.endpoint_port)
        CfnOutput(self, "CacheArn", value=store.cache_arn)
        if store.user_id is not None:
            CfnOutput(self, "CacheUserId", value=store.user_id)
        if store.status_user_id is not None:
            CfnOutput(self, "CacheStatusUserId", value=store.status_user_id)
        CfnOutput(self, "CircuitOpenedAlarmName", value=functions.alarm.alarm_name)
        CfnOutput(self, "CircuitOpenedAlarmArn", value=functions.alarm.alarm_arn)
        CfnOutput(self, "CircuitOpenedAlarmTopicArn", value=functions.alarm_topic.topic_arn)
        CfnOutput(self, "HttpApiAccessLogGroupName", value=api.access_log_group.log_group_name)


#: template.yaml's LogRetentionDays values (RetentionDays members carry names, not days).
_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def _retention(days: int) -> logs.RetentionDays:
    try:
        return _RETENTION[days]
    except KeyError:
        raise ValueError(f"logRetentionDays {days} is not one of {sorted(_RETENTION)}") from None


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _flag(value: Any) -> bool:
    return str(value).lower() != "false"


def _optional_int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


#: Context key -> (StackOptions field, conversion), for every option with a SAM parameter.
_OPTION_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "openaiModel": ("openai_model", str),
    "openaiBaseUrl": ("openai_base_url", str),
    "anthropicModel": ("anthropic_model", str),
    "cacheName": ("cache_name", str),
    "valkeyMajorVersion": ("valkey_major_version", str),
    "iamAuth": ("iam_auth", _flag),
    "maxDataStorageGb": ("max_data_storage_gb", int),
    "maxEcpuPerSecond": ("max_ecpu_per_second", int),
    "keyPrefix": ("key_prefix", str),
    "stateTtlSeconds": ("state_ttl_seconds", int),
    "failureThreshold": ("failure_threshold", int),
    "recoveryTimeoutSeconds": ("recovery_timeout_seconds", int),
    "safetyMarginMs": ("safety_margin_ms", int),
    "serviceName": ("service_name", str),
    "logLevel": ("log_level", str),
    "logRetentionDays": ("log_retention_days", int),
    "architecture": ("architecture", str),
    "reservedConcurrency": ("reserved_concurrency", _optional_int),
    "powertoolsLayerVersion": ("powertools_layer_version", int),
    "apiThrottleRateLimit": ("api_throttle_rate_limit", int),
    "apiThrottleBurstLimit": ("api_throttle_burst_limit", int),
    "alarmTopicArn": ("alarm_topic_arn", str),
    "alarmEmail": ("alarm_email", str),
}


def stack_from_context(app: App, context: Mapping[str, Any] | None = None) -> FlexiAIStack:
    """Build the stack from ``-c key=value`` context (or an explicit mapping, in tests)."""

    def get(key: str) -> Any:
        return context.get(key) if context is not None else app.node.try_get_context(key)

    missing = [key for key in REQUIRED_CONTEXT if not get(key)]
    if missing:
        raise SystemExit(
            "flexiai example app: missing context " + ", ".join(missing) + " (pass -c key=value;"
            " see the docstring of infra/app.py)"
        )
    settings: dict[str, Any] = {}
    for key, (name, convert) in _OPTION_KEYS.items():
        value = get(key)
        if value is not None and value != "":
            settings[name] = convert(value)
    return FlexiAIStack(
        app,
        get("stackName") or "FlexiAI",
        vpc_id=get("vpcId"),
        availability_zones=_split(get("availabilityZones")),
        private_subnet_ids=_split(get("privateSubnetIds")),
        openai_secret_arn=get("openaiSecretArn"),
        anthropic_secret_arn=get("anthropicSecretArn"),
        bedrock_model_id=get("bedrockModelId"),
        flexiai_layer_path=get("flexiaiLayerPath") or DEFAULT_LAYER_PATH,
        handlers_path=get("handlersPath") or REPO_ROOT / "handlers",
        options=StackOptions(**settings),
    )


def main() -> None:
    app = App()
    stack_from_context(app)
    app.synth()


if __name__ == "__main__":
    main()
