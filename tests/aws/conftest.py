"""The Lambda kit under test: real Powertools, real HTTP to a FakeLLMServer, moto for AWS.

Every test starts from an environment with no FLEXIAI_* or POWERTOOLS_* variables and with
throwaway AWS credentials, and ends with the middleware's clients closed and every secret
cache cleared.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flexiai.aws.context import LocalLambdaContext
from flexiai.testing import FakeLLMServer
from tests.support.llm_fixtures import fake_api_key

REPO = Path(__file__).resolve().parents[2]
HANDLERS = REPO / "handlers"
EVENTS = REPO / "events"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def lambda_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    import os

    for name in list(os.environ):
        if name.startswith(("FLEXIAI_", "POWERTOOLS_", "AWS_")) or name == "LAMBDA_TASK_ROOT":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    # A logger name of its own per test: Powertools binds a logger's handler to the stdout
    # of the moment it is first built, and capsys replaces stdout per test.
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"svc-{uuid.uuid4().hex[:8]}")
    yield
    from flexiai.aws.middleware import close_clients
    from flexiai.aws.secrets import clear_cache

    close_clients()
    clear_cache()


@pytest.fixture
def lambda_context() -> Callable[..., LocalLambdaContext]:
    """``lambda_context(timeout=3.0, name="fn")``: a fresh context (a fresh request id)."""

    def make(timeout: float = 10.0, name: str = "flexiai-test") -> LocalLambdaContext:
        return LocalLambdaContext(name, timeout=timeout, memory_limit_in_mb=256)

    return make


def provider_env(
    monkeypatch: pytest.MonkeyPatch,
    server: FakeLLMServer,
    *names: str,
    **settings: str,
) -> None:
    """FLEXIAI_PROVIDER_<N>_* for each name (priority in order) pointing at ``server``, and
    any other FLEXIAI_<KEY>=value from ``settings`` (``RETRY_MAX_RETRIES="0"``)."""
    models = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}
    for index, name in enumerate(names, start=1):
        prefix = f"FLEXIAI_PROVIDER_{index}_"
        monkeypatch.setenv(prefix + "NAME", name)
        monkeypatch.setenv(prefix + "MODEL", models.get(name.split("-")[0], "test-model"))
        monkeypatch.setenv(prefix + "API_KEY", fake_api_key(name))
        monkeypatch.setenv(prefix + "BASE_URL", server.base_url(name))
        monkeypatch.setenv(prefix + "PRIORITY", str(index))
    for key, value in settings.items():
        monkeypatch.setenv(f"FLEXIAI_{key}", value)


@pytest.fixture
def load_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], ModuleType]]:
    """Import ``handlers/<name>.py`` fresh, as a new execution environment would."""
    monkeypatch.syspath_prepend(str(HANDLERS))
    loaded: list[str] = []

    def load(name: str) -> ModuleType:
        sys.modules.pop(name, None)
        module = importlib.import_module(name)
        loaded.append(name)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


def read_event(name: str) -> dict[str, Any]:
    import json

    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


@pytest.fixture
def xray_emitted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Powertools' Tracer enabled as on Lambda, inside a segment opened here; yields the
    entities the X-Ray SDK sends (Tracer streams each finished subsegment on Lambda).

    Tracer keeps its configuration in class attributes and the X-Ray recorder is global:
    both are put back afterwards."""
    import aws_xray_sdk
    from aws_lambda_powertools import Tracer
    from aws_xray_sdk.core import xray_recorder  # before LAMBDA_TASK_ROOT: a plain recorder

    sent: list[Any] = []

    class Emitter:  # instead of UDP to a daemon
        def send_entity(self, entity: Any) -> None:
            sent.append(entity)

    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")  # Tracer enables itself "on Lambda"
    threshold, emitter = xray_recorder.streaming_threshold, xray_recorder.emitter
    Tracer._reset_config()
    aws_xray_sdk.global_sdk_config.set_sdk_enabled(True)
    xray_recorder.emitter = Emitter()
    Tracer(auto_patch=False)  # the function's own Tracer: the middleware's shares its config
    xray_recorder.begin_segment("test", sampling=1)
    try:
        yield sent
    finally:
        xray_recorder.end_segment()
        xray_recorder.streaming_threshold, xray_recorder.emitter = threshold, emitter
        Tracer._reset_config()
        aws_xray_sdk.global_sdk_config.set_sdk_enabled(False)


@pytest.fixture
def fresh_execution_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Powertools' cold-start flag as a new execution environment has it (it is a module
    global, flipped by the first invocation in the process)."""
    from aws_lambda_powertools.metrics.provider import cold_start

    monkeypatch.setattr(cold_start, "is_cold_start", True)
