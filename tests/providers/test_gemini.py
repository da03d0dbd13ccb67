"""Gemini generateContent: key in a header, user/model roles, safety blocks, Google errors."""

from __future__ import annotations

from typing import Any

import pytest

from flexiai.exceptions import (
    InvalidRequestError,
    MalformedResponseError,
    ProviderAuthError,
    RateLimited,
)
from flexiai.models import ChatMessage
from flexiai.providers.base import ChatRequest
from flexiai.providers.gemini import GeminiProvider
from flexiai.providers.transport import HttpPool
from flexiai.testing import Error, FakeLLMServer, Malformed, Reply
from tests.providers.conftest import ask
from tests.support.llm_fixtures import provider_config

KEY = "sk-test-gemini-SECRET"


def _provider(server: FakeLLMServer, pool: HttpPool, **kw: Any) -> GeminiProvider:
    return GeminiProvider(provider_config(server, "gemini", **kw), http=pool, api_key=lambda: KEY)


def test_api_key_travels_in_a_header_and_never_in_the_url(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    _provider(fake_llm, pool, model="gemini-2.0-flash").complete(ask(), timeout=5)

    [sent] = fake_llm.requests("gemini")
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.path == "/p/gemini/v1beta/models/gemini-2.0-flash:generateContent"
    assert KEY not in sent.path
    assert "key=" not in sent.path


def test_roles_become_user_and_model_and_system_becomes_system_instruction(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    request = ChatRequest(
        system="be brief",
        messages=[
            ChatMessage(role="user", content="hi"),
            ChatMessage(role="assistant", content="hello"),
            ChatMessage(role="system", content="and kind"),
            ChatMessage(role="user", content="again"),
        ],
        temperature=0.1,
        max_tokens=77,
    )

    _provider(fake_llm, pool).complete(request, timeout=5)

    assert fake_llm.requests("gemini")[0].json == {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": "again"}]},
        ],
        "systemInstruction": {"parts": [{"text": "be brief"}, {"text": "and kind"}]},
        "generationConfig": {"temperature": 0.1, "maxOutputTokens": 77},
    }


def test_options_merge_generation_config_and_pass_other_fields_through(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    provider = _provider(
        fake_llm,
        pool,
        model="models/gemini-1.5-pro",
        options={"generationConfig": {"topP": 0.9}, "safetySettings": safety, "api_version": "v1"},
    )

    provider.complete(ask(max_tokens=5), timeout=5)

    [sent] = fake_llm.requests("gemini")
    assert sent.path == "/p/gemini/v1/models/gemini-1.5-pro:generateContent"
    assert sent.json["generationConfig"] == {"maxOutputTokens": 5, "topP": 0.9}
    assert sent.json["safetySettings"] == safety
    assert "api_version" not in sent.json


def test_reply_maps_parts_usage_metadata_and_finish_reason(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    fake_llm.script("gemini", [Reply("ciao", usage=(4, 1), finish_reason="MAX_TOKENS")])

    response = _provider(fake_llm, pool).complete(ask(), timeout=5)

    assert response.content == "ciao"
    assert response.provider == "gemini"
    assert response.model == "gemini-2.0-flash"
    assert response.finish_reason == "MAX_TOKENS"
    assert response.usage.model_dump() == {
        "prompt_tokens": 4,
        "completion_tokens": 1,
        "total_tokens": 5,
    }


def test_text_parts_are_joined_and_thought_parts_left_out(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    parts = [{"text": "thinking...", "thought": True}, {"text": "A"}, {"text": "B"}]
    body = {"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP"}]}
    fake_llm.script("gemini", [Malformed(body)])

    assert _provider(fake_llm, pool).complete(ask(), timeout=5).content == "AB"


def test_an_invalid_api_key_400_is_an_auth_error_so_flexiai_fails_over(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    fake_llm.script(
        "gemini",
        [
            Error(
                400,
                message="API key not valid. Please pass a valid API key.",
                code="API_KEY_INVALID",
            )
        ],
    )

    with pytest.raises(ProviderAuthError) as info:
        _provider(fake_llm, pool).complete(ask(), timeout=5)

    assert info.value.status_code == 400
    assert "API key not valid" in info.value.message


def test_a_plain_400_stays_an_invalid_request(fake_llm: FakeLLMServer, pool: HttpPool) -> None:
    fake_llm.script("gemini", [Error(400, message="bad field", code="FIELD_INVALID")])

    with pytest.raises(InvalidRequestError):
        _provider(fake_llm, pool).complete(ask(), timeout=5)


def test_retry_delay_in_the_body_is_used_when_there_is_no_retry_after_header(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    body = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "27s"},
            ],
        }
    }
    fake_llm.script("gemini", [Error(429, body=body)])

    with pytest.raises(RateLimited) as info:
        _provider(fake_llm, pool).complete(ask(), timeout=5)

    assert info.value.retry_after == 27.0


def test_a_blocked_prompt_is_an_invalid_request_that_does_not_count_toward_the_breaker(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    body = {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
    }
    fake_llm.script("gemini", [Malformed(body)])

    with pytest.raises(InvalidRequestError, match=r"blocked by Gemini \(SAFETY\)") as info:
        _provider(fake_llm, pool).complete(ask(), timeout=5)

    assert not info.value.counts_toward_breaker
    assert not info.value.retryable


def test_an_answer_blocked_without_text_is_an_invalid_request(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    body = {"candidates": [{"finishReason": "PROHIBITED_CONTENT", "index": 0}]}
    fake_llm.script("gemini", [Malformed(body)])

    with pytest.raises(InvalidRequestError, match="PROHIBITED_CONTENT"):
        _provider(fake_llm, pool).complete(ask(), timeout=5)


def test_running_out_of_tokens_before_any_text_is_an_empty_answer_not_an_error(
    fake_llm: FakeLLMServer, pool: HttpPool
) -> None:
    body = {"candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}]}
    fake_llm.script("gemini", [Malformed(body)])

    response = _provider(fake_llm, pool).complete(ask(), timeout=5)

    assert (response.content, response.finish_reason) == ("", "MAX_TOKENS")


@pytest.mark.parametrize(
    "body",
    [{"candidates": []}, {"candidates": [{"content": {"parts": []}}]}, {"usageMetadata": {}}],
    ids=["no-candidates", "no-text-no-finish", "nothing"],
)
def test_no_text_and_no_reason_is_malformed(
    fake_llm: FakeLLMServer, pool: HttpPool, body: dict[str, Any]
) -> None:
    fake_llm.script("gemini", [Malformed(body)])

    with pytest.raises(MalformedResponseError):
        _provider(fake_llm, pool).complete(ask(), timeout=5)
