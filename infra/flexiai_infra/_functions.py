"""``FlexiAIFunctions`` (the two Lambda functions) and ``FlexiAIHttpApi`` (their HTTP front)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from ._scanners import l1, suppress
from ._store import BreakerStore

__all__ = [
    "ACCESS_LOG_FIELDS",
    "ACCESS_LOG_FORMAT",
    "METRICS_NAMESPACE",
    "POWERTOOLS_LAYER_ACCOUNT",
    "POWERTOOLS_LAYER_VERSION",
    "FlexiAIFunctions",
    "FlexiAIHttpApi",
    "ProviderSpec",
    "powertools_layer_arn",
]

#: The account that publishes Powertools for AWS Lambda (Python)'s public layers in the
#: commercial regions (China and GovCloud have their own: pass ``powertools_layer``).
POWERTOOLS_LAYER_ACCOUNT = "017000801446"
#: The public layer's version number (not the package's), template.yaml's
#: PowertoolsLayerVersion default. A literal ARN, unlike an SSM reference, is what
#: ``sam local invoke`` can download.
POWERTOOLS_LAYER_VERSION = 27
METRICS_NAMESPACE = "FlexiAI"
#: HTTP API integrations time out at 30 s; the function must give up first.
HTTP_API_TIMEOUT_SECONDS = 29

_DEFAULT_HANDLERS = Path(__file__).resolve().parents[2] / "handlers"
#: The suffix CPython gives extension modules per Lambda architecture (the layer's hiredis).
_EXTENSION_ARCH = {"x86_64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}

#: The HTTP API's access log: one JSON line per request, with the SigV4 caller (who spent the
#: provider budget). template.yaml's AccessLogSettings.Format is the same (tests/deploy).
ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTime",
    "routeKey": "$context.routeKey",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "integrationLatency": "$context.integrationLatency",
    "integrationStatus": "$context.integrationStatus",
    "integrationError": "$context.integrationErrorMessage",
    "authorizerError": "$context.authorizer.error",
    "error": "$context.error.message",
    "sourceIp": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "accountId": "$context.identity.accountId",
    "caller": "$context.identity.caller",
    "user": "$context.identity.user",
    "userArn": "$context.identity.userArn",
    "principalOrgId": "$context.identity.principalOrgId",
}
ACCESS_LOG_FORMAT = json.dumps(ACCESS_LOG_FIELDS, separators=(",", ":"))


def powertools_layer_arn(
    architecture: lambda_.Architecture = lambda_.Architecture.X86_64,
    version: int = POWERTOOLS_LAYER_VERSION,
    *,
    region: str = Aws.REGION,
    partition: str = Aws.PARTITION,
) -> str:
    """The public Powertools (Python 3.12) layer for ``architecture``, layer version
    ``version``, in the stack's region (template.yaml builds the same ARN)."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"powertools_layer_version {version!r} must be an integer >= 1")
    return (
        f"arn:{partition}:lambda:{region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-python312-{architecture.name}:{version}"
    )


@dataclass(frozen=True)
class ProviderSpec:
    """One provider, in failover order.

    ``name`` also selects the API (``openai``, ``anthropic``, ``gemini``, ``bedrock``, or a
    name such as ``openai-backup``). ``api_key_secret`` is a Secrets Manager secret whose JSON
    holds ``api_key_field``; the function receives a reference and reads the key at run time.
    Bedrock needs no key: the function is granted ``bedrock:InvokeModel`` on ``model``.
    """

    name: str
    model: str
    api_key_secret: secretsmanager.ISecret | None = None
    api_key_field: str = "api_key"
    #: FLEXIAI_PROVIDER_<N>_BASE_URL when not None; "" (template.yaml's default) is unset
    #: for the library, and keeps the variable declared for ``sam local invoke --env-vars``.
    base_url: str | None = None

    @property
    def is_bedrock(self) -> bool:
        return self.name == "bedrock" or self.name.startswith("bedrock-")


class FlexiAIFunctions(Construct):
    """``generate`` and ``breaker_status`` as VPC Lambda functions wired to a ``BreakerStore``.

    Code comes from ``handlers_path`` (``generate.handler``, ``breaker_status.handler``). The
    library reaches them as a layer: pass ``flexiai_layer`` (an existing layer version) or
    ``flexiai_layer_path``, a directory holding ``python/`` as built by
    ``make -C layer build-FlexiAILayer`` (``build-FlexiAILayerArm64`` for ``arm64``; CDK does
    not build it: that would need Docker). Powertools is AWS's public layer for
    ``architecture`` in the stack's region, layer version ``powertools_layer_version``
    (or pass ``powertools_layer``).

    Only ``generate`` may read the provider secrets (and call Bedrock). ``generate`` connects
    to the store as its app user, ``breaker_status`` as its read-only status user.
    ``reserved_concurrency`` (None: unreserved) applies to each function. ``alarm`` fires when
    any breaker opens: it watches ``CircuitOpened`` with the single dimension ``service``,
    which the library emits besides the per-provider series, and notifies ``alarm_topic``
    (by default a new topic, ``self.alarm_topic``), to which ``alarm_email`` is subscribed.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        store: BreakerStore,
        providers: Sequence[ProviderSpec],
        vpc_subnets: ec2.SubnetSelection | None = None,
        handlers_path: str | Path = _DEFAULT_HANDLERS,
        flexiai_layer: lambda_.ILayerVersion | None = None,
        flexiai_layer_path: str | Path | None = None,
        powertools_layer: lambda_.ILayerVersion | None = None,
        service_name: str = "flexiai",
        log_level: str = "INFO",
        failure_threshold: int = 5,
        recovery_timeout_seconds: int = 60,
        state_ttl_seconds: int = 300,
        safety_margin_ms: int = 1000,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        architecture: lambda_.Architecture = lambda_.Architecture.X86_64,
        reserved_concurrency: int | None = None,
        powertools_layer_version: int = POWERTOOLS_LAYER_VERSION,
        alarm_topic: sns.ITopic | None = None,
        alarm_email: str | None = None,
        alarm_actions: Sequence[cloudwatch.IAlarmAction] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        if not providers:
            raise ValueError("at least one provider is required")
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique: {names}")
        if architecture.name not in _EXTENSION_ARCH:
            raise ValueError(f"architecture must be x86_64 or arm64, not {architecture.name}")
        if reserved_concurrency is not None and reserved_concurrency < 0:
            raise ValueError("reserved_concurrency must be 0 or more (None: unreserved)")
        self.architecture = architecture

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="flexiai functions (HTTPS out; Valkey to the breaker store only)",
            allow_all_outbound=False,
        )
        self.security_group.add_egress_rule(
            ec2.Peer.any_ipv4(),
            ec2.Port.tcp(443),
            "HTTPS to LLM providers and AWS APIs (via NAT or VPC endpoints)",
        )
        store.allow_from(self.security_group)

        self.flexiai_layer = flexiai_layer or self._layer_from_path(
            flexiai_layer_path, architecture
        )
        self.powertools_layer = powertools_layer or lambda_.LayerVersion.from_layer_version_arn(
            self,
            "PowertoolsLayer",
            powertools_layer_arn(architecture, powertools_layer_version),
        )

        common = {
            "POWERTOOLS_SERVICE_NAME": service_name,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": log_level,
            "FLEXIAI_SYNC_MODE": "snapshot",
            "FLEXIAI_SYNC_STATE_TTL": str(state_ttl_seconds),
            "FLEXIAI_SYNC_SNAPSHOT_MAX_AGE": "1",
            "FLEXIAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD": str(failure_threshold),
            "FLEXIAI_CIRCUIT_BREAKER_RECOVERY_TIMEOUT": str(recovery_timeout_seconds),
            "FLEXIAI_LAMBDA_SAFETY_MARGIN_MS": str(safety_margin_ms),
            **_provider_environment(providers),
        }
        code = lambda_.Code.from_asset(str(handlers_path), exclude=["__pycache__", "*.pyc"])

        self.generate = self._function(
            "Generate",
            handler="generate.handler",
            description="POST /generate - answer with the first healthy provider",
            timeout=HTTP_API_TIMEOUT_SECONDS,
            memory_size=512,
            environment={**common, **store.environment()},
            code=code,
            vpc=vpc,
            vpc_subnets=vpc_subnets,
            log_retention=log_retention,
            reserved_concurrency=reserved_concurrency,
        )
        self.breaker_status = self._function(
            "BreakerStatus",
            handler="breaker_status.handler",
            description="GET /breakers - fleet-wide breaker state per provider",
            timeout=10,
            memory_size=256,
            # The read-only cache user: this function never changes a breaker.
            environment={**common, **store.environment(read_only=True)},
            code=code,
            vpc=vpc,
            vpc_subnets=vpc_subnets,
            log_retention=log_retention,
            reserved_concurrency=reserved_concurrency,
        )

        store.grant_connect(self.generate)
        store.grant_connect(self.breaker_status, read_only=True)
        for provider in providers:
            if provider.api_key_secret is not None:
                provider.api_key_secret.grant_read(self.generate)
            if provider.is_bedrock:
                self.generate.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=["bedrock:InvokeModel"],
                        resources=[
                            Stack.of(self).format_arn(
                                service="bedrock",
                                account="",
                                resource="foundation-model",
                                resource_name=provider.model,
                            )
                        ],
                    )
                )

        self.circuit_opened_metric = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name="CircuitOpened",
            dimensions_map={"service": service_name},
            statistic="Sum",
            period=Duration.minutes(5),
        )
        self.alarm = cloudwatch.Alarm(
            self,
            "CircuitOpenedAlarm",
            alarm_description="A flexiai circuit breaker opened (a provider is failing fleet-wide)",
            metric=self.circuit_opened_metric,
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        if alarm_topic is None:
            alarm_topic = sns.Topic(
                self, "AlarmTopic", display_name="flexiai circuit breaker alarms"
            )
            suppress(l1(alarm_topic), "topic")
        self.alarm_topic = alarm_topic
        self.alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.alarm_topic))
        if alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        for action in alarm_actions:
            self.alarm.add_alarm_action(action)

    def _layer_from_path(
        self, path: str | Path | None, architecture: lambda_.Architecture
    ) -> lambda_.ILayerVersion:
        target = "build-FlexiAILayerArm64" if architecture.name == "arm64" else "build-FlexiAILayer"
        if path is None:
            raise ValueError(
                "pass flexiai_layer, or flexiai_layer_path: a directory holding python/, built "
                f"with `make -C layer {target} ARTIFACTS_DIR=<dir>`"
            )
        python = Path(path) / "python"
        if not python.is_dir():
            raise ValueError(
                f"{path} has no python/ directory: build it with "
                f"`make -C layer {target} ARTIFACTS_DIR={path}`"
            )
        foreign = [
            so.relative_to(python)
            for arch, suffix in _EXTENSION_ARCH.items()
            if arch != architecture.name
            for so in python.rglob(f"*{suffix}.so")
        ]
        if foreign:
            raise ValueError(
                f"{path} holds extension modules for another architecture than "
                f"{architecture.name} ({foreign[0]}): rebuild it with "
                f"`make -C layer {target} ARTIFACTS_DIR={path}`"
            )
        return lambda_.LayerVersion(
            self,
            "FlexiAILayer",
            code=lambda_.Code.from_asset(str(path)),
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
            compatible_architectures=[architecture],
            description="flexiai with its redis extra (Powertools and pydantic come from "
            "the Powertools layer)",
            removal_policy=RemovalPolicy.DESTROY,
        )

    def _function(
        self,
        construct_id: str,
        *,
        handler: str,
        description: str,
        timeout: int,
        memory_size: int,
        code: lambda_.Code,
        environment: dict[str, str],
        vpc: ec2.IVpc,
        vpc_subnets: ec2.SubnetSelection | None,
        log_retention: logs.RetentionDays,
        reserved_concurrency: int | None,
    ) -> lambda_.Function:
        log_group = logs.LogGroup(
            self,
            f"{construct_id}Logs",
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        suppress(l1(log_group), "log_group")
        function = lambda_.Function(
            self,
            construct_id,
            description=description,
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=self.architecture,
            handler=handler,
            code=code,
            timeout=Duration.seconds(timeout),
            memory_size=memory_size,
            tracing=lambda_.Tracing.ACTIVE,
            # Powertools first, flexiai last: a later layer wins where both ship a file.
            layers=[self.powertools_layer, self.flexiai_layer],
            environment=environment,
            vpc=vpc,
            vpc_subnets=vpc_subnets,
            security_groups=[self.security_group],
            log_group=log_group,
            reserved_concurrent_executions=reserved_concurrency,
        )
        suppress(l1(function), "function")
        return function


class FlexiAIHttpApi(Construct):
    """An HTTP API: ``POST /generate`` and ``GET /breakers``, every route IAM-authorized.

    An anonymous ``/generate`` would spend the provider budget of whoever finds the URL, so
    callers sign with SigV4 (service ``execute-api``); grant them with :meth:`grant_invoke`.
    The stage writes an access log (``access_log_group``, kept ``log_retention``): one JSON
    line per request with the caller's principal (``ACCESS_LOG_FIELDS``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: FlexiAIFunctions,
        throttle_rate_limit: int = 10,
        throttle_burst_limit: int = 20,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
    ) -> None:
        super().__init__(scope, construct_id)
        self.access_log_group = logs.LogGroup(
            self,
            "AccessLogs",
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        suppress(l1(self.access_log_group), "log_group")
        authorizer = authorizers.HttpIamAuthorizer()
        self.api = apigwv2.HttpApi(
            self,
            "Api",
            description="flexiai",
            create_default_stage=False,
            default_authorizer=authorizer,
        )
        self.stage = self.api.add_stage(
            "DefaultStage",
            stage_name="$default",
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(
                rate_limit=throttle_rate_limit, burst_limit=throttle_burst_limit
            ),
        )
        # The L2 stage takes access logs only through an interface (IAccessLogSettings);
        # the L1 property says the same thing plainly.
        cfn_stage = self.stage.node.default_child
        assert isinstance(cfn_stage, apigwv2.CfnStage)
        cfn_stage.access_log_settings = apigwv2.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_log_group.log_group_arn, format=ACCESS_LOG_FORMAT
        )
        self.api.add_routes(
            path="/generate",
            methods=[apigwv2.HttpMethod.POST],
            integration=integrations.HttpLambdaIntegration("Generate", functions.generate),
        )
        self.api.add_routes(
            path="/breakers",
            methods=[apigwv2.HttpMethod.GET],
            integration=integrations.HttpLambdaIntegration(
                "BreakerStatus", functions.breaker_status
            ),
        )
        # The integrations' invoke permissions (one per route).
        for child in self.node.find_all():
            if isinstance(child, lambda_.CfnPermission):
                suppress(child, "permission")
        self.url: str = self.stage.url

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` call every route (``execute-api:Invoke``)."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["execute-api:Invoke"],
            resource_arns=[self.api.arn_for_execute_api()],
        )


def _provider_environment(providers: Sequence[ProviderSpec]) -> dict[str, str]:
    env: dict[str, str] = {}
    for index, provider in enumerate(providers, start=1):
        prefix = f"FLEXIAI_PROVIDER_{index}_"
        env[prefix + "NAME"] = provider.name
        env[prefix + "MODEL"] = provider.model
        env[prefix + "PRIORITY"] = str(index)
        if provider.base_url is not None:
            env[prefix + "BASE_URL"] = provider.base_url
        if provider.api_key_secret is not None:
            env[prefix + "API_KEY"] = (
                f"secretsmanager:{provider.api_key_secret.secret_arn}#{provider.api_key_field}"
            )
    return env
