"""Parsing HTTP events and mapping flexiai's errors onto status codes, without a handler."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import Response
from hypothesis import given, settings
from hypothesis import strategies as st

from flexiai import FlexiAI
from flexiai._deadline import deadline
from flexiai.aws import http_events
from flexiai.aws.http_events import (
    BadRequestError,
    GenerateRequest,
    json_response,
    parse_generate_request,
)
from flexiai.circuit_breaker import BreakerRecord, BreakerSnapshot, CircuitState
from flexiai.exceptions import (
    AllProvidersFailedError,
    AttemptRecord,
    CircuitOpenError,
    DeadlineExceededError,
    InvalidRequestError,
    ProviderServerError,
    ProviderTimeout,
)
from flexiai.models import FlexiAIConfig, ProviderConfig


def event(body: Any, *, raw: bool = False, b64: bool = False) -> dict[str, Any]:
    text = body if raw else json.dumps(body)
    if b64:
        text = base64.b64encode(text.encode()).decode()
    return {"version": "2.0", "body": text, "isBase64Encoded": b64}


@pytest.fixture
def client() -> Iterator[FlexiAI]:
    config = FlexiAIConfig(
        providers=[
            ProviderConfig(name="openai", model="m", api_key="k", min_timeout=1.0),
            ProviderConfig(name="anthropic", model="m", api_key="k", min_timeout=2.0),
        ]
    )
    with FlexiAI(config) as client:  # never called: no connection is made
        yield client


def test_a_prompt_becomes_one_user_message() -> None:
    request = parse_generate_request(event({"prompt": "hi", "temperature": 0, "max_tokens": 5}))
    assert request == GenerateRequest([{"role": "user", "content": "hi"}], None, 0.0, 5)


def test_messages_and_a_system_prompt_are_kept_in_order() -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    request = parse_generate_request(event({"messages": messages, "system": "be brief"}))
    assert request.messages == messages
    assert request.system == "be brief"


def test_a_base64_body_is_decoded() -> None:
    request = parse_generate_request(event({"prompt": "héllo"}, b64=True))
    assert request.messages[0]["content"] == "héllo"


@pytest.mark.parametrize(
    ("evt", "message"),
    [
        ({"version": "2.0"}, "body is missing"),
        (event("{nope", raw=True), "body is not valid JSON"),
        (event("!!!", raw=True, b64=True), "body is not valid JSON"),
        ({"body": "***", "isBase64Encoded": True}, "body is not valid base64"),
        (
            {"body": base64.b64encode(b"\xff\xfe").decode(), "isBase64Encoded": True},
            "body is not UTF-8",
        ),
        (event(["prompt"]), "body must be a JSON object"),
        (event({}), "body must contain 'prompt' or 'messages'"),
        (event({"system": "x"}), "body must contain 'prompt' or 'messages'"),
        (event({"prompt": "a", "messages": []}), "not both"),
        (event({"prompt": ""}), "prompt must be a non-empty string"),
        (event({"prompt": 3}), "prompt must be a non-empty string"),
        (event({"prompt": "a", "temperature": "hot"}), "temperature must be a number"),
        (event({"prompt": "a", "temperature": True}), "temperature must be a number"),
        (event({"prompt": "a", "temperature": -1}), "temperature must be a finite number >= 0"),
        (event({"prompt": "a", "max_tokens": 0}), "max_tokens must be an integer >= 1"),
        (event({"prompt": "a", "max_tokens": 2.5}), "max_tokens must be an integer >= 1"),
        (event({"prompt": "a", "system": 1}), "system must be a string"),
        (event({"prompt": "a", "temprature": 1}), "unknown field(s) 'temprature'"),
        (event({"messages": []}), "messages must be a non-empty list"),
        (event({"messages": ["hi"]}), "messages[0] must be an object"),
        (
            event({"messages": [{"role": "bot", "content": "x"}]}),
            "messages[0].role must be one of system, user, assistant",
        ),
        (
            event({"messages": [{"role": "user", "content": None}]}),
            "messages[0].content must be a string",
        ),
        (
            event({"messages": [{"role": "user", "content": "x", "name": "a"}]}),
            "messages[0] has unknown field(s) 'name'",
        ),
        # issue 12, item 4: inputs that used to crash the handler with a 500
        (
            event('{"prompt": "a \\ud800 b"}', raw=True),
            "prompt is not valid Unicode text (a lone surrogate at position 2)",
        ),
        (
            event('{"prompt": "ok", "system": "\\udfff"}', raw=True),
            "system is not valid Unicode text",
        ),
        (
            event('{"messages": [{"role": "user", "content": "\\ud83d"}]}', raw=True),
            "messages[0].content is not valid Unicode text",
        ),
        (event("[" * 100_000 + "]" * 100_000, raw=True), "body is nested too deeply"),
        (
            event('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}", raw=True),
            "body is nested too deeply",
        ),
        (
            event({"prompt": "a", "temperature": 10**400}),
            "temperature must be a finite number >= 0",
        ),
        (
            event('{"prompt": "a", "temperature": NaN}', raw=True),
            "temperature must be a finite number >= 0",
        ),
        (
            event('{"prompt": "a", "max_tokens": ' + "9" * 5000 + "}", raw=True),
            "body is not valid JSON",
        ),
        (event({"prompt": "x" * (6 * 1024 * 1024)}), "body is too large"),
        ({"body": {"prompt": "a"}}, "body must be a string"),
        ("not an event", "the event is not an HTTP event"),
    ],
)
def test_malformed_bodies_are_rejected_with_the_reason(evt: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_generate_request(evt)
    assert message in str(info.value)


def test_a_surrogate_pair_written_as_escapes_is_one_valid_character() -> None:
    """The control for the lone-surrogate cases: a pair decodes to one real character."""
    request = parse_generate_request(event('{"prompt": "\\ud83d\\ude00"}', raw=True))
    assert request.messages[0]["content"] == "\U0001f600"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "prompt": json_values,
        "messages": st.lists(
            st.fixed_dictionaries({}, optional={"role": json_values, "content": json_values}),
            max_size=3,
        )
        | json_values,
        "system": json_values,
        "temperature": json_values,
        "max_tokens": json_values,
    },
)
events = st.one_of(
    request_like.map(event),
    json_values.map(event),
    st.text(max_size=50).map(lambda text: event(text, raw=True)),
    st.integers(min_value=1, max_value=200_000).map(
        lambda depth: event("[" * depth + "]" * depth, raw=True)
    ),
    st.dictionaries(st.text(max_size=15), json_values, max_size=3),
    json_values,
)


@settings(max_examples=300, deadline=None)
@given(evt=events)
def test_fuzzed_events_are_a_request_or_a_bad_request_nothing_else(evt: Any) -> None:
    outcome: GenerateRequest | BadRequestError
    try:
        outcome = parse_generate_request(evt)
    except BadRequestError as exc:  # anything else escapes and fails the test
        outcome = exc
    if isinstance(outcome, BadRequestError):
        assert str(outcome)  # a message for the caller, which a 400 response can carry:
        json.dumps({"message": str(outcome)})
        return
    request = outcome
    assert request.messages
    for message in request.messages:
        message["content"].encode("utf-8")  # what passed can be sent to a provider


def test_a_json_response_is_a_powertools_response_with_a_json_body() -> None:
    response = json_response(201, {"a": 1}, {"x-extra": "1"})
    assert isinstance(response, Response)
    assert response.status_code == 201
    assert response.headers == {"content-type": "application/json", "x-extra": "1"}
    assert response.body == '{"a":1}'


def error_response(*args: Any) -> dict[str, Any]:
    """The mapping's answer as the resolver hands it to API Gateway (status, headers, body)."""
    response = http_events.error_response(*args)
    return {"statusCode": response.status_code, "headers": response.headers, "body": response.body}


def body(response: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(response["body"])
    return parsed


def circuit_open(provider: str) -> CircuitOpenError:
    record = BreakerRecord(state=CircuitState.OPEN)
    return CircuitOpenError(
        BreakerSnapshot.from_record(provider, record, shared=False, now=0, window_ms=60_000)
    )


def test_all_breakers_open_is_a_503_with_retry_after_rounded_up(client: FlexiAI) -> None:
    attempts = [
        AttemptRecord("openai", circuit_open("openai"), skipped=True),
        AttemptRecord("anthropic", circuit_open("anthropic"), skipped=True),
    ]
    response = error_response(AllProvidersFailedError(attempts, retry_after=12.2), client, "r1")
    assert response["statusCode"] == 503
    assert response["headers"]["retry-after"] == "13"
    assert body(response)["error"]["retry_after"] == 13
    assert body(response)["request_id"] == "r1"


def test_retry_after_is_never_below_one_second(client: FlexiAI) -> None:
    attempts = [AttemptRecord("openai", circuit_open("openai"), skipped=True)]
    response = error_response(AllProvidersFailedError(attempts, retry_after=0.0), client, None)
    assert response["headers"]["retry-after"] == "1"


def test_failed_providers_are_a_502_listing_each_attempt(client: FlexiAI) -> None:
    attempts = [
        AttemptRecord(
            "openai", ProviderServerError("overloaded", provider="openai", status_code=503)
        ),
        AttemptRecord("anthropic", circuit_open("anthropic"), skipped=True),
    ]
    response = error_response(AllProvidersFailedError(attempts), client, None)
    assert response["statusCode"] == 502
    assert "retry-after" not in response["headers"]
    assert body(response)["error"]["attempts"] == [
        {
            "provider": "openai",
            "error_type": "ProviderServerError",
            "status_code": 503,
            "message": "overloaded",
            "skipped": False,
        },
        {
            "provider": "anthropic",
            "error_type": "CircuitOpenError",
            "status_code": None,
            "message": "circuit OPEN",
            "skipped": True,
        },
    ]


def test_a_provider_skipped_for_lack_of_time_makes_it_a_504(client: FlexiAI) -> None:
    attempts = [
        AttemptRecord("openai", ProviderTimeout("timed out", provider="openai")),
        AttemptRecord("anthropic", DeadlineExceededError(remaining=0.2, needed=1.0), skipped=True),
    ]
    response = error_response(AllProvidersFailedError(attempts), client, None)
    assert response["statusCode"] == 504


def test_a_timeout_with_no_time_left_for_another_attempt_is_a_504(client: FlexiAI) -> None:
    attempts = [AttemptRecord("openai", ProviderTimeout("timed out", provider="openai"))]
    with deadline(0.5):  # less than the shortest attempt (openai's min_timeout, 1 s)
        response = error_response(AllProvidersFailedError(attempts), client, None)
    assert response["statusCode"] == 504
    with deadline(5):  # time was left: the providers failed, not the clock
        response = error_response(AllProvidersFailedError(attempts), client, None)
    assert response["statusCode"] == 502


def test_deadline_exceeded_is_a_504(client: FlexiAI) -> None:
    response = error_response(DeadlineExceededError(remaining=0.25, needed=1.0), client, "r")
    assert response["statusCode"] == 504
    assert body(response)["error"] == {
        "type": "DeadlineExceededError",
        "message": "deadline too close: 250 ms left, an attempt needs at least 1000 ms",
        "remaining_ms": 250,
    }


def test_an_invalid_request_is_a_400_with_the_providers_message(client: FlexiAI) -> None:
    exc = InvalidRequestError("max_tokens is too large", provider="openai", status_code=400)
    response = error_response(exc, client, None)
    assert response["statusCode"] == 400
    assert body(response)["error"] == {
        "type": "InvalidRequestError",
        "message": "max_tokens is too large",
        "provider": "openai",
        "status_code": 400,
    }
