"""Lambda's init phase must not connect anywhere: importing the handler module and building a
client open no socket to Redis and send nothing to a provider; the first invocation does.

Redis is a real ``redis-server``; its own counters say who connected. Each INFO query is a
connection of its own, which the arithmetic below accounts for.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from flexiai import FlexiAI
from flexiai.aws.context import LocalLambdaContext
from flexiai.config import load_config
from flexiai.testing import FakeLLMServer
from tests.aws.conftest import HANDLERS, provider_env, read_event

pytestmark = pytest.mark.redis_server


def connections(server: Any) -> tuple[int, int]:
    """(connections ever accepted, connections open now), this query's own included."""
    reply = server.raw("INFO", "clients", "stats").decode()
    fields = dict(
        line.split(":", 1) for line in reply.splitlines() if ":" in line and line[0] != "#"
    )
    return int(fields["total_connections_received"]), int(fields["connected_clients"])


@pytest.fixture
def fleet_env(monkeypatch: pytest.MonkeyPatch, fake_llm: FakeLLMServer, redis_server: Any) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "generate")  # sync mode auto -> snapshot
    provider_env(
        monkeypatch,
        fake_llm,
        "openai",
        "anthropic",
        SYNC_ENABLED="true",
        SYNC_REDIS_HOST=redis_server.host,
        SYNC_REDIS_PORT=str(redis_server.port),
    )


def test_import_and_initialisation_open_no_connection_the_first_invocation_does(
    fleet_env: None,
    redis_server: Any,
    fake_llm: FakeLLMServer,
    load_handler: Callable[[str], ModuleType],
    lambda_context: Callable[..., LocalLambdaContext],
) -> None:
    total, open_now = connections(redis_server)
    assert open_now == 1  # only the query itself

    module = load_handler("generate")  # the init phase: import and decorate
    client = FlexiAI(load_config())  # what the first invocation will build
    client.get_provider_status  # noqa: B018 - touching the API connects nothing either
    client.close()

    assert connections(redis_server) == (total + 1, 1)  # nobody but the second query
    assert fake_llm.count("openai") == fake_llm.count("anthropic") == 0

    response = module.handler(read_event("generate.json"), lambda_context())
    assert response["statusCode"] == 200
    after_total, after_open = connections(redis_server)
    assert after_total >= total + 3  # two queries, and flexiai's connection
    assert after_open == 2  # flexiai keeps its connection for warm invocations
    assert fake_llm.count("openai") == 1


def test_a_fresh_interpreter_importing_the_handler_connects_nowhere(
    fleet_env: None, redis_server: Any, fake_llm: FakeLLMServer
) -> None:
    """The same in a new process, as Lambda's init phase runs: not one socket is created."""
    code = (
        "import socket, sys\n"
        f"sys.path.insert(0, {str(HANDLERS)!r})\n"
        "made = []\n"
        "real = socket.socket.connect\n"
        "def connect(self, address):\n"
        "    made.append(address)\n"
        "    return real(self, address)\n"
        "socket.socket.connect = connect\n"
        "import generate\n"
        "from flexiai import FlexiAI\n"
        "FlexiAI().close()\n"
        "print(made)\n"
    )
    total, _ = connections(redis_server)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
    assert connections(redis_server)[0] == total + 1
