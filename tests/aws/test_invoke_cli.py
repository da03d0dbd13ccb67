"""``flexiai invoke --in-process`` run as a user runs it: a subprocess, a template, an event
file. (The Lambda runtime path, with built layers: tests/aws/test_lambda_runtime.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flexiai.testing import FakeLLMServer
from tests.aws.conftest import EVENTS, HANDLERS, REPO
from tests.support.llm_fixtures import fake_api_key

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Model:
    Type: String
    Default: gpt-4o-mini
Globals:
  Function:
    Runtime: python3.12
    Timeout: 15
    MemorySize: 256
    Environment:
      Variables:
        POWERTOOLS_SERVICE_NAME: invoke-test
        FLEXIAI_PROVIDER_1_NAME: openai
        FLEXIAI_PROVIDER_1_MODEL: !Ref Model
        FLEXIAI_PROVIDER_1_API_KEY: !Sub "secretsmanager:${SecretArn}#api_key"
        FLEXIAI_PROVIDER_1_BASE_URL: https://api.openai.com/v1
        FLEXIAI_SYNC_ENABLED: "true"
        FLEXIAI_SYNC_BACKEND: memory
        FLEXIAI_SYNC_REDIS_HOST: !GetAtt Cache.Endpoint.Address
        DECLARED_FROM_SHELL: template
Resources:
  Cache:
    Type: AWS::ElastiCache::ServerlessCache
    Properties: {ServerlessCacheName: c}
  GenerateFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: handlers/
      Handler: generate.handler
  ProbeFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: probe/
      Handler: probe.handler
      Timeout: 9
      MemorySize: 1024
  FailingFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: probe/
      Handler: probe.fails
  SlowFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: probe/
      Handler: probe.slow
      Timeout: 1
  BrokenFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: probe/
      Handler: broken.handler
"""

PROBE = """\
import os
import time

from flexiai.aws import current_client, flexiai_handler

print("init output goes to stderr")


@flexiai_handler
def handler(event, context):
    print("handler output goes to stderr")
    return {
        "event": event,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "env_function_name": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
        "timeout_variable": os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT"),
        "declared_from_shell": os.environ.get("DECLARED_FROM_SHELL"),
        "undeclared_flexiai": os.environ.get("FLEXIAI_UNDECLARED"),
        "redis_host": os.environ.get("FLEXIAI_SYNC_REDIS_HOST"),
        "sync_mode": current_client()._sync_manager.mode,
        "model": current_client().config.providers[0].model,
    }


def fails(event, context):
    raise ValueError("the handler broke")


def slow(event, context):
    time.sleep(30)
"""


def flexiai_command() -> list[str]:
    script = Path(sys.executable).parent / "flexiai"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flexiai.cli"]


def invoke(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*flexiai_command(), "invoke", "--in-process", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def project(tmp_path: Path, fake_llm: FakeLLMServer) -> Path:
    """A SAM project: the repository's handlers, a probe handler, an env-vars file."""
    shutil.copytree(HANDLERS, tmp_path / "handlers", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "probe.py").write_text(PROBE)
    (tmp_path / "probe" / "broken.py").write_text("import does_not_exist\n")
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    shutil.copytree(EVENTS, tmp_path / "events")
    env_vars = {
        "Parameters": {
            "FLEXIAI_PROVIDER_1_API_KEY": fake_api_key("openai"),
            "FLEXIAI_PROVIDER_1_BASE_URL": fake_llm.base_url("openai"),
            "UNDECLARED_IN_ENV_VARS": "ignored",
        }
    }
    (tmp_path / "env.json").write_text(json.dumps(env_vars))
    return tmp_path


def stdout_json(result: subprocess.CompletedProcess[str]) -> Any:
    """stdout holds exactly one JSON document: the response."""
    return json.loads(result.stdout)


def test_invoke_prints_the_handlers_response_as_json_on_stdout(
    project: Path, fake_llm: FakeLLMServer
) -> None:
    result = invoke(
        "GenerateFunction",
        "--event",
        "events/generate.json",
        "--env-vars",
        "env.json",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    response = stdout_json(result)
    assert response["statusCode"] == 200
    answer = json.loads(response["body"])
    assert answer["content"] == "openai says: Say hello in one word."
    assert fake_llm.requests("openai")[0].headers["authorization"] == (
        f"Bearer {fake_api_key('openai')}"
    )
    # The function's logs and EMF went to stderr, with the tool's notes.
    assert '"ColdStart":[1.0]' in result.stderr
    assert "FLEXIAI_SYNC_REDIS_HOST dropped: !GetAtt Cache.Endpoint.Address" in result.stderr
    # As sam: a variable the template does not declare for the function is not passed.
    assert (
        "UNDECLARED_IN_ENV_VARS is not declared in the template for GenerateFunction: ignored"
        in result.stderr
    )


def test_a_bad_body_is_answered_not_crashed(project: Path) -> None:
    result = invoke(
        "GenerateFunction", "-e", "events/generate_bad_body.json", "-n", "env.json", cwd=project
    )
    assert result.returncode == 0, result.stderr
    response = stdout_json(result)
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["message"] == "body is not valid JSON"


def test_the_function_runs_with_the_templates_settings_and_a_lambda_context(
    project: Path,
) -> None:
    (project / "event.json").write_text('{"hello": "world"}')
    result = invoke(
        "ProbeFunction",
        "--event",
        "event.json",
        "--env-vars",
        "env.json",
        "--parameter-overrides",
        "Model=gpt-4.1",
        cwd=project,
        env={"DECLARED_FROM_SHELL": "shell", "FLEXIAI_UNDECLARED": "leak"},
    )
    assert result.returncode == 0, result.stderr
    probe = stdout_json(result)
    assert probe["event"] == {"hello": "world"}
    assert probe["function_name"] == probe["env_function_name"] == "ProbeFunction"
    assert probe["memory"] == 1024
    assert probe["timeout_variable"] == "9"
    assert 0 < probe["remaining_ms"] <= 9000  # the template's Timeout: 9 s, minus start-up
    assert probe["declared_from_shell"] == "shell"  # the shell wins for declared names
    assert probe["undeclared_flexiai"] is None  # hidden, as in a container
    assert probe["redis_host"] is None  # unresolvable: dropped
    assert probe["sync_mode"] == "snapshot"  # AWS_LAMBDA_FUNCTION_NAME is set
    assert probe["model"] == "gpt-4.1"
    assert "init output goes to stderr" in result.stderr
    assert "handler output goes to stderr" in result.stderr


def test_without_an_event_the_handler_gets_an_empty_object(project: Path) -> None:
    result = invoke("ProbeFunction", "--env-vars", "env.json", cwd=project)
    assert result.returncode == 0, result.stderr
    assert stdout_json(result)["event"] == {}


def test_a_handler_error_prints_lambdas_error_document_and_exits_1(project: Path) -> None:
    result = invoke("FailingFunction", cwd=project)
    assert result.returncode == 1
    error = stdout_json(result)
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", "the handler broke")
    assert "Traceback" in result.stderr


def test_a_module_that_cannot_be_imported_is_an_import_module_error(project: Path) -> None:
    result = invoke("BrokenFunction", cwd=project)
    assert result.returncode == 1
    error = stdout_json(result)
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert "Unable to import module 'broken'" in error["errorMessage"]


def test_a_handler_running_past_its_timeout_is_stopped(project: Path) -> None:
    result = invoke("SlowFunction", cwd=project)  # it sleeps far past its 1 s Timeout
    assert result.returncode == 1
    error = stdout_json(result)
    assert error["errorType"] == "Sandbox.Timedout"
    assert error["errorMessage"].endswith("Task timed out after 1.00 seconds")


def test_an_unknown_function_is_a_one_line_error(project: Path) -> None:
    result = invoke("Nope", cwd=project)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().startswith("flexiai invoke: no function 'Nope' in the template")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_missing_template_is_a_one_line_error(tmp_path: Path) -> None:
    result = invoke("GenerateFunction", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "flexiai invoke: no template.yaml here; pass --template PATH"


def test_without_pyyaml_it_says_what_to_install(project: Path) -> None:
    code = textwrap.dedent(
        """\
        import sys
        sys.modules["yaml"] = None  # as if PyYAML were not installed
        from flexiai.cli import main
        sys.exit(main(["invoke", "GenerateFunction"]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "pip install pyyaml" in result.stderr


def test_the_repository_template_runs_both_functions(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    if not (REPO / "template.yaml").is_file():
        pytest.skip("template.yaml is not in the repository yet")
    if "FLEXIAI_PROVIDER_1_BASE_URL" not in (REPO / "template.yaml").read_text():
        pytest.skip(
            "template.yaml declares no FLEXIAI_PROVIDER_1_BASE_URL, and --env-vars passes only "
            "declared variables (as sam): nothing can point the function at the fake server"
        )
    # What the deployed stack would provide, pointed at local stand-ins: no cache here.
    local = {
        "FLEXIAI_SYNC_ENABLED": "false",
        "FLEXIAI_SYNC_REDIS_IAM_AUTH": "false",
        "FLEXIAI_PROVIDER_1_API_KEY": fake_api_key("openai"),
        "FLEXIAI_PROVIDER_1_BASE_URL": fake_llm.base_url("openai"),
    }
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"GenerateFunction": local, "BreakerStatusFunction": local}))

    result = invoke(
        "GenerateFunction",
        "--event",
        "events/generate_function_url.json",
        "--env-vars",
        str(env_file),
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(stdout_json(result)["body"])
    assert (answer["provider"], answer["model"]) == ("openai", "gpt-4o-mini")

    result = invoke(
        "BreakerStatusFunction",
        "--template",
        "template.yaml",
        "--event",
        "events/breaker_status.json",
        "--env-vars",
        str(env_file),
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(stdout_json(result)["body"])
    assert list(status["providers"]) == ["openai"]
    assert fake_llm.count("openai") == 1
