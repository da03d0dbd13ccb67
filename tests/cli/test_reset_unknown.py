"""``flexiai reset NAME`` for a provider nobody knows: an error listing the known ones and a
non-zero exit, never "already CLOSED" (issue 12, item 6). Against a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flexiai.circuit_breaker import CircuitState, Op, Policy
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
from flexiai.models import CircuitBreakerConfig
from flexiai_dev.servers import RedisProcess
from tests.support.redis_fixtures import sync_config_for

pytestmark = pytest.mark.redis_server

POLICY = Policy.from_config(CircuitBreakerConfig(failure_threshold=2, recovery_timeout=30))


@pytest.fixture
def store(redis_server: RedisProcess) -> Iterator[RedisSyncBackend]:
    backend = RedisSyncBackend(sync_config_for(redis_server))
    yield backend
    backend.close()


def open_breaker(store: RedisSyncBackend, provider: str) -> None:
    for _ in range(POLICY.failure_threshold):
        store.transition(provider, Op.FAILURE, POLICY, "w1")


def test_an_unknown_provider_is_rejected_with_the_known_ones_listed(
    flexiai: Any, redis_server: RedisProcess, store: RedisSyncBackend
) -> None:
    open_breaker(store, "openai")
    open_breaker(store, "anthropic")

    result = flexiai("reset", "nosuchprovider", "--redis-url", redis_server.url)

    assert result.code != 0
    assert "unknown provider 'nosuchprovider'" in result.err
    assert "known providers: anthropic, openai" in result.err
    assert "CLOSED" not in result.out
    records = store.load(["openai", "anthropic", "nosuchprovider"])
    assert records.records["openai"].state is CircuitState.OPEN  # nothing was touched
    assert records.records["anthropic"].state is CircuitState.OPEN
    assert "nosuchprovider" not in store.list_providers()  # and nothing was created


def test_configured_providers_count_as_known_even_with_nothing_stored(
    flexiai: Any, redis_server: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEXIAI_PROVIDER_1_NAME", "gemini")
    monkeypatch.setenv("FLEXIAI_PROVIDER_1_MODEL", "gemini-2.0-flash")
    monkeypatch.setenv("FLEXIAI_PROVIDER_1_API_KEY", "k")

    known = flexiai("reset", "gemini", "--redis-url", redis_server.url)
    typo = flexiai("reset", "gemnii", "--redis-url", redis_server.url)

    assert known.code == 0, known.err
    assert "gemini: already CLOSED" in known.out
    assert typo.code != 0
    assert "known providers: gemini" in typo.err


def test_with_no_provider_known_at_all_the_error_says_where_it_looked(
    flexiai: Any, redis_server: RedisProcess
) -> None:
    result = flexiai("reset", "openai", "--redis-url", redis_server.url)

    assert result.code != 0
    assert "unknown provider 'openai'; known providers: none" in result.err
    assert "prefix 'flexiai'" in result.err
    assert result.out == ""
