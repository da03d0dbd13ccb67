"""Example CDK app: flexiai on Lambda in an existing VPC, offline-synthesizable.

    make -C ../layer build-FlexiAILayer          # builds ../layer/build/flexiai-layer
    cdk deploy \\
      -c vpcId=vpc-0123 -c availabilityZones=eu-west-1a,eu-west-1b \\
      -c privateSubnetIds=subnet-aaa,subnet-bbb \\
      -c openaiSecretArn=arn:aws:secretsmanager:eu-west-1:111122223333:secret:openai-AbCdEf \\
      [-c anthropicSecretArn=...] [-c bedrockModelId=...] [-c iamAuth=false] \\
      [-c flexiaiLayerPath=...] [-c handlersPath=...] [-c alarmTopicArn=...] [-c stackName=...]

The stack is environment-agnostic and imports the VPC from attributes: nothing is looked up,
so `cdk synth` needs no AWS credentials. See docs/deploy.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, CfnOutput, Stack
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from constructs import Construct
from flexiai_infra import BreakerStore, FlexiAIFunctions, FlexiAIHttpApi, ProviderSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LAYER_PATH = REPO_ROOT / "layer" / "build" / "flexiai-layer"
REQUIRED_CONTEXT = ("vpcId", "availabilityZones", "privateSubnetIds", "openaiSecretArn")


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
        iam_auth: bool = True,
        flexiai_layer_path: str | Path = DEFAULT_LAYER_PATH,
        handlers_path: str | Path = REPO_ROOT / "handlers",
        alarm_topic_arn: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
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
                model="gpt-4o-mini",
                api_key_secret=secretsmanager.Secret.from_secret_complete_arn(
                    self, "OpenAISecret", openai_secret_arn
                ),
            )
        ]
        if anthropic_secret_arn:
            providers.append(
                ProviderSpec(
                    name="anthropic",
                    model="claude-3-5-haiku-latest",
                    api_key_secret=secretsmanager.Secret.from_secret_complete_arn(
                        self, "AnthropicSecret", anthropic_secret_arn
                    ),
                )
            )
        if bedrock_model_id:
            providers.append(ProviderSpec(name="bedrock", model=bedrock_model_id))

        store = BreakerStore(self, "BreakerStore", vpc=vpc, iam_auth=iam_auth)
        alarm_actions = []
        if alarm_topic_arn:
            topic = sns.Topic.from_topic_arn(self, "AlarmTopic", alarm_topic_arn)
            alarm_actions.append(cloudwatch_actions.SnsAction(topic))
        functions = FlexiAIFunctions(
            self,
            "Functions",
            vpc=vpc,
            store=store,
            providers=providers,
            handlers_path=handlers_path,
            flexiai_layer_path=flexiai_layer_path,
            alarm_actions=alarm_actions,
        )
        api = FlexiAIHttpApi(self, "HttpApi", functions=functions)

        CfnOutput(self, "ApiEndpoint", value=api.url)
        CfnOutput(self, "CacheEndpointAddress", value=store.endpoint_address)
        CfnOutput(self, "CacheEndpointPort", value=store.endpoint_port)
        CfnOutput(self, "CacheArn", value=store.cache_arn)
        if store.user_id is not None:
            CfnOutput(self, "CacheUserId", value=store.user_id)
        CfnOutput(self, "CircuitOpenedAlarmName", value=functions.alarm.alarm_name)
        CfnOutput(self, "CircuitOpenedAlarmArn", value=functions.alarm.alarm_arn)


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


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
    return FlexiAIStack(
        app,
        get("stackName") or "FlexiAI",
        vpc_id=get("vpcId"),
        availability_zones=_split(get("availabilityZones")),
        private_subnet_ids=_split(get("privateSubnetIds")),
        openai_secret_arn=get("openaiSecretArn"),
        anthropic_secret_arn=get("anthropicSecretArn"),
        bedrock_model_id=get("bedrockModelId"),
        iam_auth=str(get("iamAuth") or "true").lower() != "false",
        flexiai_layer_path=get("flexiaiLayerPath") or DEFAULT_LAYER_PATH,
        handlers_path=get("handlersPath") or REPO_ROOT / "handlers",
        alarm_topic_arn=get("alarmTopicArn"),
    )


def main() -> None:
    app = App()
    stack_from_context(app)
    app.synth()


if __name__ == "__main__":
    main()
