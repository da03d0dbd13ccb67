"""The public API as a user writes it: type-checked by mypy (strict), never run.

If a change to flexiai makes this file fail to type-check, the change broke someone's code.
It is not a test module (pytest collects ``test_*.py`` only).
"""

from __future__ import annotations

from typing import assert_type

import flexiai
from flexiai import (
    AllProvidersFailedError,
    BreakerSnapshot,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    FlexiAI,
    FlexiAIConfig,
    ProviderConfig,
    ProviderStatus,
    ResponseMeta,
    RetryConfig,
    StoreHealth,
    SyncConfig,
    UnifiedResponse,
    deadline,
    load_config,
)
from flexiai.events import BreakerChanged, ClientEvent, FailedOver, ProviderCallFailed
from flexiai.exceptions import AttemptRecord, FlexiAIError, ProviderError


def configure() -> FlexiAIConfig:
    return FlexiAIConfig(
        providers=[
            ProviderConfig(name="openai", api_key="sk-...", model="gpt-4o-mini", priority=1),
            ProviderConfig(
                name="local", kind="openai", model="llama3", base_url="http://127.0.0.1:8000/v1"
            ),
        ],
        sync=SyncConfig(enabled=True, redis_url="redis://127.0.0.1:6379/0", flush_interval=1.0),
        circuit_breaker=CircuitBreakerConfig(
            failure_rate_threshold=50.0,
            minimum_calls=20,
            failure_window=60.0,
            failure_threshold=5,
            slow_call_duration=10.0,
        ),
        retry=RetryConfig(max_retries=2),
    )


def call(client: FlexiAI) -> str:
    with deadline(5.0):
        response = client.generate("hello", system="be brief", max_tokens=50)
    assert_type(response, UnifiedResponse)
    meta = response.metadata
    assert_type(meta, ResponseMeta)
    assert_type(meta.attempts, int)
    assert_type(meta.failovers, list[str])
    provider: str = meta["provider"]  # the guide reads it by key
    return provider + response.content


async def call_async(client: FlexiAI) -> UnifiedResponse:
    return await client.agenerate("hello")


def inspect(client: FlexiAI) -> None:
    status = client.get_provider_status()
    assert_type(status, dict[str, ProviderStatus])
    openai = status["openai"]
    assert_type(openai.state, CircuitState)
    assert_type(openai.breaker, BreakerSnapshot)
    assert_type(openai.breaker.failure_rate, float | None)
    assert_type(openai.breaker.consecutive_failures, int)
    health = client.store_health()
    assert_type(health, StoreHealth)
    assert_type(health.healthy, bool)
    client.reset_circuit_breakers("openai")


def handle_errors(client: FlexiAI) -> None:
    try:
        client.generate("x")
    except AllProvidersFailedError as exc:
        for attempt in exc.attempts:
            assert_type(attempt, AttemptRecord)
            assert_type(attempt.error, FlexiAIError)
            if isinstance(attempt.error, CircuitOpenError):
                assert_type(attempt.error.snapshot, BreakerSnapshot)
            elif isinstance(attempt.error, ProviderError):
                assert_type(attempt.error.status_code, int | None)


def listen(client: FlexiAI) -> None:
    def listener(event: ClientEvent) -> None:
        if isinstance(event, BreakerChanged):
            assert_type(event.new, CircuitState)
        elif isinstance(event, ProviderCallFailed | FailedOver):
            assert_type(event.provider, str)

    client.add_listener(listener)


def from_environment() -> FlexiAI:
    client = FlexiAI(config=load_config())
    assert_type(flexiai.__version__, str)
    return client
