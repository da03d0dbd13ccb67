"""OpenAI Chat Completions: request shape and response mapping over real HTTP."""

from __future__ import annotations

import pytest

from flexiai.exceptions import MalformedResponseError
from flexiai.models import ChatMessage
from flexiai.providers.base import ChatRequest
from flexiai.providers.openai import OpenAIProvider
from flexiai.providers.transport import HttpPool
from flexiai.testing import FakeLLMServer, Malformed, Reply
from tests.providers.conftest import ask
from tests.support.llm_fixtures import provider_config


def test_request_sends_bearer_key_model_system_first_and_sampling_fields(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    config = provider_config(fake_llm, "openai", model="gpt-4o-mini", options={"seed": 7})
    provider = OpenAIProvider(config, http=pool, api_key=lambda: "sk-test-openai-SECRET")

    provider.complete(ask("hi", system="be brief", temperature=0.2, max_tokens=64), timeout=5)

    [sent] = fake_llm.requests("openai")
    assert sent.method == "POST"
    assert sent.path == "/p/openai/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test-openai-SECRET"
    assert sent.headers["content-type"] == "application/json"
    assert sent.json == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "temperature": 0.2,
        "max_tokens": 64,
        "seed": 7,
    }


def test_azure_style_api_version_sends_api_key_header_and_query(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    config = provider_config(fake_llm, "openai", options={"api_version": "2024-06-01"})
    provider = OpenAIProvider(config, http=pool, api_key=lambda: "azure-key")

    provider.complete(ask(), timeout=5)

    [sent] = fake_llm.requests("openai")
    assert sent.path.endswith("/chat/completions?api-version=2024-06-01")
    assert sent.headers["api-key"] == "azure-key"
    assert "authorization" not in sent.headers


def test_reply_maps_content_usage_model_and_finish_reason(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    provider = OpenAIProvider(provider_config(fake_llm, "openai"), http=pool, api_key=lambda: "k")
    fake_llm.script("openai", [Reply("four", usage=(11, 1), finish_reason="length")])

    response = provider.complete(ask("2+2?"), timeout=5)

    assert response.content == "four"
    assert response.provider == "openai"
    assert response.model == "gpt-4o-mini"
    assert response.finish_reason == "length"
    assert response.usage.model_dump() == {
        "prompt_tokens": 11,
        "completion_tokens": 1,
        "total_tokens": 12,
    }
    assert response.metadata["provider_latency_ms"] > 0


def test_conversation_history_is_sent_in_order(fake_llm: FakeLLMServer, pool: HttpPool) -> None:
    provider = OpenAIProvider(provider_config(fake_llm, "openai"), http=pool, api_key=lambda: "k")
    history = [
        ChatMessage(role="user", content="my name is Ada"),
        ChatMessage(role="assistant", content="hello Ada"),
        ChatMessage(role="user", content="what is my name?"),
    ]

    response = provider.complete(ChatRequest(messages=history), timeout=5)

    assert response.content == "openai says: what is my name?"
    assert [m["role"] for m in fake_llm.requests("openai")[0].json["messages"]] == [
        "user",
        "assistant",
        "user",
    ]


def test_null_content_is_malformed_not_an_empty_answer(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    provider = OpenAIProvider(provider_config(fake_llm, "openai"), http=pool, api_key=lambda: "k")
    fake_llm.script("openai", [Malformed({"choices": [{"message": {"content": None}}]})])

    with pytest.raises(MalformedResponseError, match="not a string"):
        provider.complete(ask(), timeout=5)
