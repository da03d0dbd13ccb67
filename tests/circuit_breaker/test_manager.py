"""One client against a real Redis: start from the fleet's state, write nothing on the
healthy path, and ride out a Redis outage with one log line each way."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flexiai import FlexiAI
from flexiai.circuit_breaker._machine import EventType, Op
from flexiai.circuit_breaker._record import BreakerRecord, CircuitState
from flexiai.circuit_breaker._wire import SyncEvent, encode_event
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend, state_key
from flexiai.models import CircuitBreakerConfig, FlexiAIConfig, ProviderConfig, RetryConfig
from flexiai.testing import FakeLLMServer
from flexiai_dev.servers import RedisProcess
from tests.circuit_breaker.conftest import wait_until
from tests.support.redis_fixtures import sync_config_for


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def client_for(server: RedisProcess, fake: FakeLLMServer, **sync: Any) -> FlexiAI:
    config = FlexiAIConfig(
        providers=[
            ProviderConfig(name="openai", api_key="k", model="m", base_url=fake.base_url("openai")),
            ProviderConfig(
                name="anthropic", api_key="k", model="m", base_url=fake.base_url("anthropic")
            ),
        ],
        sync=sync_config_for(server, **{"reconnect_backoff": 0.3, **sync}),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, recovery_timeout=60),
        retry=RetryConfig(max_retries=0),
    )
    return FlexiAI(config)


def commands(server: RedisProcess) -> dict[str, int]:
    with server.client(decode_responses=True) as r:
        stats = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


@pytest.mark.parametrize("mode", ["pubsub", "snapshot"])
def test_a_new_worker_starts_from_the_fleets_state_not_closed(
    redis_server: RedisProcess, fake: FakeLLMServer, mode: str
) -> None:
    """Regression: the origin never wrote state keys, so a new worker always started CLOSED."""
    fake.down("openai")
    with client_for(redis_server, fake, mode=mode) as first:
        first.generate("a")
        first.generate("b")
        assert first.get_provider_status()["openai"]["state"] == "OPEN"
    calls_before = fake.count("openai")
    with client_for(redis_server, fake, mode=mode) as newcomer:
        assert newcomer.generate("c").provider == "anthropic"
    assert fake.count("openai") == calls_before


def test_snapshot_mode_reads_once_per_max_age_and_writes_nothing_when_healthy(
    redis_server: RedisProcess, fake: FakeLLMServer
) -> None:
    with client_for(redis_server, fake, mode="snapshot", snapshot_max_age=60) as client:
        client.generate("warm up")  # loads the scripts
        before = commands(redis_server)
        for _ in range(20):
            assert client.generate("x").provider == "openai"
        after = commands(redis_server)
    changed = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert {k: v for k, v in changed.items() if v and k != "info"} == {}


def test_snapshot_mode_refreshes_in_one_round_trip_per_request_when_stale(
    redis_server: RedisProcess, fake: FakeLLMServer
) -> None:
    with client_for(
        redis_server, fake, mode="snapshot", snapshot_max_age=0, flush_interval=0.001
    ) as client:
        client.generate("warm up")
        client.generate("warm up")  # its refresh carries a count: the script is loaded
        before = commands(redis_server)
        for _ in range(10):
            client.generate("x")
        after = commands(redis_server)  # before close() sends the last request's count
    # One round trip per refresh: a plain MGET, or one script call that also carries the
    # previous request's success count (issue 9); nothing is published on the healthy path.
    round_trips = sum(after.get(k, 0) - before.get(k, 0) for k in ("mget", "evalsha"))
    assert round_trips == 10
    assert after.get("evalsha", 0) > before.get("evalsha", 0)  # counts do reach the store
    writes = ("publish", "del", "hset", "pexpire")
    assert all(after.get(k, 0) == before.get(k, 0) for k in writes)


def test_a_frozen_redis_never_fails_a_request_and_logs_once_each_way(
    redis_server: RedisProcess, fake: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    with client_for(redis_server, fake, mode="snapshot", snapshot_max_age=0) as client:
        client.generate("warm up")
        fake.down("openai")
        redis_server.freeze()
        try:
            with caplog.at_level(logging.WARNING, logger="flexiai.sync.manager"):
                for _ in range(6):
                    assert client.generate("x").provider == "anthropic"
                assert client._sync_manager is not None
                assert client._sync_manager.health_check() is False
                # local breakers kept working while Redis was frozen
                assert client.get_provider_status()["openai"]["state"] == "OPEN"
        finally:
            redis_server.thaw()
        fake.up("openai")
        time.sleep(0.35)  # the reconnect backoff
        with caplog.at_level(logging.WARNING, logger="flexiai.sync.manager"):
            client.generate("after")
            client.generate("after")
        assert client._sync_manager.health_check() is True
        # resynced from Redis, which never saw the outage's failures: CLOSED again
        assert client.get_provider_status()["openai"]["state"] == "CLOSED"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("falling back" in m for m in messages) == 1
    assert sum("reconnected" in m for m in messages) == 1


@pytest.mark.parametrize("mode", ["pubsub", "snapshot"])
def test_store_failures_counts_the_store_operations_a_request_waited_for(
    redis_server: RedisProcess, fake: FakeLLMServer, mode: str
) -> None:
    # A long flush_interval keeps the pub/sub flusher out of it: every store operation
    # here is made by a request, so which request pays for the frozen server is known.
    with client_for(
        redis_server,
        fake,
        mode=mode,
        snapshot_max_age=0,
        reconnect_backoff=60,
        flush_interval=60,
    ) as client:
        client.generate("warm up")
        assert client.generate("healthy").metadata.store_failures == 0
        fake.down("openai")  # each request now fails a call, which is a store operation
        redis_server.freeze()
        try:
            metas = [client.generate("x").metadata for _ in range(4)]
        finally:
            redis_server.thaw()
    # The first operation times out and degrades the manager: the rest of that request, and
    # the next ones within reconnect_backoff, use local breakers and wait for nothing.
    assert [m.store_failures for m in metas] == [1, 0, 0, 0]
    assert [m.provider for m in metas] == ["anthropic"] * 4


def test_store_failures_are_counted_per_request_on_the_async_path_too(
    redis_server: RedisProcess, fake: FakeLLMServer
) -> None:
    async def requests(client: FlexiAI) -> list[int]:
        # The async API awaits the store: both requests wait for the frozen store at once,
        # and each counts its own failure, not the other's. The next one finds the manager
        # degraded and waits for nothing.
        first = asyncio.create_task(client.agenerate("first"))
        await asyncio.sleep(0)  # the first is now waiting for the store
        second = asyncio.create_task(client.agenerate("second"))
        answers = [*await asyncio.gather(first, second), await client.agenerate("third")]
        await client.aclose()  # the async HTTP client belongs to this loop
        return [a.metadata.store_failures for a in answers]

    with client_for(
        redis_server, fake, mode="snapshot", snapshot_max_age=0, reconnect_backoff=60
    ) as client:
        client.generate("warm up")
        redis_server.freeze()
        try:
            counts = asyncio.run(requests(client))
        finally:
            redis_server.thaw()
    assert counts == [1, 1, 0]


def test_a_request_that_waited_once_for_the_store_does_not_wait_again(
    redis_server: RedisProcess, fake: FakeLLMServer
) -> None:
    # no flush in the background: every script call here is the test's
    with client_for(
        redis_server, fake, mode="pubsub", reconnect_backoff=60, flush_interval=60
    ) as client:
        client.generate("warm up")
        manager = client._state
        policy = client._breakers["openai"].policy
        manager.transition("openai", Op.ACQUIRE, policy)  # loads the script

        def evalsha() -> int:
            return commands(redis_server).get("evalsha", 0)

        with manager.counting_failures() as counter:  # as a request does
            redis_server.freeze()
            try:
                manager.transition("openai", Op.ACQUIRE, policy)  # times out: degraded
            finally:
                redis_server.thaw()
            assert counter.count == 1
            # Another thread (the subscriber after a reconnection, say) reads the store.
            reconnect = threading.Thread(target=manager.refresh)
            reconnect.start()
            reconnect.join()
            assert not manager.degraded
            before = evalsha()
            manager.transition("openai", Op.ACQUIRE, policy)  # the same request: local
            assert evalsha() == before
            assert counter.count == 1
        manager.transition("openai", Op.ACQUIRE, policy)  # outside it: the store again
        assert evalsha() == before + 1
        with manager.counting_failures():  # and in the next request
            manager.transition("openai", Op.ACQUIRE, policy)
        assert evalsha() == before + 2


def test_a_burst_of_forged_events_costs_a_few_reads_and_a_real_one_still_counts(
    redis_server: RedisProcess, fake: FakeLLMServer
) -> None:
    forged = BreakerRecord(
        state=CircuitState.OPEN, version=10**15, open_until=2**52, updated_by="forger"
    )
    event = SyncEvent(EventType.OPENED, "openai", "forger", 1, forged, prefix="flexiai")
    with client_for(redis_server, fake, mode="pubsub", flush_interval=60) as client:
        client.generate("warm up")  # subscribed from here on
        manager = client._state
        wait_until(manager.backend.health_check, what="the subscriber")
        before = commands(redis_server).get("mget", 0)
        with redis_server.client() as r, r.pipeline(transaction=False) as burst:
            for _ in range(500):
                burst.publish("flexiai:events", encode_event(event))
            burst.execute()  # one round trip: they arrive together
        # A real change after the burst: this worker must still see it.
        other = RedisSyncBackend(sync_config_for(redis_server))
        try:
            policy = client._breakers["openai"].policy
            other.transition("openai", Op.TRIP, policy, "a-real-worker", open_for=60_000)
        finally:
            other.close()
        # then a malformed message: once it is counted, the subscriber has seen them all
        with redis_server.client() as r:
            r.publish("flexiai:events", b"the end")
        backend = manager.backend
        wait_until(lambda: backend.stats()["malformed_events"] == 1, what="the last message")
        reads = commands(redis_server).get("mget", 0) - before
        breaker = client._breakers["openai"]  # its view, as the subscriber left it
        assert breaker.snapshot().state is CircuitState.OPEN
        assert breaker.snapshot().updated_by == "a-real-worker"
    # each read covers every event received before it: far fewer reads than events
    assert 1 <= reads <= 50, reads


def test_a_killed_and_restarted_redis_is_resynced(
    redis_server: RedisProcess, fake: FakeLLMServer
) -> None:
    with client_for(redis_server, fake, mode="pubsub") as client:
        client.generate("warm up")
        redis_server.kill()
        assert client.generate("x").provider == "openai"
        redis_server.restart()
        with redis_server.client() as r:  # another worker opened openai meanwhile
            r.set(
                state_key("flexiai", "openai", False),
                BreakerRecord(
                    state=CircuitState.OPEN,
                    opened_at=int(time.time() * 1000),
                    open_until=int(time.time() * 1000) + 60_000,
                    version=99,
                    updated_by="other",
                ).to_json(),
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            client.generate("poll")  # requests keep succeeding while it reconnects
            if client.get_provider_status()["openai"]["state"] == "OPEN":
                break
            time.sleep(0.1)
        assert client.get_provider_status()["openai"]["updated_by"] == "other"
        assert client.generate("y").provider == "anthropic"


def test_garbage_in_the_state_keys_never_fails_a_request_and_is_logged_once(
    redis_server: RedisProcess, fake: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    with redis_server.client() as r:
        r.set(state_key("flexiai", "openai", False), "garbage")
        r.set(state_key("flexiai", "anthropic", False), '{"state": "EXPLODED"}')
    with client_for(
        redis_server, fake, mode="snapshot", snapshot_max_age=0, flush_interval=0.001
    ) as client:
        with caplog.at_level(logging.WARNING, logger="flexiai.sync.redis"):
            for _ in range(5):
                assert client.generate("x").provider == "openai"
        assert client._sync_manager is not None
        stats = client._sync_manager.backend.stats()
        with redis_server.client() as r:
            # The first refresh read both as garbage and replaced them (issue 11).
            repaired = [
                BreakerRecord.from_json(r.get(state_key("flexiai", name, False)))
                for name in ("openai", "anthropic")
            ]
    assert [record.state for record in repaired] == [CircuitState.CLOSED] * 2
    assert stats["invalid_records"] == 4  # each key read once as garbage, and overwritten
    warnings = [r for r in caplog.records if "invalid breaker state" in r.getMessage()]
    # Logged once when first read, and once when overwritten: never once per request.
    assert [w.getMessage().split(" ")[0] for w in warnings] == ["ignored", "overwrote", "overwrote"]


def window_calls(server: RedisProcess, provider: str = "openai") -> int:
    with server.client() as r:
        raw = r.get(state_key("flexiai", provider, False))
    if raw is None:
        return 0
    record = BreakerRecord.from_json(raw)
    return record.window(record.updated_at, 60_000).calls


@pytest.mark.parametrize("mode", ["pubsub", "snapshot"])
def test_a_redis_fault_while_counting_loses_at_most_the_batch_in_flight(
    redis_server: RedisProcess, fake: FakeLLMServer, mode: str
) -> None:
    settings = {"mode": mode, "snapshot_max_age": 0, "flush_interval": 0.05}
    with client_for(redis_server, fake, **settings) as client:
        for _ in range(20):
            assert client.generate("before").provider == "openai"
        manager = client._sync_manager
        assert manager is not None
        wait_until(lambda: manager.flush() and window_calls(redis_server) == 20)
        redis_server.freeze()
        try:
            for _ in range(10):  # counted locally while the store cannot answer
                assert client.generate("during").provider == "openai"
            manager.flush()
        finally:
            redis_server.thaw()
        time.sleep(0.35)  # the reconnect backoff
        for _ in range(15):
            assert client.generate("after").provider == "openai"
        wait_until(lambda: manager.flush() and window_calls(redis_server) >= 35)
        # Everything before and after the outage reached the store; of the outage's own
        # counts, only what was in flight may be missing (they counted locally instead).
        assert 35 <= window_calls(redis_server) <= 45
