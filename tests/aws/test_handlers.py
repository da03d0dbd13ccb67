"""The sample handlers in handlers/, driven with the sample events in events/ against
FakeLLMServer providers configured through FLEXIAI_* variables, as on Lambda."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexiai.aws.context import LocalLambdaContext
from flexiai.testing import Error, FakeLLMServer, Reply, Slow
from tests.aws.conftest import provider_env, read_event
from tests.support.llm_fixtures import fake_api_key

Context = Callable[..., LocalLambdaContext]
Loader = Callable[[str], ModuleType]


def body(response: dict[str, Any]) -> dict[str, Any]:
    assert response["headers"]["content-type"] == "application/json"
    parsed: dict[str, Any] = json.loads(response["body"])
    return parsed


@pytest.fixture
def generate(
    fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch, load_handler: Loader
) -> Callable[..., dict[str, Any]]:
    """``generate(event, context)`` through handlers/generate.py, two providers configured."""
    provider_env(
        monkeypatch,
        fake_llm,
        "openai",
        "anthropic",
        RETRY_MAX_RETRIES="0",
        CIRCUIT_BREAKER_FAILURE_THRESHOLD="1",
        CIRCUIT_BREAKER_RECOVERY_TIMEOUT="30",
    )
    handler: Callable[..., dict[str, Any]] = load_handler("generate").handler
    return handler


@pytest.mark.parametrize(
    ("name", "asked"),
    [
        ("generate.json", "Say hello in one word."),
        ("generate_function_url.json", "Say hello in one word."),  # base64 body
        ("generate_messages.json", "And when does it close again?"),
    ],
)
def test_each_sample_event_is_answered_by_the_first_provider(
    generate: Callable[..., dict[str, Any]], lambda_context: Context, name: str, asked: str
) -> None:
    context = lambda_context()
    response = generate(read_event(name), context)
    assert response["statusCode"] == 200
    assert body(response) == {
        "content": f"openai says: {asked}",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "usage": {
            "prompt_tokens": len(asked.split()),
            "completion_tokens": len(asked.split()) + 2,
            "total_tokens": 2 * len(asked.split()) + 2,
        },
        "request_id": context.aws_request_id,
        "attempts": 1,
        "failovers": [],
    }


def test_the_request_fields_reach_the_provider(
    generate: Callable[..., dict[str, Any]], lambda_context: Context, fake_llm: FakeLLMServer
) -> None:
    generate(read_event("generate_messages.json"), lambda_context())
    [sent] = fake_llm.requests("openai")
    assert sent.json["max_tokens"] == 200
    assert [m["role"] for m in sent.json["messages"]] == ["system", "user", "assistant", "user"]
    assert sent.headers["authorization"] == f"Bearer {fake_api_key('openai')}"


def test_a_failing_provider_fails_over_and_says_so(
    generate: Callable[..., dict[str, Any]], lambda_context: Context, fake_llm: FakeLLMServer
) -> None:
    fake_llm.script("openai", [Error(503)])
    response = generate(read_event("generate.json"), lambda_context())
    assert response["statusCode"] == 200
    answer = body(response)
    assert (answer["provider"], answer["failovers"], answer["attempts"]) == (
        "anthropic",
        ["openai"],
        2,
    )


def test_a_malformed_body_is_a_400_naming_the_problem(
    generate: Callable[..., dict[str, Any]], lambda_context: Context, fake_llm: FakeLLMServer
) -> None:
    context = lambda_context()
    response = generate(read_event("generate_bad_body.json"), context)
    assert response["statusCode"] == 400
    assert body(response) == {
        "error": {"type": "BadRequest", "message": "body is not valid JSON"},
        "request_id": context.aws_request_id,
    }
    assert fake_llm.count("openai") == 0


@pytest.mark.parametrize(
    ("raw_body", "message"),
    [
        ('{"prompt": "\\ud800"}', "prompt is not valid Unicode text"),
        (
            '{"messages": [{"role": "user", "content": "hi \\ud800"}]}',
            "messages[0].content is not valid Unicode text",
        ),
        ("[" * 100_000 + "]" * 100_000, "body is nested too deeply"),
        ('{"prompt": "a", "max_tokens": "many"}', "max_tokens must be an integer >= 1"),
    ],
    ids=["lone-surrogate-prompt", "lone-surrogate-message", "100k-deep", "wrong-type"],
)
def test_inputs_that_used_to_crash_the_handler_are_a_400_with_a_message(
    generate: Callable[..., dict[str, Any]],
    lambda_context: Context,
    fake_llm: FakeLLMServer,
    raw_body: str,
    message: str,
) -> None:
    event = {**read_event("generate.json"), "body": raw_body, "isBase64Encoded": False}
    response = generate(event, lambda_context())
    assert response["statusCode"] == 400
    error = body(response)["error"]
    assert error["type"] == "BadRequest"
    assert message in error["message"]
    assert fake_llm.count("openai") == 0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
_bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "prompt": st.text(max_size=20) | _json,
            "messages": st.lists(
                st.fixed_dictionaries(
                    {}, optional={"role": st.sampled_from(["user", "bot"]), "content": _json}
                ),
                max_size=2,
            ),
            "temperature": _json,
            "max_tokens": _json,
        },
    ).map(json.dumps),
    st.text(max_size=40),
    st.integers(min_value=1, max_value=120_000).map(lambda n: "[" * n + "]" * n),
)


@settings(
    max_examples=60,
    deadline=None,  # no timing: a slow machine is not a failure
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(raw_body=_bodies, b64=st.booleans())
def test_fuzzed_events_get_an_answer_or_a_4xx_never_a_crash(
    generate: Callable[..., dict[str, Any]],
    lambda_context: Context,
    raw_body: str,
    b64: bool,
) -> None:
    sent = raw_body
    if b64:
        sent = base64.b64encode(raw_body.encode("utf-8", "surrogatepass")).decode()
    event = {**read_event("generate.json"), "body": sent, "isBase64Encoded": b64}
    response = generate(event, lambda_context())
    assert response["statusCode"] in (200, 400)
    answer = body(response)
    if response["statusCode"] == 400:
        assert answer["error"]["message"]
    else:
        assert isinstance(answer["content"], str)


def test_a_request_a_provider_rejects_is_a_400_with_its_message(
    generate: Callable[..., dict[str, Any]], lambda_context: Context, fake_llm: FakeLLMServer
) -> None:
    fake_llm.script("openai", [Error(400, message="max_tokens is too large: 20")])
    response = generate(read_event("generate.json"), lambda_context())
    assert response["statusCode"] == 400
    error = body(response)["error"]
    assert (error["type"], error["message"], error["provider"]) == (
        "InvalidRequestError",
        "max_tokens is too large: 20",
        "openai",
    )
    assert fake_llm.count("anthropic") == 0  # it would reject it too


def test_every_provider_failing_is_a_502_listing_attempts_without_keys(
    generate: Callable[..., dict[str, Any]], lambda_context: Context, fake_llm: FakeLLMServer
) -> None:
    fake_llm.set_default("openai", Error(500, message=f"echo {fake_api_key('openai')}"))
    fake_llm.set_default("anthropic", Error(401, message="invalid x-api-key"))
    response = generate(read_event("generate.json"), lambda_context())
    assert response["statusCode"] == 502
    error = body(response)["error"]
    assert [(a["provider"], a["error_type"], a["status_code"]) for a in error["attempts"]] == [
        ("openai", "ProviderServerError", 500),
        ("anthropic", "ProviderAuthError", 401),
    ]
    assert fake_api_key("openai") not in response["body"]
    assert "[redacted]" in response["body"]


def test_all_breakers_open_is_a_503_with_retry_after(
    generate: Callable[..., dict[str, Any]], lambda_context: Context, fake_llm: FakeLLMServer
) -> None:
    fake_llm.down("openai")
    fake_llm.down("anthropic")
    assert generate(read_event("generate.json"), lambda_context())["statusCode"] == 502
    calls = fake_llm.count("openai") + fake_llm.count("anthropic")

    response = generate(read_event("generate.json"), lambda_context())  # both now open
    assert response["statusCode"] == 503
    retry_after = int(response["headers"]["retry-after"])
    # At most recovery_timeout (30 s), rounded up, and never below 1: how much of it is left
    # depends on how busy the machine was between the two requests.
    assert 1 <= retry_after <= 30
    error = body(response)["error"]
    assert error["retry_after"] == retry_after
    assert {a["error_type"] for a in error["attempts"]} == {"CircuitOpenError"}
    assert fake_llm.count("openai") + fake_llm.count("anthropic") == calls  # nobody was called


def test_a_slow_provider_is_cut_short_before_the_lambda_deadline_with_a_504(
    fake_llm: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
    load_handler: Loader,
    lambda_context: Context,
) -> None:
    """2.5 s left and a 1 s margin: the attempt gets 1.5 s, the provider needs 10 s."""
    provider_env(monkeypatch, fake_llm, "openai", RETRY_MAX_RETRIES="2")
    fake_llm.set_default("openai", Slow(10, Reply()))
    handler = load_handler("generate").handler
    context = lambda_context(timeout=2.5)
    response = handler(read_event("generate.json"), context)
    assert response["statusCode"] == 504
    error = body(response)["error"]
    assert error["type"] == "AllProvidersFailedError"
    assert [a["error_type"] for a in error["attempts"]] == ["ProviderTimeout"]
    assert context.get_remaining_time_in_millis() > 0  # answered before Lambda's deadline
    assert fake_llm.count("openai") == 1  # no retry that could not finish in time


def test_too_little_time_for_any_attempt_is_a_504_without_calling_anyone(
    fake_llm: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
    load_handler: Loader,
    lambda_context: Context,
) -> None:
    provider_env(monkeypatch, fake_llm, "openai", "anthropic")
    handler = load_handler("generate").handler
    response = handler(read_event("generate.json"), lambda_context(timeout=1.5))
    assert response["statusCode"] == 504
    error = body(response)["error"]
    assert error["type"] == "DeadlineExceededError"
    assert error["remaining_ms"] <= 500
    assert fake_llm.count("openai") == fake_llm.count("anthropic") == 0


def test_breaker_status_reports_every_provider_and_the_worker(
    fake_llm: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
    load_handler: Loader,
    lambda_context: Context,
) -> None:
    provider_env(monkeypatch, fake_llm, "openai", "anthropic", SYNC_WORKER_ID="worker-7")
    handler = load_handler("breaker_status").handler
    context = lambda_context()
    response = handler(read_event("breaker_status.json"), context)
    assert response["statusCode"] == 200
    status = body(response)
    assert status["worker_id"] == "worker-7"
    assert status["request_id"] == context.aws_request_id
    assert status["backend"] == {"enabled": False, "shared": False, "healthy": True}
    assert list(status["providers"]) == ["openai", "anthropic"]
    assert status["providers"]["openai"]["state"] == "CLOSED"
    assert status["providers"]["anthropic"]["priority"] == 2
    assert fake_llm.count("openai") == 0  # status never calls a provider


@pytest.mark.redis_server
def test_breaker_status_shows_the_state_the_fleet_shares_in_redis(
    fake_llm: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
    load_handler: Loader,
    lambda_context: Context,
    redis_server: Any,
) -> None:
    from flexiai import FlexiAI
    from flexiai.config import load_config

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "breaker-status")  # auto -> snapshot
    provider_env(
        monkeypatch,
        fake_llm,
        "openai",
        "anthropic",
        SYNC_ENABLED="true",
        SYNC_REDIS_HOST=redis_server.host,
        SYNC_REDIS_PORT=str(redis_server.port),
        CIRCUIT_BREAKER_FAILURE_THRESHOLD="1",
        RETRY_MAX_RETRIES="0",
    )
    fake_llm.down("openai")
    with FlexiAI(load_config()) as other_worker:
        assert other_worker.generate("hi").provider == "anthropic"  # opens openai fleet-wide

    response = load_handler("breaker_status").handler(
        read_event("breaker_status.json"), lambda_context()
    )
    status = body(response)
    assert status["backend"]["enabled"] is True
    assert status["backend"]["mode"] == "snapshot"
    assert status["backend"]["healthy"] is True
    assert status["backend"]["shared"] is True
    assert status["providers"]["openai"]["state"] == "OPEN"
    assert status["providers"]["openai"]["shared"] is True
    assert status["providers"]["anthropic"]["state"] == "CLOSED"


# -- Powertools as shipped: Tracer, Logger with the correlation id, Metrics --------------------


def _json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _cold_starts(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if "_aws" in d and "ColdStart" in d]


@pytest.mark.parametrize(
    ("module", "event_name"),
    [("generate", "generate.json"), ("breaker_status", "breaker_status.json")],
)
def test_each_handler_emits_one_cold_start_series_powertools_own(
    fake_llm: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
    load_handler: Loader,
    lambda_context: Context,
    capsys: pytest.CaptureFixture[str],
    fresh_execution_environment: None,
    module: str,
    event_name: str,
) -> None:
    import os

    provider_env(monkeypatch, fake_llm, "openai")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "FlexiAI")
    handler = load_handler(module).handler
    assert handler(read_event(event_name), lambda_context(name="fn-a"))["statusCode"] == 200
    [cold] = _cold_starts(_json_lines(capsys.readouterr().out))
    [metrics] = cold["_aws"]["CloudWatchMetrics"]
    assert metrics["Namespace"] == "FlexiAI"
    assert metrics["Dimensions"] == [["function_name", "service"]]
    assert metrics["Metrics"] == [{"Name": "ColdStart", "Unit": "Count"}]
    assert (cold["function_name"], cold["service"]) == (
        "fn-a",
        os.environ["POWERTOOLS_SERVICE_NAME"],
    )
    assert cold["ColdStart"] == [1.0]

    # Warm: no cold start at all, and no empty metrics document.
    assert handler(read_event(event_name), lambda_context(name="fn-a"))["statusCode"] == 200
    assert _cold_starts(_json_lines(capsys.readouterr().out)) == []


def test_flexiai_log_records_carry_api_gateway_request_id_as_correlation_id(
    fake_llm: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
    load_handler: Loader,
    lambda_context: Context,
    capsys: pytest.CaptureFixture[str],
) -> None:
    provider_env(monkeypatch, fake_llm, "openai", "anthropic", RETRY_MAX_RETRIES="0")
    generate = load_handler("generate").handler  # here: its Logger binds to capsys's stdout
    fake_llm.script("openai", [Error(503)])
    event = read_event("generate.json")
    context = lambda_context()
    assert generate(event, context)["statusCode"] == 200
    records = [d for d in _json_lines(capsys.readouterr().out) if "flexiai_event" in d]
    assert {r["flexiai_event"] for r in records} >= {"provider_failed", "failover"}
    for record in records:
        assert record["correlation_id"] == event["requestContext"]["requestId"]
        assert record["function_request_id"] == context.aws_request_id


def test_the_flexiai_subsegment_is_recorded_inside_the_handler_subsegment(
    generate: Callable[..., dict[str, Any]],
    lambda_context: Context,
    fake_llm: FakeLLMServer,
    xray_emitted: list[Any],
) -> None:
    fake_llm.script("openai", [Error(503)])
    assert generate(read_event("generate.json"), lambda_context())["statusCode"] == 200

    def walk(entities: list[Any]) -> Iterator[Any]:
        for entity in entities:
            yield entity
            yield from walk(list(getattr(entity, "subsegments", [])))

    names = {e.name: e for e in walk(xray_emitted)}
    assert "## handler" in names
    flexiai = names["## flexiai"]
    assert flexiai.annotations == {"flexiai_provider": "anthropic", "flexiai_failovers": 1}
    assert flexiai.parent_id == names["## handler"].id


def test_an_event_that_is_not_an_http_event_is_a_400(
    generate: Callable[..., dict[str, Any]], lambda_context: Context, fake_llm: FakeLLMServer
) -> None:
    response = generate({"prompt": "hi"}, lambda_context())
    assert response["statusCode"] == 400
    assert "not an HTTP event" in body(response)["error"]["message"]
    assert fake_llm.count("openai") == 0


def test_a_method_the_function_does_not_serve_is_a_404_in_the_same_error_shape(
    generate: Callable[..., dict[str, Any]], lambda_context: Context
) -> None:
    event = read_event("generate.json")
    event["requestContext"]["http"]["method"] = "GET"
    response = generate(event, lambda_context())
    assert response["statusCode"] == 404
    assert body(response)["error"]["type"] == "NotFound"
