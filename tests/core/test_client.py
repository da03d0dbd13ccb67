"""The client end to end over real HTTP against the fake LLM server: failover order,
retries and Retry-After, every row of the error classification, breakers, two clients."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import flexiai
from flexiai import FlexiAI
from flexiai.circuit_breaker import CircuitState
from flexiai.events import BreakerChanged, FailedOver
from flexiai.exceptions import (
    AllProvidersFailedError,
    DeadlineExceededError,
    InvalidRequestError,
)
from flexiai.models import (
    CircuitBreakerConfig,
    FlexiAIConfig,
    ProviderConfig,
    RetryConfig,
    SyncConfig,
)
from flexiai.testing import Drop, Error, FakeLLMServer, Malformed, Reply, Slow
from flexiai.testing.clock import FakeClock


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


def provider(server: FakeLLMServer, name: str, priority: int, **kw: Any) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        api_key=f"sk-{name}-SECRET-KEY",
        model=f"{name}-model",
        priority=priority,
        base_url=server.base_url(name),
        timeout=kw.pop("timeout", 2.0),
        **kw,
    )


def make_client(
    server: FakeLLMServer,
    names: tuple[str, ...] = ("openai", "anthropic", "gemini"),
    *,
    clock: FakeClock | None = None,
    breaker: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    sync: SyncConfig | None = None,
) -> FlexiAI:
    config = FlexiAIConfig(
        providers=[provider(server, n, i + 1) for i, n in enumerate(names)],
        circuit_breaker=CircuitBreakerConfig(**(breaker or {})),
        retry=RetryConfig(**(retry or {})),
        sync=sync or SyncConfig(),
    )
    return FlexiAI(config, clock=clock or FakeClock(), rand=lambda: 1.0)


def test_first_healthy_provider_answers(server: FakeLLMServer) -> None:
    with make_client(server) as client:
        response = client.generate("hello", system="be brief", temperature=0.2, max_tokens=50)
    assert response.provider == "openai"
    assert response.content == "openai says: hello"
    assert response.metadata["provider"] == "openai"
    assert response.metadata["attempts"] == 1
    assert response.metadata["latency_ms"] >= 0
    assert server.count("anthropic") == 0
    body = server.requests("openai")[0].json
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["max_tokens"] == 50


def test_fails_over_in_priority_order(server: FakeLLMServer) -> None:
    server.down("openai", 500)
    server.down("anthropic", 503)
    with make_client(server, retry={"max_retries": 0}) as client:
        events: list[Any] = []
        client.add_listener(events.append)
        response = client.generate("hi")
    assert response.provider == "gemini"
    assert response.metadata["failovers"] == ["openai", "anthropic"]
    assert [e.provider for e in events if isinstance(e, FailedOver)] == ["openai", "anthropic"]


def test_retries_with_full_jitter_exponential_backoff(server: FakeLLMServer) -> None:
    server.script("openai", [Error(503), Error(502), Reply("third time")])
    clock = FakeClock()
    with make_client(server, clock=clock, retry={"max_retries": 2, "initial_backoff": 0.5}) as c:
        response = c.generate("x")
    assert response.content == "third time"
    assert response.metadata["attempts"] == 3
    assert clock.sleeps == [0.5, 1.0]  # rand() == 1.0 gives the ceiling of each full jitter


def test_backoff_is_capped_by_max_backoff(server: FakeLLMServer) -> None:
    server.script("openai", [Error(500)] * 4 + [Reply()])
    clock = FakeClock()
    with make_client(
        server,
        clock=clock,
        retry={"max_retries": 4, "initial_backoff": 1, "max_backoff": 2.5},
        breaker={"failure_threshold": 10},
    ) as client:
        client.generate("x")
    assert clock.sleeps == [1, 2, 2.5, 2.5]


def test_429_with_retry_after_opens_the_breaker_for_that_long_and_fails_over(
    server: FakeLLMServer,
) -> None:
    server.script("openai", [Error(429, retry_after=30)])
    clock = FakeClock()
    with make_client(server, clock=clock) as client:
        first = client.generate("x")
        assert first.provider == "anthropic"
        assert server.count("openai") == 1
        status = client.get_provider_status()["openai"]
        assert status["state"] == "OPEN"
        assert status["retry_at"] - status["opened_at"] == pytest.approx(30)
        client.generate("x")
        assert server.count("openai") == 1  # nobody calls it before it asked
        clock.advance(31)
        assert client.generate("x").provider == "openai"


def test_429_without_retry_after_is_retried_with_backoff(server: FakeLLMServer) -> None:
    server.script("openai", [Error(429), Reply("ok")])
    clock = FakeClock()
    with make_client(server, clock=clock) as client:
        assert client.generate("x").content == "ok"
    assert len(clock.sleeps) == 1


ROWS = [
    ("rate limit", Error(429), True, True),
    ("server error", Error(500), True, True),
    ("overloaded", Error(529), True, True),
    ("timeout", Slow(1.0), True, True),
    ("connection dropped", Drop(), True, True),
    ("junk body", Malformed("<html>oops</html>"), True, True),
    ("wrong json shape", Malformed({"choices": "nope"}), True, True),
    ("unauthorized", Error(401), False, True),
    ("forbidden", Error(403), False, True),
]


@pytest.mark.parametrize(
    ("behaviour", "retried", "counts"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_error_classification_rows(
    server: FakeLLMServer, behaviour: Any, retried: bool, counts: bool
) -> None:
    server.set_default("openai", behaviour)
    config = FlexiAIConfig(
        providers=[
            provider(server, "openai", 1, timeout=0.3, min_timeout=0.1),
            provider(server, "anthropic", 2),
        ],
        retry=RetryConfig(max_retries=1),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
    )
    with FlexiAI(config, clock=FakeClock(), rand=lambda: 0.0) as client:
        response = client.generate("x")
        status = client.get_provider_status()["openai"]
    assert response.provider == "anthropic"  # the next provider, in every row
    assert server.count("openai") == (2 if retried else 1)
    assert status["failures"] == ((2 if retried else 1) if counts else 0)


@pytest.mark.parametrize("status", [400, 422])
def test_invalid_request_is_raised_to_the_caller_without_failover(
    server: FakeLLMServer, status: int
) -> None:
    server.script("openai", [Error(status, message="messages: too long")])
    with make_client(server) as client:
        with pytest.raises(InvalidRequestError, match="too long") as info:
            client.generate("x")
        assert client.get_provider_status()["openai"]["failures"] == 0
    assert info.value.status_code == status
    assert server.count("anthropic") == 0


def test_all_failed_lists_each_attempt(server: FakeLLMServer) -> None:
    server.down("openai", 500)
    server.down("anthropic", 401)
    server.set_default("gemini", Malformed("junk"))
    with make_client(server, retry={"max_retries": 0}) as client:
        with pytest.raises(AllProvidersFailedError) as info:
            client.generate("x")
    attempts = info.value.attempts
    assert [(a.provider, a.error_type, a.status_code) for a in attempts] == [
        ("openai", "ProviderServerError", 500),
        ("anthropic", "ProviderAuthError", 401),
        ("gemini", "MalformedResponseError", 200),
    ]
    assert info.value.retry_after is None


def test_open_breaker_is_skipped_then_fails_back_automatically(server: FakeLLMServer) -> None:
    server.down("openai")
    clock = FakeClock()
    with make_client(
        server,
        clock=clock,
        retry={"max_retries": 0},
        breaker={"failure_threshold": 3, "recovery_timeout": 30},
    ) as client:
        changes: list[BreakerChanged] = []
        client.add_listener(lambda e: changes.append(e) if isinstance(e, BreakerChanged) else None)
        for _ in range(3):
            assert client.generate("x").provider == "anthropic"
        assert server.count("openai") == 3
        for _ in range(5):
            client.generate("x")
        assert server.count("openai") == 3  # skipped while open
        server.up("openai")
        clock.advance(31)
        assert client.generate("x").provider == "openai"  # the probe succeeds: failback
        assert client.get_provider_status()["openai"]["state"] == "CLOSED"
    assert [(c.old, c.new) for c in changes] == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]


def test_all_breakers_open_reports_the_earliest_recovery(server: FakeLLMServer) -> None:
    clock = FakeClock()
    with make_client(
        server, ("openai", "anthropic"), clock=clock, breaker={"recovery_timeout": 60}
    ) as client:
        client._breakers["openai"].trip(60)
        client._breakers["anthropic"].trip(20)
        with pytest.raises(AllProvidersFailedError) as info:
            client.generate("x")
    assert info.value.all_circuits_open
    assert info.value.retry_after == pytest.approx(20)


def test_reset_circuit_breakers(server: FakeLLMServer) -> None:
    with make_client(server) as client:
        client._breakers["openai"].trip(60)
        client.reset_circuit_breakers("openai")
        assert client.get_provider_status()["openai"]["state"] == "CLOSED"
        with pytest.raises(KeyError):
            client.reset_circuit_breakers("nope")


def test_two_clients_in_one_process_work_side_by_side(server: FakeLLMServer) -> None:
    """Regression: the origin kept one provider registry per process; a second client raised."""
    server.down("openai")
    with (
        make_client(server, retry={"max_retries": 0}, breaker={"failure_threshold": 1}) as a,
        make_client(server, ("openai", "gemini")) as b,
    ):
        assert a.generate("x").provider == "anthropic"
        assert a.get_provider_status()["openai"]["state"] == "OPEN"
        assert b.get_provider_status()["openai"]["state"] == "CLOSED"  # sync off: independent
        server.up("openai")
        assert b.generate("x").provider == "openai"


def test_memory_backend_shares_breakers_between_clients_of_one_process(
    server: FakeLLMServer,
) -> None:
    sync = SyncConfig(enabled=True, backend="memory", key_prefix="test-shared-hub")
    server.down("openai")
    with (
        make_client(
            server, sync=sync, retry={"max_retries": 0}, breaker={"failure_threshold": 2}
        ) as a,
        make_client(
            server, sync=sync, retry={"max_retries": 0}, breaker={"failure_threshold": 2}
        ) as b,
    ):
        a.generate("x")
        b.generate("x")  # one failure each: two in total open the shared breaker
        assert a.get_provider_status()["openai"]["state"] == "OPEN"
        assert b.get_provider_status()["openai"]["state"] == "OPEN"
        assert a._sync_manager is not None and a._sync_manager.backend.health_check()
        assert a._sync_manager.worker_id != b._sync_manager.worker_id  # type: ignore[union-attr]


def test_sync_manager_is_none_when_sync_is_disabled(server: FakeLLMServer) -> None:
    with make_client(server) as client:
        assert client._sync_manager is None


def test_deadline_caps_each_attempt_and_skips_what_cannot_fit(server: FakeLLMServer) -> None:
    server.set_default("openai", Slow(2.0))
    config = FlexiAIConfig(
        providers=[
            provider(server, "openai", 1, timeout=5.0, min_timeout=0.1),
            provider(server, "anthropic", 2, timeout=5.0, min_timeout=0.5),
        ],
        retry=RetryConfig(max_retries=0),
    )
    with FlexiAI(config) as client, flexiai.deadline(0.4):
        with pytest.raises(AllProvidersFailedError) as info:
            client.generate("x")
    kinds = [(a.provider, a.error_type) for a in info.value.attempts]
    assert kinds == [("openai", "ProviderTimeout"), ("anthropic", "DeadlineExceededError")]
    assert server.count("anthropic") == 0


def test_deadline_too_short_for_any_attempt_raises_a_typed_error(server: FakeLLMServer) -> None:
    with make_client(server) as client, flexiai.deadline(0.05):
        with pytest.raises(DeadlineExceededError):
            client.generate("x")
    assert server.count("openai") == 0


@pytest.mark.anyio
async def test_async_twins_fail_over_the_same_way(server: FakeLLMServer) -> None:
    server.script("openai", [Error(500)])
    async with make_client(server, retry={"max_retries": 0}) as client:
        first = await client.agenerate("hi")
        second = await client.achat_completion([{"role": "user", "content": "again"}])
    assert first.provider == "anthropic"
    assert second.provider == "openai"
    assert second.content == "openai says: again"


def test_one_client_serves_one_event_loop_after_another(server: FakeLLMServer) -> None:
    # A Lambda handler that calls asyncio.run in each invocation, or a script that calls it
    # twice: the first loop's kept-alive connections cannot carry the next loop's requests
    # (sending on one raised "Event loop is closed", and nothing failed over).
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def burst(client: FlexiAI) -> list[str]:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        answers = await asyncio.gather(*(client.agenerate(f"hi {i}") for i in range(10)))
        return [answer.provider for answer in answers]

    with make_client(server, ("openai",)) as client:
        for _ in range(3):
            assert asyncio.run(burst(client)) == ["openai"] * 10
        assert server.count("openai") == 30
    gc.collect()

    # Nor does the client keep the loops it has served alive, with all they hold.
    assert [loop() for loop in loops] == [None, None, None]


def test_chat_completion_takes_a_conversation(server: FakeLLMServer) -> None:
    with make_client(server) as client:
        response = client.chat_completion(
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "how are you"},
            ]
        )
    assert response.content == "openai says: how are you"
    assert len(server.requests("openai")[0].json["messages"]) == 3


def test_listener_errors_are_logged_not_raised(
    server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("listener bug")

    with make_client(server) as client:
        client.add_listener(broken)
        with caplog.at_level(logging.ERROR):
            assert client.generate("x").provider == "openai"
    assert "listener" in caplog.text
