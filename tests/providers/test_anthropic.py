"""Anthropic Messages: top-level system, mandatory max_tokens, content blocks, 529."""

from __future__ import annotations

import pytest

from flexiai.exceptions import ProviderServerError
from flexiai.models import ChatMessage
from flexiai.providers.anthropic import AnthropicProvider
from flexiai.providers.base import ChatRequest
from flexiai.providers.transport import HttpPool
from flexiai.testing import Error, FakeLLMServer, Malformed, Reply
from tests.providers.conftest import ask
from tests.support.llm_fixtures import provider_config


def _provider(server: FakeLLMServer, pool: HttpPool, **kw: object) -> AnthropicProvider:
    config = provider_config(server, "anthropic", **kw)  # type: ignore[arg-type]
    return AnthropicProvider(config, http=pool, api_key=lambda: "sk-test-anthropic-SECRET")


def test_request_sends_x_api_key_version_header_and_top_level_system(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    provider = _provider(fake_llm, pool, model="claude-3-5-haiku-latest")

    provider.complete(ask("hi", system="be brief", temperature=0.5, max_tokens=99), timeout=5)

    [sent] = fake_llm.requests("anthropic")
    assert sent.path == "/p/anthropic/v1/messages"
    assert sent.headers["x-api-key"] == "sk-test-anthropic-SECRET"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert sent.json == {
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 99,
        "system": "be brief",
        "temperature": 0.5,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_max_tokens_defaults_to_1024_because_anthropic_requires_it(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    _provider(fake_llm, pool).complete(ask(), timeout=5)

    body = fake_llm.requests("anthropic")[0].json
    assert body["max_tokens"] == 1024
    assert "system" not in body
    assert "temperature" not in body


def test_anthropic_version_and_extra_body_fields_come_from_options(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    provider = _provider(
        fake_llm,
        pool,
        options={"anthropic_version": "2024-01-01", "top_k": 5, "headers": {"anthropic-beta": "x"}},
    )

    provider.complete(ask(), timeout=5)

    [sent] = fake_llm.requests("anthropic")
    assert sent.headers["anthropic-version"] == "2024-01-01"
    assert sent.headers["anthropic-beta"] == "x"
    assert sent.json["top_k"] == 5
    assert "anthropic_version" not in sent.json
    assert "headers" not in sent.json


def test_system_messages_in_the_history_join_the_top_level_system(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    request = ChatRequest(
        system="rule one",
        messages=[
            ChatMessage(role="system", content="rule two"),
            ChatMessage(role="user", content="hi"),
            ChatMessage(role="assistant", content="hello"),
            ChatMessage(role="user", content="again"),
        ],
    )

    _provider(fake_llm, pool).complete(request, timeout=5)

    body = fake_llm.requests("anthropic")[0].json
    assert body["system"] == "rule one\n\nrule two"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


def test_reply_maps_text_usage_and_stop_reason(fake_llm: FakeLLMServer, pool: HttpPool) -> None:
    fake_llm.script("anthropic", [Reply("bonjour", usage=(12, 3), finish_reason="max_tokens")])

    response = _provider(fake_llm, pool).complete(ask(), timeout=5)

    assert response.content == "bonjour"
    assert response.provider == "anthropic"
    assert response.model == "claude-3-5-haiku-latest"
    assert response.finish_reason == "max_tokens"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (12, 3)
    assert response.usage.total_tokens == 15


def test_only_text_blocks_make_the_answer(fake_llm: FakeLLMServer, pool: HttpPool) -> None:
    body = {
        "type": "message",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Hello, "},
            {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
            {"type": "text", "text": "world"},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }
    fake_llm.script("anthropic", [Malformed(body)])

    response = _provider(fake_llm, pool).complete(ask(), timeout=5)

    assert response.content == "Hello, world"
    assert response.model == "claude-x"


def test_529_overloaded_is_a_retryable_server_error_with_anthropics_message(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    fake_llm.script("anthropic", [Error(529, message="Overloaded")])

    with pytest.raises(ProviderServerError) as info:
        _provider(fake_llm, pool).complete(ask(), timeout=5)

    assert info.value.status_code == 529
    assert info.value.message == "Overloaded"
    assert info.value.retryable
    assert info.value.counts_toward_breaker
