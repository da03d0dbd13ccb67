"""Adapters under test talk real HTTP to a FakeLLMServer on loopback; Bedrock goes through
botocore with fake credentials. Nothing here mocks httpx or botocore."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flexiai.models import ChatMessage
from flexiai.providers import provider_class
from flexiai.providers.base import ChatRequest, Provider
from flexiai.providers.transport import HttpPool
from flexiai.testing import FakeLLMServer
from tests.support.aws_env import MACHINE_AWS_VARIABLES
from tests.support.llm_fixtures import fake_api_key, provider_config

KINDS = ("openai", "anthropic", "gemini", "bedrock")
HTTP_KINDS = ("openai", "anthropic", "gemini")

BuildProvider = Callable[..., Provider]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """botocore signs with throwaway keys and never reads the machine's AWS config."""
    for var in MACHINE_AWS_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def pool() -> Iterator[HttpPool]:
    http = HttpPool()
    yield http
    http.close()


@pytest.fixture
async def apool() -> AsyncIterator[HttpPool]:
    """For async tests: the async httpx client must be closed inside the event loop."""
    http = HttpPool()
    yield http
    await http.aclose()


@pytest.fixture
def build(fake_llm: FakeLLMServer) -> Iterator[BuildProvider]:
    """``build(kind, pool, name=kind, **config)``: an adapter pointed at ``fake_llm``."""
    made: list[Provider] = []

    def _build(kind: str, http: HttpPool, *, name: str | None = None, **kw: Any) -> Provider:
        name = name or kind
        config = provider_config(fake_llm, name, kind=kind, **kw)
        key = fake_api_key(name)
        provider = provider_class(kind)(config, http=http, api_key=lambda: key)
        made.append(provider)
        return provider

    yield _build
    for provider in made:
        provider.close()


def ask(text: str = "hello there", **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage(role="user", content=text)], **kw)
