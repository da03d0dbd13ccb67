"""The async API never blocks the event loop on the breaker store (issue 12, item 2).

100 concurrent ``agenerate`` calls while redis-server is SIGSTOPped: every store call
waits for its socket timeout, and the loop goes on serving meanwhile. A ticker coroutine
and a bystander coroutine prove it by *what they saw*, not by how long anything took: a
blocking store call holds the loop's thread, so no other coroutine can run while one is
pending, and these counts would be zero.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from flexiai import FlexiAI
from flexiai.circuit_breaker._machine import NO_TALLY, Op, Policy, Tally, Transition
from flexiai.circuit_breaker._record import CircuitState
from flexiai.circuit_breaker.stores.base import AsyncBackend, StoreSnapshot
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
from flexiai.circuit_breaker.stores.redis_async import AsyncRedisBackend
from flexiai.models import CircuitBreakerConfig, FlexiAIConfig, RetryConfig, SyncConfig
from flexiai.testing import FakeLLMServer
from flexiai_dev.servers import RedisProcess
from tests.support.llm_fixtures import provider_config
from tests.support.redis_fixtures import sync_config_for


class _Watched(AsyncBackend):
    """The real asyncio twin, with a count of the store calls in flight right now."""

    def __init__(self, inner: AsyncBackend) -> None:
        self.inner = inner
        self.pending = 0
        self.calls = 0
        self.loads = 0

    async def _watch(self, call: Any) -> Any:
        self.pending += 1
        self.calls += 1
        try:
            return await call
        finally:
            self.pending -= 1

    async def load(self, providers: Sequence[str]) -> StoreSnapshot:
        self.loads += 1
        result: StoreSnapshot = await self._watch(self.inner.load(providers))
        return result

    async def transition(
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
        result: Transition = await self._watch(
            self.inner.transition(
                provider, op, policy, worker_id, open_for=open_for, tally=tally, publish=publish
            )
        )
        return result

    async def report(
        self,
        tallies: Mapping[str, Tally],
        policy: Policy,
        worker_id: str,
        *,
        read: Sequence[str] = (),
    ) -> StoreSnapshot:
        result: StoreSnapshot = await self._watch(
            self.inner.report(tallies, policy, worker_id, read=read)
        )
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


class _WatchedRedis(RedisSyncBackend):
    """The Redis store, whose async twin is watched."""

    watched: _Watched | None = None

    def async_twin(self) -> AsyncBackend:
        twin = super().async_twin()
        assert isinstance(twin, AsyncRedisBackend)  # asyncio I/O, not a thread
        self.watched = _Watched(twin)
        return self.watched


def _client(llm: FakeLLMServer, sync: SyncConfig) -> tuple[FlexiAI, _WatchedRedis]:
    config = FlexiAIConfig(
        providers=[
            provider_config(llm, "openai", priority=1),
            provider_config(llm, "anthropic", priority=2),
        ],
        retry=RetryConfig(max_retries=0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=3),
        sync=sync,
    )
    backend = _WatchedRedis(sync)
    return FlexiAI(config, sync_backend=backend), backend


async def _serve_while_watching(client: FlexiAI, watched: _WatchedRedis, n: int) -> dict[str, Any]:
    """``n`` concurrent agenerate calls, a ticker and a bystander; what each one saw."""
    seen: dict[str, Any] = {
        "ticks": 0,
        "ticks_while_pending": 0,
        "bystander_done_while_pending": False,
    }
    stop = asyncio.Event()

    def pending() -> int:
        return 0 if watched.watched is None else watched.watched.pending

    async def ticker() -> None:
        while not stop.is_set():
            seen["ticks"] += 1
            seen["ticks_while_pending"] += pending() > 0
            await asyncio.sleep(0.001)

    async def bystander() -> None:
        while pending() == 0 and not stop.is_set():  # wait for a store call to be in flight
            await asyncio.sleep(0)
        for _ in range(10):  # some unrelated work, needing the loop ten times
            await asyncio.sleep(0)
        seen["bystander_done_while_pending"] = pending() > 0

    ticking = asyncio.create_task(ticker())
    watching = asyncio.create_task(bystander())
    try:
        seen["responses"] = await asyncio.gather(*(client.agenerate(f"q{i}") for i in range(n)))
    finally:
        stop.set()
        await ticking
        await watching
    return seen


def test_100_concurrent_requests_while_redis_is_frozen_keep_the_loop_serving(
    redis_server: RedisProcess, fake_llm: FakeLLMServer
) -> None:
    fake_llm.down("openai")  # every request fails over, so it also has failures to record
    # A generous socket timeout: the store calls stay pending long enough for the ticker
    # and the bystander to run (on a blocking store they could not run at all).
    sync = sync_config_for(redis_server, redis_socket_timeout=2.0, reconnect_backoff=60.0)
    client, backend = _client(fake_llm, sync)

    async def scenario() -> dict[str, Any]:
        async with client:
            redis_server.freeze()
            try:
                return await _serve_while_watching(client, backend, 100)
            finally:
                redis_server.thaw()

    seen = asyncio.run(scenario())
    responses = seen["responses"]
    assert len(responses) == 100
    assert {r.provider for r in responses} == {"anthropic"}  # all answered, by the healthy one
    assert backend.watched is not None and backend.watched.calls >= 1
    assert seen["ticks_while_pending"] >= 1  # the loop ran the ticker during a store call
    assert seen["bystander_done_while_pending"]  # and other coroutines completed meanwhile
    assert client.store_health().degraded  # it fell back, as a frozen store must


def test_async_requests_share_the_breaker_through_redis(
    redis_server: RedisProcess, fake_llm: FakeLLMServer
) -> None:
    fake_llm.down("openai")
    sync = sync_config_for(redis_server)
    client, backend = _client(fake_llm, sync)

    async def scenario() -> list[str]:
        async with client:
            return [(await client.agenerate(f"q{i}")).provider for i in range(6)]

    providers = asyncio.run(scenario())
    assert providers == ["anthropic"] * 6
    assert fake_llm.count("openai") == 3  # failure_threshold calls, then the breaker skips
    assert backend.watched is not None and backend.watched.calls >= 3
    # Another process's view (a fresh blocking backend) reads the breaker the twin opened.
    with FlexiAI(
        FlexiAIConfig(providers=[provider_config(fake_llm, "openai")], sync=sync)
    ) as other:
        assert other.get_provider_status()["openai"].state is CircuitState.OPEN


def test_a_burst_shares_one_store_read_and_its_one_timeout(
    redis_server: RedisProcess, fake_llm: FakeLLMServer
) -> None:
    # Snapshot mode with no caching: every request wants a fresh read. With Redis frozen,
    # the requests that arrive while one read is in flight join it, so the burst waits out
    # one socket timeout (2 s, far longer than it takes 40 requests to start) instead of
    # sending 40 reads whose 40 timeouts then expire together.
    sync = sync_config_for(
        redis_server,
        mode="snapshot",
        snapshot_max_age=0.0,
        redis_socket_timeout=2.0,
        reconnect_backoff=60.0,
    )
    client, backend = _client(fake_llm, sync)

    async def scenario() -> list[Any]:
        async with client:
            await client.agenerate("warm-up")  # connected while Redis answers
            assert backend.watched is not None
            loads_before = backend.watched.loads
            redis_server.freeze()
            try:
                responses = await asyncio.gather(*(client.agenerate(f"q{i}") for i in range(40)))
            finally:
                redis_server.thaw()
            assert backend.watched.loads - loads_before == 1
            return responses

    responses = asyncio.run(scenario())
    assert [r.provider for r in responses] == ["openai"] * 40
    # Each request waited for that one failed read, and only for it.
    assert [r.metadata.store_failures for r in responses] == [1] * 40
    assert client.store_health().degraded


def reading_client(redis_server: RedisProcess, fake_llm: FakeLLMServer) -> FlexiAI:
    """A client whose every request reads the shared store (snapshot, no maximum age)."""
    sync = sync_config_for(redis_server, mode="snapshot", snapshot_max_age=0.0)
    return FlexiAI(FlexiAIConfig(providers=[provider_config(fake_llm, "openai")], sync=sync))


def connections_to(redis_server: RedisProcess) -> int:
    """The server's client connections, not counting the one that asks."""
    with redis_server.client() as admin:
        return int(admin.info("clients")["connected_clients"]) - 1


def test_each_event_loop_gets_store_connections_of_its_own_closed_when_it_ends(
    redis_server: RedisProcess, fake_llm: FakeLLMServer
) -> None:
    # A Lambda handler that runs asyncio.run in each invocation, with a module-level client:
    # every loop needs asyncio connections of its own, and they must be closed when its
    # asyncio.run returns, not left open on the server until the garbage collector runs.
    client = reading_client(redis_server, fake_llm)

    async def invocation() -> list[int]:
        answers = await asyncio.gather(*(client.agenerate(f"q{i}") for i in range(5)))
        return [answer.metadata.store_failures for answer in answers]

    before = connections_to(redis_server)
    with client:
        for _ in range(3):
            assert asyncio.run(invocation()) == [0] * 5  # every read reached Redis
            assert connections_to(redis_server) == before


def test_close_from_outside_closes_the_store_connections_of_a_loop_still_running(
    redis_server: RedisProcess, fake_llm: FakeLLMServer
) -> None:
    # A server's loop in a thread of its own, the client closed by the main thread at
    # shutdown, while that loop still runs: its asyncio connections must be closed on it,
    # not left open until the process exits.
    client = reading_client(redis_server, fake_llm)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        before = connections_to(redis_server)
        answer = asyncio.run_coroutine_threadsafe(client.agenerate("q"), loop).result()
        assert answer.metadata.store_failures == 0
        client.close()  # the blocking connections close here, the loop's on the loop
        waited = 0  # a hang guard of 10 s, not a time limit: the close runs on the loop
        while connections_to(redis_server) > before and waited < 400:
            time.sleep(0.025)
            waited += 1
        assert connections_to(redis_server) == before
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
