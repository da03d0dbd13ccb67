"""Bedrock's async path over real HTTP to the fake server: botocore's Converse serializer,
SigV4 and parser on the loop, the request sent by the shared ``httpx.AsyncClient``, and no
worker thread per call (issue 12, item 2)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

import pytest

from flexiai import FlexiAI
from flexiai.exceptions import InvalidRequestError, RateLimited
from flexiai.models import FlexiAIConfig, RetryConfig
from flexiai.providers.bedrock import BedrockProvider
from flexiai.providers.transport import HttpPool
from flexiai.testing import Error, FakeLLMServer, Reply
from tests.providers.conftest import ask
from tests.support.llm_fixtures import provider_config


class _CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor (``asyncio.to_thread``), counting what it is given."""

    submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def _run(scenario: Callable[[HttpPool], Any]) -> tuple[Any, int]:
    """Run ``scenario(pool)`` on a fresh loop; its result and how many jobs went to threads
    after the first call (which builds the botocore client and finds credentials)."""
    executor = _CountingExecutor(max_workers=2)

    async def main() -> Any:
        asyncio.get_running_loop().set_default_executor(executor)
        pool = HttpPool()
        try:
            return await scenario(pool)
        finally:
            await pool.aclose()

    try:
        result = asyncio.run(main())
    finally:
        executor.shutdown()
    return result, executor.submitted


def test_acomplete_signs_sends_and_parses_without_a_thread_per_call(
    fake_llm: FakeLLMServer,
) -> None:
    fake_llm.set_default("bedrock", Reply("hello from bedrock", usage=(7, 3)))
    config = provider_config(fake_llm, "bedrock")

    async def scenario(pool: HttpPool) -> Any:
        provider = BedrockProvider(config, http=pool, api_key=lambda: None)
        try:
            first = await provider.acomplete(ask("one"), timeout=30)
            loop = asyncio.get_running_loop()
            before = loop._default_executor.submitted  # type: ignore[attr-defined]
            rest = await asyncio.gather(
                *(provider.acomplete(ask(f"q{i}"), timeout=30) for i in range(20))
            )
            after = loop._default_executor.submitted  # type: ignore[attr-defined]
            return first, rest, after - before
        finally:
            provider.close()

    (first, rest, threaded), _ = _run(scenario)
    assert first.content == "hello from bedrock"
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (7, 3)
    assert [r.content for r in rest] == ["hello from bedrock"] * 20
    assert threaded == 0  # 20 calls, not one of them on a worker thread
    request = fake_llm.requests("bedrock")[-1]
    assert request.path.endswith("/converse")
    assert request.json["messages"][0]["role"] == "user"
    auth = request.headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-east-1/bedrock/aws4_request" in auth
    assert "x-amz-date" in request.headers


def test_acomplete_sends_what_complete_sends(fake_llm: FakeLLMServer) -> None:
    config = provider_config(fake_llm, "bedrock")
    request = ask("same", system="be brief", temperature=0.2, max_tokens=10)

    async def scenario(pool: HttpPool) -> Any:
        provider = BedrockProvider(config, http=pool, api_key=lambda: None)
        try:
            await provider.acomplete(request, timeout=30)
        finally:
            provider.close()

    _run(scenario)
    blocking_pool = HttpPool()
    provider = BedrockProvider(config, http=blocking_pool, api_key=lambda: None)
    try:
        provider.complete(request, timeout=30)
    finally:
        provider.close()
        blocking_pool.close()
    sent_async, sent_sync = fake_llm.requests("bedrock")
    assert sent_async.path == sent_sync.path
    assert sent_async.json == sent_sync.json


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [(Error(429, retry_after=3), RateLimited), (Error(400), InvalidRequestError)],
    ids=["429", "400"],
)
def test_acomplete_errors_carry_what_botocore_parses(
    fake_llm: FakeLLMServer, behaviour: Any, expected: type[Exception]
) -> None:
    fake_llm.script("bedrock", [behaviour])
    config = provider_config(fake_llm, "bedrock")

    async def scenario(pool: HttpPool) -> BaseException:
        provider = BedrockProvider(config, http=pool, api_key=lambda: None)
        try:
            with pytest.raises(expected) as info:
                await provider.acomplete(ask(), timeout=30)
            return info.value
        finally:
            provider.close()

    error, _ = _run(scenario)
    assert error.status_code == behaviour.status
    if isinstance(error, RateLimited):
        assert error.retry_after == 3


def test_agenerate_fails_over_from_bedrock(fake_llm: FakeLLMServer) -> None:
    fake_llm.down("bedrock")
    config = FlexiAIConfig(
        providers=[
            provider_config(fake_llm, "bedrock", priority=1),
            provider_config(fake_llm, "openai", priority=2),
        ],
        retry=RetryConfig(max_retries=0),
    )

    async def scenario(pool: HttpPool) -> Any:
        async with FlexiAI(config) as client:
            return await client.agenerate("hi")

    response, _ = _run(scenario)
    assert response.provider == "openai"
    assert response.metadata.failovers == ["bedrock"]
