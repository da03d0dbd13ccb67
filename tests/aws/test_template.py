"""Reading functions out of SAM templates, offline, and the local Lambda context."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexiai.aws.context import LocalLambdaContext
from flexiai_dev.cloudformation import (
    TemplateError,
    invocation_environment,
    load_template,
    read_env_vars_file,
    read_function,
)

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Model:
    Type: String
    Default: gpt-4o-mini
  SecretArn:
    Type: String
  Stage:
    Type: String
    Default: dev
    AllowedValues: [dev, prod]
  Subnets:
    Type: CommaDelimitedList
    Default: "a, b"
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  IsDev: !Not [!Condition IsProd]
  HasSecret: !Not [!Equals [!Ref SecretArn, ""]]
Mappings:
  Sizes:
    dev: {Memory: 256}
    prod: {Memory: 1024}
Globals:
  Function:
    Runtime: python3.12
    Timeout: 20
    MemorySize: !FindInMap [Sizes, !Ref Stage, Memory]
    Environment:
      Variables:
        SHARED: from-globals
        OVERRIDDEN: from-globals
        REGION_NAME: !Sub "${AWS::Region}-${Stage}"
Resources:
  Cache:
    Type: AWS::ElastiCache::ServerlessCache
    Properties: {ServerlessCacheName: c}
  Api:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code/
      Handler: app.handler
      Timeout: 7
      Environment:
        Variables:
          OVERRIDDEN: from-function
          MODEL: !Ref Model
          HOST: !GetAtt Cache.Endpoint.Address
          KEY: !Sub "secretsmanager:${SecretArn}#api_key"
          JOINED: !Join [",", [!Ref Stage, !Select [1, !Ref Subnets], literal]]
          SPLIT_FIRST: !Select [0, !Split ["/", "x/y/z"]]
          ESCAPED: !Sub "${!NotAVariable}-${Model}"
          DEV_ONLY: !If [IsDev, "yes", !Ref AWS::NoValue]
          PROD_ONLY: !If [IsProd, "yes", !Ref AWS::NoValue]
          FLAG: true
          NUMBER: 3
          DYNAMIC: "{{resolve:ssm:/some/param}}"
          CACHE_NAME: !Ref Cache
  Other:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code/
      Handler: app.other
"""


@pytest.fixture
def template(tmp_path: Path) -> Path:
    (tmp_path / "code").mkdir()
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    return path


def test_cloudformation_tags_are_read_in_their_long_form(template: Path) -> None:
    document = load_template(template)
    variables = document["Resources"]["Api"]["Properties"]["Environment"]["Variables"]
    assert variables["MODEL"] == {"Ref": "Model"}
    assert variables["HOST"] == {"Fn::GetAtt": ["Cache", "Endpoint.Address"]}
    assert variables["JOINED"]["Fn::Join"][1][1] == {"Fn::Select": [1, {"Ref": "Subnets"}]}
    assert document["Conditions"]["IsDev"] == {"Fn::Not": [{"Condition": "IsProd"}]}


def test_the_function_settings_merge_globals_and_resolve_what_can_be(template: Path) -> None:
    spec = read_function(template, "Api")
    assert spec.handler == "app.handler"
    assert spec.code_uri == template.parent / "code"
    assert spec.runtime == "python3.12"
    assert spec.timeout == 7  # the function's own
    assert spec.memory_size == 256  # from Globals, through a mapping
    assert spec.function_name == "Api"
    assert spec.environment == {
        "SHARED": "from-globals",
        "OVERRIDDEN": "from-function",
        "REGION_NAME": "us-east-1-dev",
        "MODEL": "gpt-4o-mini",
        "JOINED": "dev,b,literal",
        "SPLIT_FIRST": "x",
        "ESCAPED": "${NotAVariable}-gpt-4o-mini",
        "DEV_ONLY": "yes",
        "FLAG": "true",
        "NUMBER": "3",
    }
    assert set(spec.unresolved) == {"HOST", "KEY", "DYNAMIC", "CACHE_NAME"}
    assert "!GetAtt Cache.Endpoint.Address" in spec.unresolved["HOST"]
    assert "SecretArn (no Default" in spec.unresolved["KEY"]
    assert spec.removed == ("PROD_ONLY",)


def test_parameter_overrides_change_values_and_conditions(template: Path) -> None:
    spec = read_function(
        template,
        "Api",
        parameter_overrides={"Stage": "prod", "SecretArn": "arn:aws:secretsmanager:x"},
    )
    assert spec.memory_size == 1024
    assert spec.environment["KEY"] == "secretsmanager:arn:aws:secretsmanager:x#api_key"
    assert spec.environment["PROD_ONLY"] == "yes"
    assert "DEV_ONLY" not in spec.environment
    assert spec.timeout == 7


def test_globals_fill_in_what_a_function_does_not_set(template: Path) -> None:
    spec = read_function(template, "Other")
    assert (spec.timeout, spec.memory_size, spec.handler) == (20, 256, "app.other")
    assert spec.environment["OVERRIDDEN"] == "from-globals"


@pytest.mark.parametrize(
    ("logical_id", "message"),
    [
        ("Missing", "no function 'Missing' in the template (functions: Api, Other)"),
        ("Cache", "no function 'Cache'"),
    ],
)
def test_an_unknown_function_lists_the_known_ones(
    template: Path, logical_id: str, message: str
) -> None:
    with pytest.raises(TemplateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_function(template, logical_id)


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (
            (
                "CodeUri: code/\n      Handler: app.handler",
                "CodeUri: s3://b/k.zip\n      Handler: app.handler",
            ),
            "not a local directory",
        ),
        (
            (
                "CodeUri: code/\n      Handler: app.handler",
                "CodeUri: nowhere/\n      Handler: app.handler",
            ),
            "is not a directory",
        ),
        (("Runtime: python3.12", "Runtime: nodejs20.x"), "runs nodejs20.x"),
        (("Handler: app.handler", "Handler: handler"), "must look like module.function"),
    ],
)
def test_functions_this_tool_cannot_run_are_rejected(
    template: Path, replace: tuple[str, str], message: str
) -> None:
    template.write_text(TEMPLATE.replace(*replace))
    with pytest.raises(TemplateError, match=message):
        read_function(template, "Api")


def test_a_file_without_resources_is_not_a_template(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("Parameters: {}\n")
    with pytest.raises(TemplateError, match="no Resources section"):
        load_template(path)


def test_environment_priority_follows_sam(template: Path, tmp_path: Path) -> None:
    spec = read_function(template, "Api")
    env_file = tmp_path / "env.json"
    env_file.write_text(
        '{"Parameters": {"SHARED": "from-parameters", "MODEL": "from-parameters"},'
        ' "Api": {"MODEL": "from-function-section", "HOST": "cache.local", "EXTRA": 1},'
        ' "Other": {"SHARED": "not-for-api"}}'
    )
    shell = {"OVERRIDDEN": "from-shell", "UNDECLARED": "from-shell", "SHARED": "from-shell"}
    environment, notes = invocation_environment(spec, read_env_vars_file(env_file), shell)
    assert environment["MODEL"] == "from-function-section"  # function section > Parameters
    assert environment["SHARED"] == "from-parameters"  # Parameters > shell
    assert environment["OVERRIDDEN"] == "from-shell"  # shell > template, for declared names
    assert "UNDECLARED" not in environment
    assert environment["HOST"] == "cache.local"  # an unresolvable value supplied by the file
    assert "EXTRA" not in environment  # not declared for Api: ignored, as sam does
    assert "KEY" not in environment
    assert notes == [
        "EXTRA is not declared in the template for Api: ignored, as sam local invoke does "
        "(declare it under Environment.Variables)",
        "CACHE_NAME dropped: !Ref Cache (a resource, known only once deployed); set it in "
        "--env-vars",
        "DYNAMIC dropped: dynamic reference '{{resolve:ssm:/some/param}}'; set it in --env-vars",
        "KEY dropped: parameter SecretArn (no Default; pass --parameter-overrides); set it in "
        "--env-vars",
    ]


def test_an_env_vars_file_must_use_sams_format(tmp_path: Path) -> None:
    path = tmp_path / "env.json"
    path.write_text('{"FLEXIAI_PROVIDER_1_NAME": "openai"}')
    with pytest.raises(TemplateError, match="Parameters' or a function's logical id"):
        read_env_vars_file(path)


def test_the_repository_template_describes_both_handlers() -> None:
    path = Path(__file__).resolve().parents[2] / "template.yaml"
    if not path.is_file():
        pytest.skip("template.yaml is not in the repository yet")
    generate = read_function(path, "GenerateFunction")
    assert generate.handler == "generate.handler"
    assert generate.code_uri == path.parent / "handlers"
    assert (generate.code_uri / "generate.py").is_file()
    assert generate.environment["FLEXIAI_SYNC_MODE"] == "snapshot"
    status = read_function(path, "BreakerStatusFunction")
    assert (status.code_uri / "breaker_status.py").is_file()
    assert status.handler == "breaker_status.handler"


def test_the_variables_sam_local_invoke_passes_for_the_repository_template_load() -> None:
    """sam local invoke passes "" for AWS::NoValue and unresolvable values (it never drops a
    declared variable): the optional providers' empty variables must read as unset."""
    from flexiai.config import load_config

    path = Path(__file__).resolve().parents[2] / "template.yaml"
    if not path.is_file():
        pytest.skip("template.yaml is not in the repository yet")
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:openai-AbCdEf"
    spec = read_function(path, "GenerateFunction", parameter_overrides={"OpenAISecretArn": arn})
    as_sam_passes_them = {
        **spec.environment,
        **dict.fromkeys([*spec.unresolved, *spec.removed], ""),
    }
    assert as_sam_passes_them["FLEXIAI_PROVIDER_2_NAME"] == ""
    env_json = {  # what a user's env.json supplies for the stack's outputs
        "FLEXIAI_SYNC_REDIS_HOST": "cache.local",
        "FLEXIAI_SYNC_REDIS_PORT": "6379",
        "FLEXIAI_SYNC_REDIS_USERNAME": "flexiai-app",
        "FLEXIAI_SYNC_REDIS_IAM_CACHE_NAME": "flexiai-breakers",
    }
    config = load_config({**as_sam_passes_them, **env_json})
    assert [p.name for p in config.providers] == ["openai"]
    assert config.providers[0].api_key is not None
    assert config.providers[0].api_key.get_secret_value() == f"secretsmanager:{arn}#api_key"


# -- the context ---------------------------------------------------------------------------


def test_the_context_counts_down_from_the_timeout_and_stops_at_zero() -> None:
    now = [100.0]
    context = LocalLambdaContext("fn", timeout=3, clock=lambda: now[0])
    assert context.get_remaining_time_in_millis() == 3000
    now[0] += 1.25
    assert context.get_remaining_time_in_millis() == 1750
    now[0] += 5
    assert context.get_remaining_time_in_millis() == 0


def test_the_context_has_what_powertools_reads() -> None:
    context = LocalLambdaContext("fn", memory_limit_in_mb=512, region="eu-west-1")
    assert context.invoked_function_arn == "arn:aws:lambda:eu-west-1:123456789012:function:fn"
    assert context.memory_limit_in_mb == 512
    assert context.log_group_name == "/aws/lambda/fn"
    assert context.function_version == "$LATEST"
    assert len(context.aws_request_id) == 36
    assert LocalLambdaContext("fn").aws_request_id != context.aws_request_id
