"""Hard deadlines (issue 12, item 3): a provider that trickles its headers or its body one
byte a second never holds an attempt past its timeout. httpx's timeouts are per read, and
each byte arrives well within one, so only a deadline on the whole exchange ends it.

Every test asserts behaviour: the attempt ended with ``ProviderTimeout`` and the client
answered from the next provider. Without the deadline the trickle completes and the first
provider answers, so the assertions fail; none of them reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from flexiai import FlexiAI
from flexiai.events import ClientEvent, ProviderCallFailed
from flexiai.exceptions import ProviderTimeout
from flexiai.models import FlexiAIConfig, ProviderConfig, RetryConfig
from flexiai.providers.transport import HttpPool
from flexiai.testing import FakeLLMServer
from tests.providers.conftest import ask
from tests.providers.raw_server import RawReply, RawServer, json_reply
from tests.support.llm_fixtures import provider_config

#: One byte a second with a 2 s timeout: the case issue 12 measured at 49 s.
INTERVAL = 1.0
TIMEOUT = 2.0

ANSWERS: dict[str, Any] = {
    "openai": {"choices": [{"message": {"role": "assistant", "content": "from the trickle"}}]},
    "anthropic": {"content": [{"type": "text", "text": "from the trickle"}]},
    "gemini": {
        "candidates": [
            {"content": {"parts": [{"text": "from the trickle"}]}, "finishReason": "STOP"}
        ]
    },
    "bedrock": {
        "output": {"message": {"role": "assistant", "content": [{"text": "from the trickle"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
    },
}


def trickle(kind: str, where: str) -> RawReply:
    """A valid answer whose head (status line and headers) or body arrives a byte a second."""
    reply = json_reply(ANSWERS[kind])
    if where == "headers":
        return RawReply(reply.head, reply.body, head_interval=INTERVAL)
    return RawReply(reply.head, reply.body, body_interval=INTERVAL)


def trickling_provider(kind: str, url: str) -> ProviderConfig:
    return ProviderConfig(
        name="primary",
        kind=kind,
        model="m-1" if kind != "bedrock" else "anthropic.claude-3-haiku-20240307-v1:0",
        base_url=url,
        api_key=SecretStr("sk-test-primary-SECRET"),
        timeout=TIMEOUT,
        max_retries=0,
        priority=1,
    )


class Recorder:
    def __init__(self) -> None:
        self.failed: list[ProviderCallFailed] = []

    def __call__(self, event: ClientEvent) -> None:
        if isinstance(event, ProviderCallFailed):
            self.failed.append(event)


@pytest.fixture
def pair(fake_llm: FakeLLMServer) -> Iterator[Any]:
    """``make(kind, reply)``: a client whose first provider is a ``RawServer`` sending
    ``reply`` and whose second is the fake LLM server; yields the clients' recorder too."""
    servers: list[RawServer] = []
    clients: list[FlexiAI] = []

    def make(kind: str, reply: RawReply) -> tuple[FlexiAI, Recorder, RawServer]:
        raw = RawServer(reply).__enter__()
        servers.append(raw)
        backup = provider_config(fake_llm, "backup", kind="openai", priority=2, timeout=10)
        config = FlexiAIConfig(
            providers=[trickling_provider(kind, raw.url), backup],
            retry=RetryConfig(max_retries=0),
        )
        client = FlexiAI(config)
        recorder = Recorder()
        client.add_listener(recorder)
        clients.append(client)
        return client, recorder, raw

    yield make
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def assert_failed_over(response: Any, recorder: Recorder, raw: RawServer) -> None:
    assert raw.count == 1  # the trickling provider was really asked
    assert [(f.provider, f.error_type) for f in recorder.failed] == [("primary", "ProviderTimeout")]
    assert response.provider == "backup"
    assert response.metadata["failovers"] == ["primary"]


HTTP_KINDS = ("openai", "anthropic", "gemini")


@pytest.mark.parametrize("where", ["headers", "body"])
def test_sync_trickle_ends_the_attempt_and_fails_over(pair: Any, where: str) -> None:
    client, recorder, raw = pair("openai", trickle("openai", where))

    response = client.generate("hello")

    assert_failed_over(response, recorder, raw)


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["headers", "body"])
async def test_async_trickle_ends_the_attempt_and_fails_over(pair: Any, where: str) -> None:
    client, recorder, raw = pair("openai", trickle("openai", where))

    response = await client.agenerate("hello")
    await client.aclose()

    assert_failed_over(response, recorder, raw)


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_every_http_adapter_is_bounded_the_same_way(pair: Any, kind: str) -> None:
    client, recorder, raw = pair(kind, trickle(kind, "headers"))

    response = client.generate("hello")

    assert_failed_over(response, recorder, raw)


def test_a_trickle_is_a_provider_timeout_at_the_adapter(pool: HttpPool) -> None:
    """The adapter alone, without the client: the error is the documented timeout."""
    from flexiai.providers.openai import OpenAIProvider

    with RawServer(trickle("openai", "body")) as raw:
        provider = OpenAIProvider(
            trickling_provider("openai", raw.url), http=pool, api_key=lambda: "sk-x"
        )
        with pytest.raises(ProviderTimeout) as info:
            provider.complete(ask(), timeout=TIMEOUT)

    assert info.value.retryable
    assert info.value.provider == "primary"


def test_an_untrickled_answer_from_the_same_server_is_read(pool: HttpPool) -> None:
    """The control: the raw server's answer is a valid one when it is not paced."""
    from flexiai.providers.openai import OpenAIProvider

    with RawServer(json_reply(ANSWERS["openai"])) as raw:
        provider = OpenAIProvider(
            trickling_provider("openai", raw.url), http=pool, api_key=lambda: "sk-x"
        )
        response = provider.complete(ask(), timeout=TIMEOUT)

    assert response.content == "from the trickle"


@pytest.mark.parametrize("where", ["headers", "body"])
def test_bedrock_trickle_ends_the_attempt_and_fails_over(pair: Any, where: str) -> None:
    """Bedrock is signed by botocore and sent through the same bounded pool."""
    client, recorder, raw = pair("bedrock", trickle("bedrock", where))

    response = client.generate("hello")

    assert_failed_over(response, recorder, raw)
    assert b"/model/" in raw.requests[0] and b"AWS4-HMAC-SHA256" in raw.requests[0]


@pytest.mark.anyio
async def test_async_bedrock_trickle_ends_the_attempt_and_fails_over(pair: Any) -> None:
    client, recorder, raw = pair("bedrock", trickle("bedrock", "body"))

    response = await client.agenerate("hello")
    await client.aclose()

    assert_failed_over(response, recorder, raw)


def test_bedrock_reads_an_untrickled_answer_from_the_raw_server(pair: Any) -> None:
    """The control for the Bedrock cases: the same bytes, unpaced, are an answer."""
    client, recorder, _ = pair("bedrock", json_reply(ANSWERS["bedrock"]))

    response = client.generate("hello")

    assert (response.provider, response.content) == ("primary", "from the trickle")
    assert recorder.failed == []
