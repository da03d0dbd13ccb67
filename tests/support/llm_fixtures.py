"""The fake LLM server as a pytest fixture, and ``provider_config`` to point a provider at it.

Every test gets its own server on a free loopback port, so tests never share scripts or
counters and can run in any order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flexiai.models import ProviderConfig
from flexiai.testing import FakeLLMServer

__all__ = ["DEFAULT_MODELS", "fake_api_key", "fake_llm", "provider_config"]

#: A plausible model id per kind; Bedrock's has the ':' that must survive URL quoting.
DEFAULT_MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-latest",
    "gemini": "gemini-2.0-flash",
    "bedrock": "anthropic.claude-3-haiku-20240307-v1:0",
}


def fake_api_key(name: str) -> str:
    """The key ``provider_config`` gives ``name``: distinctive, so a leak is easy to grep."""
    return f"sk-test-{name}-SECRET"


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMServer]:
    """A started ``FakeLLMServer`` on 127.0.0.1, stopped after the test."""
    with FakeLLMServer() as server:
        yield server


def provider_config(
    server: FakeLLMServer, name: str, kind: str | None = None, **kw: Any
) -> ProviderConfig:
    """A ``ProviderConfig`` for ``name`` whose ``base_url`` is the fake server.

    ``kind`` defaults from the name as ``ProviderConfig`` infers it; ``model`` defaults per
    kind; the API key is ``sk-test-<name>-SECRET``. Other keywords go to ``ProviderConfig``.
    """
    inferred = kind or next(
        (k for k in DEFAULT_MODELS if name == k or name.startswith(k + "-")), None
    )
    return ProviderConfig(
        name=name,
        kind=kind,
        model=kw.pop("model", None) or DEFAULT_MODELS.get(inferred or "", "test-model"),
        base_url=server.base_url(name, kind),
        api_key=kw.pop("api_key", fake_api_key(name)),
        **kw,
    )
