"""``flexiai invoke`` and ``flexiai start-api`` on the real Lambda runtime (awslambdaric in
python3.12), with the flexiai layer built once per session by layer/Makefile (what
``sam build`` runs for it) and the repository's handlers, over real HTTP to a fake LLM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flexiai.testing import FakeLLMServer
from flexiai_dev.cloudformation import read_function
from tests.aws.conftest import EVENTS, HANDLERS, REPO
from tests.support.llm_fixtures import fake_api_key

PYTHON312 = None
try:
    from flexiai_dev.lambda_runtime import find_python

    PYTHON312 = find_python()
except Exception:  # pragma: no cover - reported by the skip below
    PYTHON312 = None

needs_python312 = pytest.mark.skipif(
    PYTHON312 is None, reason="no python3.12 on PATH or in pyenv: the Lambda runtime needs it"
)

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Model:
    Type: String
    Default: gpt-4o-mini
  PowertoolsVersion:
    Type: String
    Default: latest
Globals:
  Function:
    Runtime: python3.12
    Timeout: 20
    MemorySize: 256
    Layers:
      - !Sub "{{{{resolve:ssm:/aws/service/powertools/python/x86_64/python3.12/${{PowertoolsVersion}}}}}}"
    Environment:
      Variables:
        POWERTOOLS_SERVICE_NAME: runtime-test
        FLEXIAI_SYNC_ENABLED: "false"
        FLEXIAI_PROVIDER_1_NAME: openai
        FLEXIAI_PROVIDER_1_MODEL: !Ref Model
        FLEXIAI_PROVIDER_1_API_KEY: from-env-vars
        FLEXIAI_PROVIDER_1_BASE_URL: https://api.openai.com/v1
Resources:
  FlexiAILayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: {layer}
    Metadata:
      BuildMethod: makefile
  SourceLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: probe/
    Metadata:
      BuildMethod: python3.12
  UnbuiltLayerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: probe/
      Handler: probe.handler
      Layers: [!Ref SourceLayer]
  GenerateFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: handlers/
      Handler: generate.handler
      Layers: [!Ref FlexiAILayer]
      Events:
        Generate:
          Type: HttpApi
          Properties: {{Path: /generate, Method: POST}}
  NoFlexiAILayerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: handlers/
      Handler: generate.handler
  ProbeFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: probe/
      Handler: probe.handler
      Layers: [!Ref FlexiAILayer]
      Environment:
        Variables:
          PROBE_DECLARED: template
  SlowFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: probe/
      Handler: probe.slow
      Timeout: 1
  FailingFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: probe/
      Handler: probe.fails
"""

PROBE = """\
import os
import sys
import time

INIT_PID = os.getpid()


def handler(event, context):
    try:
        import pytest  # in this test's environment, not in any layer
        host_package = True
    except ImportError:
        host_package = False
    return {
        "event": event,
        "pid": INIT_PID,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "version": list(sys.version_info[:2]),
        "env": {k: os.environ.get(k) for k in (
            "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_REGION",
            "AWS_EXECUTION_ENV", "LAMBDA_TASK_ROOT", "PROBE_DECLARED", "PROBE_UNDECLARED",
            "AWS_PROFILE")},
        "host_package": host_package,
        "flexiai_from": __import__("flexiai").__file__,
    }


def slow(event, context):
    time.sleep(30)


def fails(event, context):
    raise ValueError("the handler broke")
"""


@pytest.fixture(scope="session")
def built_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The flexiai layer, built once per session by the target `sam build` runs."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = tmp_path_factory.mktemp("flexiai-layer")
    result = subprocess.run(
        [
            "make",
            "--makefile",
            str(REPO / "layer" / "Makefile"),
            "build-FlexiAILayerX8664",
            f"ARTIFACTS_DIR={out}",
            f"PYTHON={sys.executable}",
        ],
        cwd=out,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


@pytest.fixture
def project(tmp_path: Path, built_layer: Path, fake_llm: FakeLLMServer) -> Path:
    shutil.copytree(HANDLERS, tmp_path / "handlers", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "probe.py").write_text(PROBE)
    (tmp_path / "template.yaml").write_text(TEMPLATE.format(layer=built_layer))
    shutil.copytree(EVENTS, tmp_path / "events")
    env_vars = {
        "Parameters": {
            "FLEXIAI_PROVIDER_1_API_KEY": fake_api_key("openai"),
            "FLEXIAI_PROVIDER_1_BASE_URL": fake_llm.base_url("openai"),
        },
        "ProbeFunction": {"PROBE_DECLARED": "env-vars", "PROBE_UNDECLARED": "dropped"},
    }
    (tmp_path / "env.json").write_text(json.dumps(env_vars))
    return tmp_path


def invoke(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flexiai.cli", "invoke", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )


def report_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("START", "END", "REPORT"))]


@needs_python312
def test_generate_runs_on_the_lambda_runtime_with_the_built_layer(
    project: Path, fake_llm: FakeLLMServer
) -> None:
    result = invoke("GenerateFunction", "-e", "events/generate.json", "-n", "env.json", cwd=project)
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)  # stdout holds the response and nothing else
    assert response["statusCode"] == 200
    answer = json.loads(response["body"])
    assert (answer["provider"], answer["model"]) == ("openai", "gpt-4o-mini")
    assert fake_llm.count("openai") == 1
    start, end, report = report_lines(result.stderr)
    request_id = start.split()[2]
    assert end == f"END RequestId: {request_id}"
    for field in (
        "Duration:",
        "Billed Duration:",
        "Memory Size: 256 MB",
        "Max Memory Used:",
        "Init Duration:",
    ):
        assert field in report
    assert fake_api_key("openai") not in result.stderr


@needs_python312
def test_the_function_gets_lambdas_environment_and_only_declared_variables(
    project: Path, built_layer: Path
) -> None:
    event = project / "event.json"
    event.write_text('{"hello": "world"}')
    result = invoke(
        "ProbeFunction",
        "-e",
        str(event),
        "-n",
        "env.json",
        "--region",
        "eu-west-1",
        "--profile",
        "dev",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["event"] == {"hello": "world"}
    assert probe["version"] == [3, 12]
    assert (probe["function_name"], probe["memory"]) == (
        "ProbeFunction",
        "256",
    )  # a string, as Lambda's
    assert 0 < probe["remaining_ms"] <= 20_000
    assert probe["env"] == {
        "AWS_LAMBDA_FUNCTION_NAME": "ProbeFunction",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_REGION": "eu-west-1",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "LAMBDA_TASK_ROOT": str(project / "probe"),
        "PROBE_DECLARED": "env-vars",
        "PROBE_UNDECLARED": None,
        "AWS_PROFILE": "dev",
    }
    assert "PROBE_UNDECLARED is not declared in the template for ProbeFunction" in result.stderr
    assert probe["host_package"] is False  # nothing of this environment leaks in
    assert probe["flexiai_from"].startswith(str(built_layer / "python"))  # from the layer


@needs_python312
def test_a_dependency_missing_from_the_layers_fails_the_invoke(project: Path) -> None:
    result = invoke(
        "NoFlexiAILayerFunction", "-e", "events/generate.json", "-n", "env.json", cwd=project
    )
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert "Unable to import module 'generate'" in error["errorMessage"]
    assert "flexiai" in error["errorMessage"]


@needs_python312
def test_a_function_past_its_timeout_is_stopped_with_lambdas_wording(project: Path) -> None:
    result = invoke("SlowFunction", cwd=project)  # sleeps 30 s; Timeout is 1 s
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert error["errorType"] == "Sandbox.Timedout"
    assert error["errorMessage"].endswith("Error: Task timed out after 1.00 seconds")
    assert "Task timed out after 1.00 seconds" in result.stderr
    assert "Duration: 1000.00 ms" in report_lines(result.stderr)[-1]


@needs_python312
def test_a_layer_that_sam_build_has_not_built_is_a_one_line_error(project: Path) -> None:
    result = invoke("UnbuiltLayerFunction", cwd=project)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "layer SourceLayer of UnbuiltLayerFunction is not built: run `sam build`" in (
        result.stderr
    )


@needs_python312
def test_debug_says_what_runs_without_values(project: Path) -> None:
    result = invoke(
        "GenerateFunction",
        "-e",
        "events/generate.json",
        "-n",
        "env.json",
        "--debug",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    assert "handler generate.handler" in result.stderr
    assert "under awslambdaric" in result.stderr
    assert fake_api_key("openai") not in result.stderr


@needs_python312
def test_a_handler_error_is_lambdas_error_document(project: Path) -> None:
    result = invoke("FailingFunction", cwd=project)
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", "the handler broke")


@needs_python312
def test_both_parameter_override_forms_and_unknown_names(project: Path) -> None:
    for form in (
        "Model=gpt-4.1 PowertoolsVersion=latest",
        "ParameterKey=Model,ParameterValue=gpt-4.1",
    ):
        result = invoke(
            "GenerateFunction",
            "-e",
            "events/generate.json",
            "-n",
            "env.json",
            "--parameter-overrides",
            form,
            cwd=project,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(json.loads(result.stdout)["body"])["model"] == "gpt-4.1"
    result = invoke("GenerateFunction", "--parameter-overrides", "Modle=x", cwd=project)
    assert result.returncode == 2
    assert "no parameter 'Modle' (its parameters: Model, PowertoolsVersion)" in result.stderr


@needs_python312
def test_a_warm_runtime_is_reused_and_reports_no_init(project: Path) -> None:
    from flexiai_dev.lambda_runtime import LambdaRuntime, layer_directories

    assert PYTHON312 is not None
    spec = read_function(project / "template.yaml", "ProbeFunction")
    layers, _ = layer_directories(spec, PYTHON312)
    log = project / "log.txt"
    with (
        log.open("w") as stream,
        LambdaRuntime(
            spec, python=PYTHON312, layers=layers, variables={}, region="us-east-1", log=stream
        ) as runtime,
    ):
        first = runtime.invoke(b'{"n": 1}')
        second = runtime.invoke(b'{"n": 2}')
    assert first.init_ms is not None and second.init_ms is None
    documents = [first.outcome.document(), second.outcome.document()]  # type: ignore[union-attr]
    assert [d["event"] for d in documents] == [{"n": 1}, {"n": 2}]
    assert documents[0]["pid"] == documents[1]["pid"]
    assert first.max_memory_mb > 0
    reports = [line for line in log.read_text().splitlines() if line.startswith("REPORT")]
    assert "Init Duration" in reports[0] and "Init Duration" not in reports[1]


@pytest.fixture
def api(project: Path) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "flexiai.cli", "start-api", "--port", "0", "-n", "env.json"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    url = None
    for line in process.stderr:  # the route lines give the bound port
        if "POST http://" in line:
            url = line.split()[3].rsplit("/generate", 1)[0]
            break
    # Keep reading its output (the functions' logs) so the pipe never fills up.
    drain = threading.Thread(target=process.stderr.read, daemon=True)
    drain.start()
    try:
        assert url is not None, "start-api printed no route"
        yield url
    finally:
        process.terminate()
        process.wait()
        drain.join()
        process.stderr.close()


@needs_python312
def test_start_api_serves_the_generate_route(api: str, fake_llm: FakeLLMServer) -> None:
    response = httpx.post(api + "/generate", json={"prompt": "Say hello"}, timeout=60)
    assert response.status_code == 200, response.text
    answer: Any = response.json()
    assert answer["provider"] == "openai"
    assert fake_llm.count("openai") == 1


def test_without_python312_it_runs_in_process_and_says_so(project: Path) -> None:
    no_python312 = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{project / 'no-bin'}",
        "PYENV_ROOT": str(project / "no-pyenv"),
    }
    result = invoke("ProbeFunction", "-n", "env.json", cwd=project, env=no_python312)
    assert result.returncode == 0, result.stderr
    assert "no python3.12 found (PATH, pyenv): running in this process" in result.stderr
    assert json.loads(result.stdout)["host_package"] is True  # this environment's packages


def test_the_runtime_pin_is_the_dev_extras() -> None:
    from flexiai_dev.lambda_runtime import AWSLAMBDARIC_PIN

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert AWSLAMBDARIC_PIN in project["optional-dependencies"]["dev"]


@needs_python312
def test_the_cold_start_bench_prints_every_variant_its_targets_and_the_command(
    built_layer: Path,
) -> None:
    """Shape only (one runtime per variant): every variant's row with init, first invoke,
    init+first, warm and RSS, a verdict per target, the --causes peers and the breakdown
    they give, and the command that reproduces it."""
    run = subprocess.run(
        [sys.executable, "bench/lambda_cold_start.py", "--runtimes", "1", "--causes", "--layer",
         str(built_layer)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    out = run.stdout
    assert "with python3.12 bytecode" in out
    for variant in (
        "floor ",
        "floor + Tracer, Metrics",
        "generate, sync off",
        "generate, redis snapshot",
        "openai SDK",
        "+ pydantic ",
        "+ pydantic, event handler ",
        "+ pydantic, event handler, redis ",
    ):
        row = next((line for line in out.splitlines() if line.startswith(variant)), None)
        assert row is not None, f"no row for {variant!r}:\n{out}"
        assert row.count(" ms ") == 4 and row.count(" MB ") == 1, row
    for target in ("generate, sync off", "generate, redis snapshot"):
        assert f"{target}: init+first " in out and "the floor (target <= " in out
        assert f"{target}: RSS " in out
    causes = out.split("what the distance to the floor is made of", 1)[-1].splitlines()[1:7]
    for cause in ("Tracer, Metrics", "pydantic", "Powertools event handler", "flexiai (sync off)",
                  "redis-py", "flexiai's snapshot sync"):  # fmt: skip
        line = next((line for line in causes if line.strip().startswith(cause)), None)
        assert line is not None and " ms init+first" in line and " MB RSS" in line, out
    assert "command: python bench/lambda_cold_start.py --runtimes 10" in out
