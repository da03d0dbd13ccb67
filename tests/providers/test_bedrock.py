"""Bedrock Converse through real botocore (SigV4 with fake keys) against the fake server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from flexiai.exceptions import (
    InvalidRequestError,
    ProviderAuthError,
    ProviderServerError,
    ProviderTimeout,
    RateLimited,
)
from flexiai.models import ChatMessage
from flexiai.providers.base import ChatRequest
from flexiai.providers.bedrock import BedrockProvider
from flexiai.providers.transport import HttpPool
from flexiai.testing import Error, FakeLLMServer, Malformed, Reply, Slow
from tests.providers.conftest import ask
from tests.support.llm_fixtures import provider_config

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture
def bedrock(fake_llm: FakeLLMServer, pool: HttpPool) -> Any:
    providers: list[BedrockProvider] = []

    def make(**kw: Any) -> BedrockProvider:
        config = provider_config(fake_llm, "bedrock", model=MODEL, **kw)
        provider = BedrockProvider(config, http=pool, api_key=lambda: None)
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        provider.close()


def test_converse_is_signed_with_sigv4_and_posted_to_the_model_path(
    fake_llm: FakeLLMServer, bedrock: Any
) -> None:
    bedrock(options={"region": "eu-west-3"}).complete(ask(), timeout=5)

    [sent] = fake_llm.requests("bedrock")
    assert sent.method == "POST"
    assert sent.path == "/p/bedrock/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/eu-west-3/bedrock/aws4_request" in sent.headers["authorization"]
    assert sent.headers["amz-sdk-request"] == "attempt=1; max=1"


def test_region_falls_back_to_aws_region(
    fake_llm: FakeLLMServer, bedrock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "ap-south-1")

    bedrock().complete(ask(), timeout=5)

    assert "/ap-south-1/bedrock/" in fake_llm.requests("bedrock")[0].headers["authorization"]


def test_system_goes_to_the_system_list_and_limits_to_inference_config(
    fake_llm: FakeLLMServer, bedrock: Any
) -> None:
    request = ChatRequest(
        system="be brief",
        messages=[
            ChatMessage(role="user", content="hi"),
            ChatMessage(role="assistant", content="hello"),
            ChatMessage(role="user", content="again"),
        ],
        temperature=0.3,
        max_tokens=40,
    )
    provider = bedrock(
        options={"inferenceConfig": {"topP": 0.5}, "additionalModelRequestFields": {"top_k": 3}}
    )

    provider.complete(request, timeout=5)

    assert fake_llm.requests("bedrock")[0].json == {
        "messages": [
            {"role": "user", "content": [{"text": "hi"}]},
            {"role": "assistant", "content": [{"text": "hello"}]},
            {"role": "user", "content": [{"text": "again"}]},
        ],
        "system": [{"text": "be brief"}],
        "inferenceConfig": {"maxTokens": 40, "temperature": 0.3, "topP": 0.5},
        "additionalModelRequestFields": {"top_k": 3},
    }


def test_reply_maps_output_text_usage_and_stop_reason(
    fake_llm: FakeLLMServer, bedrock: Any
) -> None:
    fake_llm.script("bedrock", [Reply("hola", usage=(9, 2), finish_reason="max_tokens")])

    response = bedrock().complete(ask(), timeout=5)

    assert response.content == "hola"
    assert response.provider == "bedrock"
    assert response.model == MODEL
    assert response.finish_reason == "max_tokens"
    assert response.usage.model_dump() == {
        "prompt_tokens": 9,
        "completion_tokens": 2,
        "total_tokens": 11,
    }


def test_only_text_blocks_make_the_answer(fake_llm: FakeLLMServer, bedrock: Any) -> None:
    content = [
        {"reasoningContent": {"reasoningText": {"text": "hmm"}}},
        {"text": "one "},
        {"text": "two"},
    ]
    body = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3},
    }
    fake_llm.script("bedrock", [Malformed(body)])

    assert bedrock().complete(ask(), timeout=5).content == "one two"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Error(400, code="ThrottlingException"), RateLimited),
        (Error(400, code="ServiceQuotaExceededException"), RateLimited),
        (Error(403, code="UnrecognizedClientException"), ProviderAuthError),
        (Error(400, code="ValidationException"), InvalidRequestError),
        (Error(404, code="ResourceNotFoundException"), InvalidRequestError),
        (Error(408, code="ModelTimeoutException"), ProviderTimeout),
        (Error(429, code="ModelNotReadyException"), ProviderServerError),
        (Error(424, code="ModelErrorException"), ProviderServerError),
        (Error(500, code="InternalServerException"), ProviderServerError),
        (Error(503, code="ServiceUnavailableException"), ProviderServerError),
        (Error(502, code="SomethingNewException"), ProviderServerError),
        (Error(429, code="SomethingNewException"), RateLimited),
    ],
    ids=lambda v: v.code if isinstance(v, Error) else None,
)
def test_error_code_decides_the_class_before_the_status(
    fake_llm: FakeLLMServer, bedrock: Any, error: Error, expected: type[Exception]
) -> None:
    fake_llm.script("bedrock", [error])

    with pytest.raises(expected) as info:
        bedrock().complete(ask(), timeout=5)

    assert info.value.__cause__ is not None  # chained to the botocore error
    assert str(error.code) in str(info.value)


def test_missing_aws_credentials_is_an_auth_error(
    fake_llm: FakeLLMServer, bedrock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    with pytest.raises(ProviderAuthError, match="NoCredentialsError"):
        bedrock().complete(ask(), timeout=5)

    assert fake_llm.count("bedrock") == 0


def test_a_short_timeout_does_not_shorten_a_later_long_call(
    fake_llm: FakeLLMServer, bedrock: Any
) -> None:
    provider = bedrock()
    # Builds a client with 0.3 s socket timeouts; whether this call beats them on a busy
    # machine does not matter here.
    with contextlib.suppress(ProviderTimeout):
        provider.complete(ask(), timeout=0.3)
    fake_llm.script("bedrock", [Slow(0.8)])

    response = provider.complete(ask("later"), timeout=5)

    assert response.content == "bedrock says: later"


def test_importing_the_adapter_does_not_import_boto3_until_the_first_call(
    fake_llm: FakeLLMServer,
) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        import flexiai
        import flexiai.providers.bedrock as bedrock
        assert "boto3" not in sys.modules and "botocore" not in sys.modules, "import"

        from flexiai.models import ChatMessage, ProviderConfig
        from flexiai.providers.transport import HttpPool
        from flexiai.providers.base import ChatRequest
        config = ProviderConfig(name="bedrock", model="m", base_url="{fake_llm.base_url("bedrock")}")
        provider = bedrock.BedrockProvider(config, http=HttpPool(), api_key=lambda: None)
        assert "boto3" not in sys.modules, "construction"

        request = ChatRequest(messages=[ChatMessage(role="user", content="hi")])
        print(provider.complete(request, timeout=5).content)
        provider.close()
        assert "boto3" in sys.modules
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ),  # the fake AWS credentials of the autouse fixture
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "bedrock says: hi"
