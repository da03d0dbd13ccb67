"""Stores under test: the memory store, the Redis store over fakeredis, and over a real
redis-server. Every store in the contract suite runs on a ``FakeClock`` (the Redis stores
pass its time to breaker.lua instead of the server's ``TIME``), so no test sleeps on real
time. Every backend made through ``make_backend`` is closed after its test, and no test may
leave a shared Redis client behind."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from flexiai._clock import epoch_ms
from flexiai.circuit_breaker._machine import Policy
from flexiai.circuit_breaker.stores import connections
from flexiai.circuit_breaker.stores.base import SyncBackend
from flexiai.circuit_breaker.stores.memory import MemorySyncBackend
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
from flexiai.models import CircuitBreakerConfig, SyncConfig
from flexiai.testing.clock import FakeClock
from tests.support.redis_fixtures import sync_config_for

_REAL = pytest.param("redis", marks=pytest.mark.redis_server)
STORES = ["memory", "fakeredis", _REAL]
REDIS_STORES = ["fakeredis", _REAL]


def policy(**overrides: Any) -> Policy:
    """A breaker policy in the store's units, from ``CircuitBreakerConfig`` settings."""
    settings: dict[str, Any] = {
        "failure_threshold": 3,
        "minimum_calls": 20,
        "failure_window": 60.0,
        "recovery_timeout": 0.2,
        "half_open_max_calls": 1,
        "success_threshold": 1,
        "probe_lease_ttl": 30.0,
        "max_open_for": 600.0,
    }
    settings.update(overrides)
    return Policy.from_config(CircuitBreakerConfig(**settings))


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


@dataclass
class Store:
    """One store under test. ``backend()`` makes another worker's view of the same store;
    ``advance(s)`` lets ``s`` seconds pass on the store's clock; ``raw`` is a redis client
    with full rights (None for memory)."""

    kind: str
    make: Callable[[], SyncBackend]
    clock: FakeClock
    raw: Any = None
    config: SyncConfig = field(default_factory=SyncConfig)
    backends: list[SyncBackend] = field(default_factory=list)

    def backend(self) -> SyncBackend:
        backend = self.make()
        self.backends.append(backend)
        return backend

    def key(self, provider: str) -> str:
        return f"{self.config.key_prefix}:state:{provider}"

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def now(self) -> int:
        """The store's clock in milliseconds."""
        return epoch_ms(self.clock)


@pytest.fixture(autouse=True)
def _no_leaked_clients() -> Iterator[None]:
    before = connections.shared_client_count()
    yield
    assert connections.shared_client_count() == before, "a test left a Redis client open"


@pytest.fixture
def make_backend() -> Iterator[Callable[..., RedisSyncBackend]]:
    """``make_backend(config, **kw)``: a RedisSyncBackend closed after the test."""
    made: list[RedisSyncBackend] = []

    def make(config: SyncConfig, **kwargs: Any) -> RedisSyncBackend:
        backend = RedisSyncBackend(config, **kwargs)
        made.append(backend)
        return backend

    yield make
    for backend in reversed(made):
        backend.close()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    yield from _store(request, request.param)


@pytest.fixture(params=REDIS_STORES)
def redis_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    yield from _store(request, request.param)


def _store(request: pytest.FixtureRequest, kind: str) -> Iterator[Store]:
    clock = FakeClock()
    clients: list[Any] = []
    if kind == "memory":
        namespace = f"contract-{id(clock)}"
        made = Store(kind, lambda: MemorySyncBackend(namespace, clock=clock), clock)
    elif kind == "fakeredis":
        import fakeredis

        server = fakeredis.FakeServer()
        config = SyncConfig(enabled=True)

        def make_fake() -> SyncBackend:
            client = fakeredis.FakeRedis(server=server)
            clients.append(client)
            return RedisSyncBackend(config, client=client, store_clock=lambda: epoch_ms(clock))

        made = Store(kind, make_fake, clock, fakeredis.FakeRedis(server=server), config)
        clients.append(made.raw)
    else:
        server = request.getfixturevalue("redis_server")
        config = sync_config_for(server)
        made = Store(
            kind,
            lambda: RedisSyncBackend(config, store_clock=lambda: epoch_ms(clock)),
            clock,
            server.client(),
            config,
        )
    try:
        yield made
    finally:
        for backend in made.backends:
            backend.close()
        if kind == "fakeredis":
            for client in clients:
                client.close()
        elif made.raw is not None:
            made.raw.close()
