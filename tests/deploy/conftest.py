"""One CDK synthesis for the whole session (8-20 s), shared by every test under tests/deploy.

``synthesized`` is an app with three stacks from ``infra/app.py``: ``iam`` (IAM auth, three
providers, every option at its default), ``no_iam`` (no IAM auth, OpenAI only) and
``options`` (every option that template.yaml has as a parameter set to a non-default value,
see ``NON_DEFAULT_CONTEXT``). Each value is ``(stack, aws_cdk.assertions.Template)``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
OPENAI_ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:openai-AbCdEf"
ANTHROPIC_ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:anthropic-GhIjKl"
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ALARM_TOPIC_ARN = "arn:aws:sns:us-east-1:111122223333:ops-alarms"
NETWORK = {
    "vpcId": "vpc-0123456789abcdef0",
    "availabilityZones": "us-east-1a,us-east-1b",
    "privateSubnetIds": "subnet-0aaaaaaaaaaaaaaaa,subnet-0bbbbbbbbbbbbbbbb",
}
#: A value other than template.yaml's default for every option the drift test follows.
NON_DEFAULT_CONTEXT = {
    "openaiModel": "gpt-4.1-mini",
    "openaiBaseUrl": "https://llm.example.com/v1",
    "anthropicModel": "claude-sonnet-4-0",
    "cacheName": "fleet-breakers",
    "valkeyMajorVersion": "7",
    "maxDataStorageGb": "2",
    "maxEcpuPerSecond": "7000",
    "keyPrefix": "fleet",
    "stateTtlSeconds": "600",
    "failureThreshold": "7",
    "recoveryTimeoutSeconds": "90",
    "safetyMarginMs": "1500",
    "serviceName": "fleet-ai",
    "logLevel": "DEBUG",
    "logRetentionDays": "365",
    "architecture": "arm64",
    "reservedConcurrency": "25",
    "powertoolsLayerVersion": "20",
    "apiThrottleRateLimit": "50",
    "apiThrottleBurstLimit": "100",
    "alarmTopicArn": ALARM_TOPIC_ARN,
    "alarmEmail": "ops@example.com",
}


def load_app_module() -> ModuleType:
    if str(INFRA) not in sys.path:
        sys.path.insert(0, str(INFRA))
    spec = importlib.util.spec_from_file_location("flexiai_example_app", INFRA / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _fake_layer(path: Path, arch: str) -> Path:
    (path / "python" / "flexiai").mkdir(parents=True)
    (path / "python" / "flexiai" / "__init__.py").write_text("")
    (path / "python" / "hiredis").mkdir()
    (path / "python" / "hiredis" / f"hiredis.cpython-312-{arch}-linux-gnu.so").write_bytes(b"")
    return path


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """{"app": module, "iam"/"no_iam"/"options": (stack, Template)} from one synthesis."""
    if shutil.which("node") is None:
        pytest.skip("aws-cdk-lib needs node (jsii)")
    pytest.importorskip("aws_cdk", reason="aws-cdk-lib is not installed (the 'cdk' extra)")
    from aws_cdk import App
    from aws_cdk.assertions import Template

    work = tmp_path_factory.mktemp("cdk")
    handlers = work / "handlers"
    handlers.mkdir()
    for module in ("generate", "breaker_status"):
        (handlers / f"{module}.py").write_text("def handler(event, context):\n    return {}\n")

    app_module = load_app_module()
    app = App(outdir=str(work / "cdk.out"))
    common = {
        **NETWORK,
        "flexiaiLayerPath": str(_fake_layer(work / "layer", "x86_64")),
        "handlersPath": str(handlers),
    }
    iam_stack = app_module.stack_from_context(
        app,
        {
            **common,
            "stackName": "FlexiAIIam",
            "openaiSecretArn": OPENAI_ARN,
            "anthropicSecretArn": ANTHROPIC_ARN,
            "bedrockModelId": BEDROCK_MODEL,
        },
    )
    plain_stack = app_module.stack_from_context(
        app,
        {**common, "stackName": "FlexiAIPlain", "openaiSecretArn": OPENAI_ARN, "iamAuth": "false"},
    )
    options_stack = app_module.stack_from_context(
        app,
        {
            **common,
            **NON_DEFAULT_CONTEXT,
            "flexiaiLayerPath": str(_fake_layer(work / "layer-arm64", "aarch64")),
            "stackName": "FlexiAIOptions",
            "openaiSecretArn": OPENAI_ARN,
            "anthropicSecretArn": ANTHROPIC_ARN,
            "bedrockModelId": BEDROCK_MODEL,
        },
    )
    assembly = app.synth()
    return {
        "app": app_module,
        "assembly_dir": Path(assembly.directory),
        "iam": (iam_stack, Template.from_stack(iam_stack)),
        "no_iam": (plain_stack, Template.from_stack(plain_stack)),
        "options": (options_stack, Template.from_stack(options_stack)),
    }
