"""Every provider response that cannot be used is a typed ``ProviderError``, and the client
fails over (issue 12, item 4): deep nesting, huge bodies, bad encodings, truncated bodies,
numbers Python cannot hold. The answers come byte for byte from a ``RawServer`` on loopback;
the second provider is the fake LLM server. A hypothesis fuzz sends arbitrary bodies and
statuses: only documented errors come out, and every call returns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from flexiai import FlexiAI
from flexiai.events import ClientEvent, ProviderCallFailed
from flexiai.exceptions import (
    InvalidRequestError,
    MalformedResponseError,
    ProviderConnectionError,
    ProviderError,
    RateLimited,
)
from flexiai.models import FlexiAIConfig, ProviderConfig, RetryConfig
from flexiai.providers import provider_class
from flexiai.providers.base import MAX_RESPONSE_BYTES, Provider
from flexiai.providers.transport import HttpPool
from flexiai.testing import FakeLLMServer
from tests.providers.conftest import KINDS, ask
from tests.providers.raw_server import RawReply, RawServer, json_reply
from tests.providers.test_deadlines import ANSWERS
from tests.support.llm_fixtures import provider_config

DEEP = b'{"choices":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
HEAD_ONLY = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"

#: name -> (reply, the error every adapter raises for it)
UNUSABLE: dict[str, tuple[RawReply, type[ProviderError]]] = {
    "100k-deep-200": (json_reply(DEEP), MalformedResponseError),
    "not-utf8": (json_reply(b'\xff\xfe\xfa{"a": 1}'), MalformedResponseError),
    "huge-declared": (json_reply(b"", content_length=10**12), MalformedResponseError),
    "huge-undeclared": (
        RawReply(HEAD_ONLY, b'{"x": "' + b"a" * (MAX_RESPONSE_BYTES + 1) + b'"}'),
        MalformedResponseError,
    ),
    "truncated-stream": (
        json_reply(b'{"choices": [', content_length=4096),
        ProviderConnectionError,
    ),
    "truncated-json": (
        json_reply(b'{"choices": [{"message": {"content": "x'),
        MalformedResponseError,
    ),
    "empty-200": (json_reply(b""), MalformedResponseError),
    "json-null": (json_reply(b"null"), MalformedResponseError),
}

#: Shapes that only trip one adapter's reading, in that adapter's own format.
INFINITE_TOKENS = {
    "openai": {
        "choices": [{"message": {"content": "x"}}],
        "usage": {"prompt_tokens": "Infinity"},
    },
    "anthropic": {"content": [{"type": "text", "text": "x"}], "usage": {"input_tokens": 1e400}},
    "gemini": {
        "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 1e400},
    },
}


def config_for(kind: str, url: str, name: str = "primary", **kw: Any) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        kind=kind,
        model="anthropic.claude-3-haiku-20240307-v1:0" if kind == "bedrock" else "m-1",
        base_url=url,
        api_key=SecretStr(f"sk-test-{name}-SECRET"),
        **kw,
    )


@pytest.fixture
def adapter(pool: HttpPool) -> Iterator[Any]:
    made: list[Provider] = []

    def make(kind: str, url: str) -> Provider:
        provider = provider_class(kind)(config_for(kind, url), http=pool, api_key=lambda: "k")
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(UNUSABLE))
def test_an_unusable_answer_is_a_typed_provider_error(adapter: Any, kind: str, case: str) -> None:
    reply, expected = UNUSABLE[case]
    with RawServer(reply) as raw:
        with pytest.raises(expected) as info:
            adapter(kind, raw.url).complete(ask(), timeout=10)

    assert info.value.retryable  # so the client retries or fails over
    assert info.value.provider == "primary"


@pytest.mark.parametrize("kind", KINDS)
def test_a_100k_deep_error_body_is_still_classified_by_status(adapter: Any, kind: str) -> None:
    with RawServer(json_reply(DEEP, status=503)) as raw:
        with pytest.raises(ProviderError) as info:
            adapter(kind, raw.url).complete(ask(), timeout=10)

    assert info.value.retryable


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_a_content_encoding_that_does_not_decode_is_malformed(adapter: Any, kind: str) -> None:
    reply = json_reply(b"certainly not gzip", headers={"content-encoding": "gzip"})
    with RawServer(reply) as raw:
        with pytest.raises(MalformedResponseError):
            adapter(kind, raw.url).complete(ask(), timeout=10)


@pytest.mark.parametrize("kind", sorted(INFINITE_TOKENS))
def test_token_counts_python_cannot_hold_are_malformed(adapter: Any, kind: str) -> None:
    body = json.dumps(INFINITE_TOKENS[kind]).replace('"Infinity"', "Infinity").encode()
    with RawServer(json_reply(body)) as raw:
        with pytest.raises(MalformedResponseError):
            adapter(kind, raw.url).complete(ask(), timeout=10)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("value", ["1e309", "inf", "nan", "-5", "Tue, 99 Foo 99999 00:00:00"])
def test_a_retry_after_nobody_can_honour_is_unknown_or_now(
    adapter: Any, kind: str, value: str
) -> None:
    reply = json_reply(
        {"error": {"message": "slow down"}}, status=429, headers={"retry-after": value}
    )
    with RawServer(reply) as raw:
        with pytest.raises(RateLimited) as info:
            adapter(kind, raw.url).complete(ask(), timeout=10)

    assert info.value.retry_after in (None, 0.0)


def test_a_gemini_error_detail_of_the_wrong_type_falls_back_to_the_status(adapter: Any) -> None:
    body = {"error": {"message": "bad", "details": [{"reason": ["API_KEY_INVALID"]}]}}
    with RawServer(json_reply(body, status=400)) as raw:
        with pytest.raises(InvalidRequestError):
            adapter("gemini", raw.url).complete(ask(), timeout=10)


# -- the client fails over -------------------------------------------------------------------


class Failures:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, event: ClientEvent) -> None:
        if isinstance(event, ProviderCallFailed):
            self.seen.append((event.provider, event.error_type))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", ["100k-deep-200", "not-utf8", "huge-declared", "truncated-stream"])
def test_the_client_fails_over_from_an_unusable_answer(
    fake_llm: FakeLLMServer, kind: str, case: str
) -> None:
    reply, expected = UNUSABLE[case]
    with RawServer(reply) as raw:
        config = FlexiAIConfig(
            providers=[
                config_for(kind, raw.url, priority=1),
                provider_config(fake_llm, "backup", kind="openai", priority=2),
            ],
            retry=RetryConfig(max_retries=0),
        )
        failures = Failures()
        with FlexiAI(config) as client:
            client.add_listener(failures)
            response = client.generate("hello")

    assert response.provider == "backup"
    assert failures.seen == [("primary", expected.__name__)]


# -- requests that cannot be sent ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_lone_surrogate_in_a_message_is_an_invalid_request_sent_nowhere(
    adapter: Any, kind: str
) -> None:
    with RawServer(json_reply(ANSWERS[kind])) as raw:
        with pytest.raises(InvalidRequestError) as info:
            adapter(kind, raw.url).complete(ask("bad \ud800 text"), timeout=10)

        assert raw.count == 0
    assert not info.value.counts_toward_breaker
    assert "\ud800" not in str(info.value)


# -- fuzz ------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def shaped(kind: str) -> st.SearchStrategy[Any]:
    """Bodies near each API's own shape, where an adapter's reading is most exposed."""
    answer = ANSWERS[kind]
    return st.builds(
        lambda key, value: {**answer, key: value}, st.sampled_from(sorted(answer)), json_values
    )


def body_bytes(kind: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        shaped(kind).map(lambda v: json.dumps(v).encode()),
        st.integers(min_value=1, max_value=3000).map(lambda n: b"[" * n + b"]" * n),
    )


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[RawServer]:
    with RawServer(json_reply(b"{}")) as raw:
        yield raw


@pytest.mark.parametrize("kind", KINDS)
@settings(
    max_examples=60,
    deadline=None,  # no timing: a slow machine is not a failure
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_answers_raise_only_documented_errors(
    fuzz_server: RawServer, pool: HttpPool, kind: str, data: st.DataObject
) -> None:
    status = data.draw(st.sampled_from([200, 200, 200, 201, 204, 302, 400, 401, 404, 429, 500]))
    body = data.draw(body_bytes(kind))
    headers = data.draw(
        st.dictionaries(
            st.sampled_from(["retry-after", "content-encoding", "content-type"]),
            st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
            max_size=2,
        )
    )
    fuzz_server.answer_with(json_reply(body, status=status, headers=headers))
    provider = provider_class(kind)(
        config_for(kind, fuzz_server.url), http=pool, api_key=lambda: "k"
    )
    outcome: Any
    try:
        outcome = provider.complete(ask(), timeout=10)
    except ProviderError as exc:  # documented: anything else fails the test by escaping
        outcome = exc
    finally:
        provider.close()
    if isinstance(outcome, ProviderError):
        assert outcome.provider == "primary"
    else:
        assert isinstance(outcome.content, str)
