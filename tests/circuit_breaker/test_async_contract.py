"""The breaker-store contract (test_contract.py's scenarios, imported below so they run
here again) against the asyncio twin of the Redis store, on a real redis-server.

``_AsyncDriven`` presents an ``AsyncRedisBackend`` as the ``SyncBackend`` the scenarios
use: every load, transition and report is awaited on the adapter's own event loop, so the
bytes go through ``redis.asyncio`` and the twin's shared argument builders and parsers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest

from flexiai._clock import epoch_ms
from flexiai.circuit_breaker._machine import NO_TALLY, Op, Policy, Tally, Transition
from flexiai.circuit_breaker.stores.base import EventHandler, StoreSnapshot, SyncBackend
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
from flexiai.circuit_breaker.stores.redis_async import AsyncRedisBackend
from flexiai.testing.clock import FakeClock
from flexiai_dev.servers import RedisProcess
from tests.circuit_breaker.conftest import Store, policy
from tests.circuit_breaker.test_contract import *  # noqa: F403 - the scenarios run here too
from tests.support.redis_fixtures import sync_config_for


class _AsyncDriven(SyncBackend):
    """A ``SyncBackend`` whose store operations are the async twin's, awaited on a loop of
    its own (its client belongs to that loop); the rest is the blocking backend's."""

    def __init__(self, blocking: RedisSyncBackend) -> None:
        twin = blocking.async_twin()
        assert isinstance(twin, AsyncRedisBackend)
        self.blocking, self.twin = blocking, twin
        self.name, self.shared = blocking.name, blocking.shared
        self._loop = asyncio.new_event_loop()

    def load(self, providers: Sequence[str]) -> StoreSnapshot:
        return self._loop.run_until_complete(self.twin.load(providers))

    def transition(
        self,
        provider: str,
        op: Op,
        policy: Policy,
        worker_id: str,
        *,
        open_for: int | None = None,
        tally: Tally = NO_TALLY,
        publish: bool = True,
    ) -> Transition:
        return self._loop.run_until_complete(
            self.twin.transition(
                provider, op, policy, worker_id, open_for=open_for, tally=tally, publish=publish
            )
        )

    def report(
        self,
        tallies: Mapping[str, Tally],
        policy: Policy,
        worker_id: str,
        *,
        read: Sequence[str] = (),
    ) -> StoreSnapshot:
        return self._loop.run_until_complete(
            self.twin.report(tallies, policy, worker_id, read=read)
        )

    def now(self) -> int:
        return self.blocking.now()

    def subscribe(self, handler: EventHandler, on_connect: Callable[[], None]) -> None:
        self.blocking.subscribe(handler, on_connect)

    def health_check(self) -> bool:
        return self._loop.run_until_complete(self.twin.ping())

    def stats(self) -> dict[str, int]:
        return self.blocking.stats()

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self.twin.aclose())
            self._loop.close()
        self.blocking.close()


def _async_store(server: RedisProcess) -> Iterator[Store]:
    clock = FakeClock()
    config = sync_config_for(server)

    def make() -> SyncBackend:
        return _AsyncDriven(RedisSyncBackend(config, store_clock=lambda: epoch_ms(clock)))

    made = Store("redis-async", make, clock, server.client(), config)
    try:
        yield made
    finally:
        for backend in made.backends:
            backend.close()
        made.raw.close()


@pytest.fixture
def store(redis_server: RedisProcess) -> Iterator[Store]:
    yield from _async_store(redis_server)


@pytest.fixture
def redis_store(redis_server: RedisProcess) -> Iterator[Store]:
    yield from _async_store(redis_server)


def test_the_adapter_really_goes_through_the_asyncio_client(store: Store) -> None:
    backend = store.backend()
    assert isinstance(backend, _AsyncDriven)
    backend.transition("openai", Op.FAILURE, policy(), "w")
    clients: Any = backend.twin._clients
    assert len(clients) == 1  # one loop, one asyncio client
    assert store.raw.get(store.key("openai")) is not None
