"""``flexiai_handler`` under the real Powertools stack, against a FakeLLMServer.

Logs and EMF documents are read back from stdout, where Powertools writes them on Lambda.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aws_lambda_powertools import Logger, Metrics, Tracer

from flexiai import FlexiAI
from flexiai._deadline import remaining_time
from flexiai.aws import NoInvocationError, current_client, flexiai_handler
from flexiai.aws.context import LocalLambdaContext
from flexiai.exceptions import AllProvidersFailedError, ConfigError
from flexiai.models import (
    CircuitBreakerConfig,
    FlexiAIConfig,
    RetryConfig,
    SyncConfig,
)
from flexiai.testing import Error, FakeLLMServer
from tests.aws.conftest import provider_env
from tests.support.llm_fixtures import provider_config

Context = Callable[..., LocalLambdaContext]


def config_for(
    server: FakeLLMServer,
    *names: str,
    threshold: int = 5,
    sync: SyncConfig | None = None,
) -> FlexiAIConfig:
    return FlexiAIConfig(
        providers=[provider_config(server, n, priority=i) for i, n in enumerate(names, 1)],
        circuit_breaker=CircuitBreakerConfig(failure_threshold=threshold, recovery_timeout=30),
        retry=RetryConfig(max_retries=0),
        sync=sync or SyncConfig(worker_id="worker-a"),
    )


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def emf_documents(docs: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """EMF documents carrying ``metric``, whatever else they carry."""
    found: list[dict[str, Any]] = []
    for doc in docs:
        directives = doc.get("_aws", {}).get("CloudWatchMetrics", [])
        found.extend(doc for d in directives if any(m["Name"] == metric for m in d["Metrics"]))
    return found


def dimension_sets(doc: dict[str, Any]) -> list[list[str]]:
    sets: list[list[str]] = doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    return [sorted(s) for s in sets]


def log_records(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("flexiai_event") == kind]


# -- one client per execution environment --------------------------------------------------


def test_the_client_is_built_on_the_first_invocation_and_reused_while_warm(
    fake_llm: FakeLLMServer, lambda_context: Context
) -> None:
    built: list[FlexiAI] = []

    def factory() -> FlexiAI:
        client = FlexiAI(config_for(fake_llm, "openai"))
        built.append(client)
        return client

    @flexiai_handler(client_factory=factory)
    def handler(event: Any, context: Any) -> FlexiAI:
        return current_client()

    assert built == []  # decorating (the init phase) builds nothing
    first = handler({}, lambda_context())
    second = handler({}, lambda_context())
    assert built == [first]
    assert second is first


def test_each_decorated_handler_has_its_own_client(
    fake_llm: FakeLLMServer, lambda_context: Context
) -> None:
    config = config_for(fake_llm, "openai")

    @flexiai_handler(config=config)
    def one(event: Any, context: Any) -> FlexiAI:
        return current_client()

    @flexiai_handler(config=config)
    def two(event: Any, context: Any) -> FlexiAI:
        return current_client()

    assert one({}, lambda_context()) is not two({}, lambda_context())
    assert one({}, lambda_context()) is one({}, lambda_context())


def test_by_default_the_client_comes_from_the_flexiai_environment(
    fake_llm: FakeLLMServer, lambda_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider_env(monkeypatch, fake_llm, "openai", "anthropic")

    @flexiai_handler
    def handler(event: Any, context: Any) -> dict[str, Any]:
        client = current_client()
        answer = client.generate(event["prompt"])
        return {"providers": [p.name for p in client.config.providers], "content": answer.content}

    result = handler({"prompt": "hello"}, lambda_context())
    assert result == {"providers": ["openai", "anthropic"], "content": "openai says: hello"}


def test_a_failed_build_is_not_kept_so_the_next_invocation_tries_again(
    fake_llm: FakeLLMServer, lambda_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    @flexiai_handler
    def handler(event: Any, context: Any) -> str:
        return current_client().generate("hi").content

    with pytest.raises(ConfigError, match="no providers configured"):
        handler({}, lambda_context())
    provider_env(monkeypatch, fake_llm, "openai")
    assert handler({}, lambda_context()) == "openai says: hi"


def test_current_client_outside_an_invocation_raises_a_clear_error() -> None:
    with pytest.raises(NoInvocationError, match=r"@flexiai_handler"):
        current_client()


def test_current_client_is_unset_again_after_the_invocation(
    fake_llm: FakeLLMServer, lambda_context: Context
) -> None:
    @flexiai_handler(config=config_for(fake_llm, "openai"))
    def handler(event: Any, context: Any) -> None:
        current_client()

    handler({}, lambda_context())
    with pytest.raises(NoInvocationError):
        current_client()


def test_config_and_client_factory_together_are_rejected_at_decoration() -> None:
    with pytest.raises(TypeError, match="not both"):
        flexiai_handler(
            config=FlexiAIConfig(providers=[{"name": "openai", "model": "m", "api_key": "k"}]),
            client_factory=lambda: FlexiAI(),
        )


def test_a_negative_safety_margin_is_rejected_at_decoration() -> None:
    with pytest.raises(ConfigError, match="safety_margin_ms"):
        flexiai_handler(safety_margin_ms=-1)


def test_a_bad_safety_margin_variable_names_the_variable(
    fake_llm: FakeLLMServer, lambda_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEXIAI_LAMBDA_SAFETY_MARGIN_MS", "soon")

    @flexiai_handler(config=config_for(fake_llm, "openai"))
    def handler(event: Any, context: Any) -> None:
        return None

    with pytest.raises(ConfigError, match="FLEXIAI_LAMBDA_SAFETY_MARGIN_MS"):
        handler({}, lambda_context())


# -- deadline ----------------------------------------------------------------------------------


def test_calls_are_limited_by_the_time_left_minus_the_safety_margin(
    fake_llm: FakeLLMServer, lambda_context: Context
) -> None:
    @flexiai_handler(config=config_for(fake_llm, "openai"), safety_margin_ms=500)
    def handler(event: Any, context: Any) -> float | None:
        return remaining_time()

    left = handler({}, lambda_context(timeout=10))
    assert left is not None
    assert 9.0 < left <= 9.5
    assert remaining_time() is None  # only inside the invocation


def test_the_safety_margin_defaults_to_the_environment_variable(
    fake_llm: FakeLLMServer, lambda_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEXIAI_LAMBDA_SAFETY_MARGIN_MS", "2500")

    @flexiai_handler(config=config_for(fake_llm, "openai"))
    def handler(event: Any, context: Any) -> float | None:
        return remaining_time()

    left = handler({}, lambda_context(timeout=10))
    assert left is not None
    assert 7.0 < left <= 7.5


# -- breaker refresh, logs and metrics --------------------------------------------------------


def test_every_invocation_starts_from_the_fleets_breaker_state(
    fake_llm: FakeLLMServer, lambda_context: Context, capsys: pytest.CaptureFixture[str]
) -> None:
    """Snapshot mode with a long max age: only the middleware's refresh can explain that
    the second invocation sees the breaker another worker opened meanwhile."""
    shared = {"enabled": True, "backend": "memory", "mode": "snapshot", "snapshot_max_age": 60}

    @flexiai_handler(
        config=config_for(
            fake_llm,
            "openai",
            "anthropic",
            threshold=1,
            sync=SyncConfig(**shared, worker_id="worker-a"),
        )
    )
    def handler(event: Any, context: Any) -> str:
        return current_client().generate("hi").provider

    assert handler({}, lambda_context()) == "openai"  # builds the client, reads a snapshot
    fake_llm.set_default("openai", Error(503))
    other = FlexiAI(
        config_for(fake_llm, "openai", threshold=1, sync=SyncConfig(**shared, worker_id="worker-b"))
    )
    with pytest.raises(AllProvidersFailedError):
        other.generate("hi")  # worker-b opens openai's breaker for the fleet
    other.close()
    capsys.readouterr()
    calls_before = fake_llm.count("openai")

    context = lambda_context()
    assert handler({}, context) == "anthropic"
    assert fake_llm.count("openai") == calls_before  # skipped: the refresh saw it open

    docs = json_lines(capsys.readouterr().out)
    [change] = [r for r in log_records(docs, "breaker_changed") if r["provider"] == "openai"]
    assert change["remote"] is True
    assert change["new_state"] == "OPEN"
    assert change["request_id"] == context.aws_request_id
    assert emf_documents(docs, "CircuitOpened") == []  # worker-b counted it, not us


def test_the_full_powertools_stack_logs_transitions_and_emits_emf(
    fake_llm: FakeLLMServer,
    lambda_context: Context,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    service = os.environ["POWERTOOLS_SERVICE_NAME"]
    fake_llm.set_default("openai", Error(503, message="overloaded"))
    tracer = Tracer()
    logger = Logger()
    metrics = Metrics(namespace="App")

    @tracer.capture_lambda_handler
    @logger.inject_lambda_context
    @metrics.log_metrics
    @flexiai_handler(config=config_for(fake_llm, "openai", "anthropic", threshold=1))
    def handler(event: Any, context: Any) -> dict[str, Any]:
        metrics.add_metric(name="Answered", unit="Count", value=1)
        answer = current_client().generate("hi")
        return {"provider": answer.provider, "failovers": answer.metadata["failovers"]}

    first = lambda_context()
    assert handler({}, first) == {"provider": "anthropic", "failovers": ["openai"]}
    docs = json_lines(capsys.readouterr().out)

    # Structured logs, with the request id and Powertools' injected context.
    [opened] = log_records(docs, "breaker_changed")
    assert opened["provider"] == "openai"
    assert (opened["old_state"], opened["new_state"]) == ("CLOSED", "OPEN")
    assert opened["remote"] is False
    assert opened["worker_id"] == "worker-a"
    assert opened["request_id"] == first.aws_request_id
    assert opened["function_request_id"] == first.aws_request_id
    assert opened["level"] == "WARNING"
    assert opened["service"] == service
    [failover] = log_records(docs, "failover")
    assert (failover["provider"], failover["reason"]) == ("openai", "ProviderServerError")
    [failed] = log_records(docs, "provider_failed")
    assert (failed["provider"], failed["status_code"], failed["counted"]) == ("openai", 503, True)

    # EMF: flexiai's metrics in FlexiAI with a provider dimension...
    [failure] = emf_documents(docs, "ProviderFailure")
    assert failure["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "FlexiAI"
    assert dimension_sets(failure) == [["provider", "service"]]
    assert (failure["provider"], failure["service"]) == ("openai", service)
    assert failure["ProviderFailure"] == [1.0]
    assert failure["Failover"] == [1.0]
    assert len(failure["ProviderLatency"]) == 1
    latency = [d for d in emf_documents(docs, "ProviderLatency") if d["provider"] == "anthropic"]
    assert len(latency) == 1
    assert latency[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "ProviderLatency", "Unit": "Milliseconds"}
    ]
    # ...CircuitOpened twice: per provider, and once with the service alone (for the alarm)...
    opened_docs = emf_documents(docs, "CircuitOpened")
    assert sorted(map(dimension_sets, opened_docs)) == [[["provider", "service"]], [["service"]]]
    [fleet_wide] = [d for d in opened_docs if "provider" not in d]
    assert fleet_wide["CircuitOpened"] == [1.0]
    assert "ColdStart" not in fleet_wide  # Powertools' Metrics emits the one ColdStart
    # ...and the application's own metric, untouched by flexiai's dimensions.
    [answered] = emf_documents(docs, "Answered")
    assert answered["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "App"
    assert "provider" not in answered
    assert "ColdStart" not in answered

    # Warm: openai is skipped (open), no second opening.
    assert handler({}, lambda_context())["provider"] == "anthropic"
    docs = json_lines(capsys.readouterr().out)
    assert emf_documents(docs, "CircuitOpened") == []
    [skip] = log_records(docs, "failover")
    assert skip["reason"] == "circuit_open"
    assert [d["provider"] for d in emf_documents(docs, "Failover")] == ["openai"]


def test_metrics_are_flushed_without_log_metrics_even_when_the_handler_raises(
    fake_llm: FakeLLMServer, lambda_context: Context, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_llm.set_default("openai", Error(500))

    @flexiai_handler(config=config_for(fake_llm, "openai"))
    def handler(event: Any, context: Any) -> str:
        return current_client().generate("hi").content

    with pytest.raises(AllProvidersFailedError):
        handler({}, lambda_context())
    docs = json_lines(capsys.readouterr().out)
    [failure] = emf_documents(docs, "ProviderFailure")
    assert failure["provider"] == "openai"
    assert failure["ProviderFailure"] == [1.0]  # max_retries=0: one call

    with pytest.raises(AllProvidersFailedError):
        handler({}, lambda_context())
    docs = json_lines(capsys.readouterr().out)
    [failure] = emf_documents(docs, "ProviderFailure")
    assert failure["ProviderFailure"] == [1.0]  # the first invocation's were flushed, not kept


def test_metrics_use_the_powertools_namespace_variable(
    fake_llm: FakeLLMServer,
    lambda_context: Context,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Checkout")

    @flexiai_handler(config=config_for(fake_llm, "openai"))
    def handler(event: Any, context: Any) -> str:
        return current_client().generate("hi").content

    handler({}, lambda_context())
    [latency] = emf_documents(json_lines(capsys.readouterr().out), "ProviderLatency")
    assert latency["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Checkout"


def test_an_invocation_without_flexiai_calls_prints_no_empty_metrics(
    fake_llm: FakeLLMServer, lambda_context: Context, capsys: pytest.CaptureFixture[str]
) -> None:
    @flexiai_handler(config=config_for(fake_llm, "openai"))
    def handler(event: Any, context: Any) -> int:
        return 1

    handler({}, lambda_context())
    handler({}, lambda_context())
    docs = json_lines(capsys.readouterr().out)
    assert [d for d in docs if "_aws" in d] == []  # no ColdStart of flexiai's own either


# -- X-Ray -------------------------------------------------------------------------------------


def test_xray_subsegment_is_annotated_with_the_provider_and_failovers(
    fake_llm: FakeLLMServer, lambda_context: Context, xray_emitted: list[Any]
) -> None:
    fake_llm.set_default("openai", Error(503))

    @flexiai_handler(config=config_for(fake_llm, "openai", "anthropic"), trace=True)
    def handler(event: Any, context: Any) -> str:
        return current_client().generate("hi").provider

    assert handler({}, lambda_context()) == "anthropic"
    [subsegment] = [e for e in xray_emitted if e.name == "## flexiai"]
    assert subsegment.annotations == {"flexiai_provider": "anthropic", "flexiai_failovers": 1}


def test_without_a_tracer_in_use_the_xray_sdk_is_not_imported(
    fake_llm: FakeLLMServer, tmp_path: Any
) -> None:
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(
        "import sys\n"
        "from flexiai.aws import current_client, flexiai_handler\n"
        "from flexiai.aws.context import LocalLambdaContext\n"
        "from flexiai.models import FlexiAIConfig\n"
        f"config = FlexiAIConfig(providers=[{{'name': 'openai', 'model': 'm', 'api_key': 'k',"
        f" 'base_url': {fake_llm.base_url('openai')!r}}}])\n"
        "@flexiai_handler(config=config)\n"
        "def handler(event, context):\n"
        "    return current_client().generate('hi').content\n"
        "print(handler({}, LocalLambdaContext()))\n"
        "print('aws_xray_sdk' in sys.modules)\n"
        "from flexiai.aws import close_clients\n"
        "close_clients()\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out[-2:] == ["openai says: hi", "False"]
