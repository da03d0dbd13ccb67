"""Every adapter turns the same failures into the same ProviderError, over real HTTP."""

from __future__ import annotations

import email.utils
import socket
import time
from typing import Any

import pytest

from flexiai.exceptions import (
    InvalidRequestError,
    MalformedResponseError,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeout,
    RateLimited,
)
from flexiai.providers.transport import HttpPool
from flexiai.testing import Drop, Error, FakeLLMServer, Malformed, Reply, Slow
from tests.providers.conftest import HTTP_KINDS, KINDS, BuildProvider, ask
from tests.support.llm_fixtures import fake_api_key, provider_config

STATUS_CASES = [
    (400, InvalidRequestError),
    (422, InvalidRequestError),
    (401, ProviderAuthError),
    (403, ProviderAuthError),
    (500, ProviderServerError),
    (503, ProviderServerError),
    (529, ProviderServerError),
]

#: A 200 whose text field is a number, in each API's shape.
CONTENT_NOT_A_STRING: dict[str, Any] = {
    "openai": {"choices": [{"message": {"role": "assistant", "content": 42}}]},
    "anthropic": {"content": [{"type": "text", "text": 42}]},
    "gemini": {"candidates": [{"content": {"parts": [{"text": 42}]}, "finishReason": "STOP"}]},
    "bedrock": {"output": {"message": {"role": "assistant", "content": [{"text": 42}]}}},
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("status", "expected"), STATUS_CASES)
def test_error_status_maps_to_the_documented_error_class(
    fake_llm: FakeLLMServer,
    build: BuildProvider,
    pool: HttpPool,
    kind: str,
    status: int,
    expected: type[ProviderError],
) -> None:
    provider = build(kind, pool)
    fake_llm.script(kind, [Error(status, message="nope")])

    with pytest.raises(expected) as info:
        provider.complete(ask(), timeout=5)

    assert type(info.value) is expected
    assert info.value.provider == kind
    assert info.value.status_code == status
    assert "nope" in info.value.message
    assert fake_llm.count(kind) == 1  # one attempt: retrying is flexiai's job, not the SDK's


@pytest.mark.parametrize("kind", KINDS)
def test_429_retry_after_in_seconds_is_carried_on_rate_limited(
    fake_llm: FakeLLMServer, build: BuildProvider, pool: HttpPool, kind: str
) -> None:
    provider = build(kind, pool)
    fake_llm.script(kind, [Error(429, message="slow down", retry_after=7)])

    with pytest.raises(RateLimited) as info:
        provider.complete(ask(), timeout=5)

    assert info.value.retry_after == pytest.approx(7.0)
    assert info.value.retryable


@pytest.mark.parametrize("kind", KINDS)
def test_429_retry_after_as_an_http_date_becomes_seconds_from_now(
    fake_llm: FakeLLMServer, build: BuildProvider, pool: HttpPool, kind: str
) -> None:
    provider = build(kind, pool)
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    fake_llm.script(kind, [Error(429, retry_after=when)])

    with pytest.raises(RateLimited) as info:
        provider.complete(ask(), timeout=5)

    assert info.value.retry_after is not None
    assert 25 <= info.value.retry_after <= 30


@pytest.mark.parametrize("kind", KINDS)
def test_429_without_retry_after_leaves_it_unknown(
    fake_llm: FakeLLMServer, build: BuildProvider, pool: HttpPool, kind: str
) -> None:
    provider = build(kind, pool)
    fake_llm.script(kind, [Error(429)])

    with pytest.raises(RateLimited) as info:
        provider.complete(ask(), timeout=5)

    assert info.value.retry_after is None


@pytest.mark.parametrize("kind", KINDS)
def test_a_reply_slower_than_the_timeout_is_a_provider_timeout(
    fake_llm: FakeLLMServer, build: BuildProvider, pool: HttpPool, kind: str
) -> None:
    provider = build(kind, pool)
    fake_llm.script(kind, [Slow(5)])

    with pytest.raises(ProviderTimeout) as info:
        provider.complete(ask(), timeout=0.3)

    assert info.value.retryable  # the client retries or fails over; no clock is read here
    assert fake_llm.count(kind) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_dropped_connection_is_a_connection_error(
    fake_llm: FakeLLMServer, build: BuildProvider, pool: HttpPool, kind: str
) -> None:
    provider = build(kind, pool)
    fake_llm.script(kind, [Drop()])

    with pytest.raises(ProviderConnectionError) as info:
        provider.complete(ask(), timeout=5)

    assert info.value.retryable
    assert fake_llm.count(kind) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_listening_is_a_connection_error(
    fake_llm: FakeLLMServer, build: BuildProvider, pool: HttpPool, kind: str
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and is closed now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = build(kind, pool)
    provider.config.base_url = f"http://127.0.0.1:{port}"

    with pytest.raises(ProviderConnectionError):
        provider.complete(ask(), timeout=2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "body",
    ["not json at all", {"unexpected": "shape"}, [1, 2, 3]],
    ids=["not-json", "wrong-shape", "a-list"],
)
def test_a_200_that_is_not_the_documented_shape_is_malformed(
    fake_llm: FakeLLMServer, build: BuildProvider, pool: HttpPool, kind: str, body: Any
) -> None:
    provider = build(kind, pool)
    fake_llm.script(kind, [Malformed(body)])

    with pytest.raises(MalformedResponseError) as info:
        provider.complete(ask(), timeout=5)

    assert info.value.retryable
    assert info.value.counts_toward_breaker


@pytest.mark.parametrize("kind", KINDS)
def test_a_200_whose_text_is_not_a_string_is_malformed(
    fake_llm: FakeLLMServer, build: BuildProvider, pool: HttpPool, kind: str
) -> None:
    provider = build(kind, pool)
    fake_llm.script(kind, [Malformed(CONTENT_NOT_A_STRING[kind])])

    with pytest.raises(MalformedResponseError):
        provider.complete(ask(), timeout=5)


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize("status", [400, 401, 429, 500])
def test_an_api_key_echoed_back_in_an_error_never_reaches_the_exception(
    fake_llm: FakeLLMServer, build: BuildProvider, pool: HttpPool, kind: str, status: int
) -> None:
    provider = build(kind, pool)
    key = fake_api_key(kind)
    fake_llm.script(kind, [Error(status, message=f"Incorrect API key provided: {key}.")])

    with pytest.raises(ProviderError) as info:
        provider.complete(ask(), timeout=5)

    rendered = f"{info.value} {info.value.message} {info.value!r}"
    assert key not in rendered
    assert "[redacted]" in info.value.message
    sent = fake_llm.requests(kind)[0].headers
    assert any(key in value for value in sent.values())  # it really was sent, then echoed


@pytest.mark.parametrize("kind", KINDS)
def test_every_reply_names_the_configured_provider_not_the_kind(
    fake_llm: FakeLLMServer, build: BuildProvider, pool: HttpPool, kind: str
) -> None:
    provider = build(kind, pool, name=f"{kind}-backup")

    response = provider.complete(ask("ping"), timeout=5)

    assert response.provider == f"{kind}-backup"
    assert response.content == f"{kind}-backup says: ping"
    assert fake_llm.count(f"{kind}-backup") == 1


# -- async -----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_acomplete_answers_like_complete(
    fake_llm: FakeLLMServer, build: BuildProvider, apool: HttpPool, kind: str
) -> None:
    provider = build(kind, apool)
    fake_llm.script(kind, [Reply("async hello", usage=(3, 2), finish_reason="stop-x")])

    response = await provider.acomplete(ask(), timeout=5)

    assert (response.content, response.provider, response.finish_reason) == (
        "async hello",
        kind,
        "stop-x",
    )
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (3, 2)
    assert response.usage.total_tokens == 5


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (Error(503), ProviderServerError),
        (Error(429, retry_after=2), RateLimited),
        (Error(401), ProviderAuthError),
        (Error(400), InvalidRequestError),
        (Slow(5), ProviderTimeout),
        (Drop(), ProviderConnectionError),
        (Malformed(), MalformedResponseError),
    ],
    ids=["503", "429", "401", "400", "slow", "drop", "malformed"],
)
async def test_acomplete_classifies_failures_like_complete(
    fake_llm: FakeLLMServer,
    build: BuildProvider,
    apool: HttpPool,
    kind: str,
    behaviour: Any,
    expected: type[ProviderError],
) -> None:
    provider = build(kind, apool)
    fake_llm.script(kind, [behaviour])

    with pytest.raises(expected):
        # Only the slow reply is meant to outlast the attempt; the others get a deadline a
        # busy machine cannot reach, so that they fail as themselves, never as a timeout.
        await provider.acomplete(ask(), timeout=0.5 if isinstance(behaviour, Slow) else 30)


def test_provider_config_helper_points_each_kind_at_the_fake_server(
    fake_llm: FakeLLMServer,
) -> None:
    configs = {kind: provider_config(fake_llm, kind) for kind in KINDS}

    assert configs["openai"].base_url == f"{fake_llm.url}/p/openai/v1"
    assert configs["anthropic"].base_url == f"{fake_llm.url}/p/anthropic"
    assert all(c.api_key is not None for c in configs.values())
    assert configs["gemini"].api_key is not None
    assert configs["gemini"].api_key.get_secret_value() == "sk-test-gemini-SECRET"
