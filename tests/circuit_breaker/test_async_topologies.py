"""The asyncio store reaches every topology the blocking one does, with the same keys and
script: what the twin writes, the blocking backend reads, and the other way round."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable

import pytest

from flexiai.circuit_breaker._machine import EventType, Op, Tally
from flexiai.circuit_breaker._record import CircuitState
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
from flexiai.circuit_breaker.stores.redis_async import AsyncRedisBackend
from flexiai.exceptions import StateStoreError
from flexiai.models import SyncConfig
from flexiai_dev.servers import ClusterGroup, RedisProcess, SentinelGroup
from tests.circuit_breaker.conftest import policy
from tests.support.redis_fixtures import AclServer
from tests.support.redis_fixtures import sync_config_for as _sync_config_for


def sync_config_for(server: object, **overrides: object) -> SyncConfig:
    """Timeouts a busy test machine never trips (a TLS handshake can take a while)."""
    settings: dict[str, object] = {
        "redis_socket_timeout": 10.0,
        "redis_socket_connect_timeout": 10.0,
    }
    settings.update(overrides)
    return _sync_config_for(server, **settings)


def twin_of(backend: RedisSyncBackend) -> AsyncRedisBackend:
    twin = backend.async_twin()
    assert isinstance(twin, AsyncRedisBackend)
    return twin


def round_trip(backend: RedisSyncBackend, provider: str = "openai") -> None:
    """load, transition and report through the twin; the blocking backend agrees."""
    twin = twin_of(backend)
    p = policy(failure_threshold=2)

    async def scenario() -> None:
        try:
            assert (await twin.load([provider])).records[provider].version == 0
            first = await twin.transition(provider, Op.FAILURE, p, "w-async")
            assert first.event is EventType.FAILURE
            reported = await twin.report({provider: Tally(0, 1, None)}, p, "w-async")
            assert reported.records[provider].version >= first.record.version
            opened = await twin.transition(provider, Op.FAILURE, p, "w-async")
            assert opened.record.state is CircuitState.OPEN
            assert (await twin.load([provider])).records[provider] == opened.record
            assert await twin.ping() is True
        finally:
            await twin.aclose()

    asyncio.run(scenario())
    assert backend.load([provider]).records[provider].state is CircuitState.OPEN
    # The twin measured the server's clock for the blocking backend too: no TIME needed.
    assert not backend.clock_due()


def test_standalone(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    round_trip(make_backend(sync_config_for(redis_server)))


def test_tls_with_the_ca(
    tls_redis: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    round_trip(make_backend(sync_config_for(tls_redis)))


def test_tls_without_the_ca_fails_verification(
    tls_redis: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    config = sync_config_for(tls_redis, redis_ssl_ca_certs=None)
    twin = twin_of(make_backend(config))

    async def scenario() -> None:
        try:
            with pytest.raises(StateStoreError, match=r"(?i)certificate"):
                await twin.load(["openai"])
        finally:
            await twin.aclose()

    asyncio.run(scenario())


def test_the_least_privilege_acl_user(
    acl_redis: AclServer, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    config = sync_config_for(acl_redis)
    round_trip(make_backend(config))
    twin = twin_of(make_backend(config.model_copy(update={"key_prefix": "elsewhere"})))

    async def outside_its_keys() -> None:
        try:
            with pytest.raises(StateStoreError) as info:
                await twin.transition("openai", Op.FAILURE, policy(), "w")
        finally:
            await twin.aclose()
        assert acl_redis.password not in str(info.value)

    asyncio.run(outside_its_keys())


def test_a_wrong_password_is_an_error_that_does_not_show_it(
    acl_redis: AclServer, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    wrong = "wrong-" + acl_redis.password
    twin = twin_of(make_backend(sync_config_for(acl_redis, redis_password=wrong)))

    async def scenario() -> None:
        try:
            with pytest.raises(StateStoreError) as info:
                await twin.load(["openai"])
        finally:
            await twin.aclose()
        assert wrong not in str(info.value)

    asyncio.run(scenario())


def test_sentinel(
    sentinel_redis: SentinelGroup, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    config = sync_config_for(sentinel_redis, key_prefix=f"s{uuid.uuid4().hex[:6]}")
    round_trip(make_backend(config))


def test_cluster(
    redis_cluster: ClusterGroup, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    unique = uuid.uuid4().hex[:8]
    config: SyncConfig = sync_config_for(
        redis_cluster, key_prefix=f"t{unique}", channel=f"t{unique}:events"
    )
    round_trip(make_backend(config))


def test_one_client_per_event_loop(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    twin = twin_of(make_backend(sync_config_for(redis_server)))
    seen = []

    async def use() -> None:
        await twin.load(["openai"])
        seen.append(twin._client().client)
        await twin.aclose()

    asyncio.run(use())
    asyncio.run(use())  # a second loop: a client of its own, never the first loop's
    assert len(seen) == 2 and seen[0] is not seen[1]


def test_a_supplied_blocking_client_is_driven_from_worker_threads() -> None:
    import fakeredis

    from flexiai.circuit_breaker.stores.base import ThreadedAsyncBackend

    server = fakeredis.FakeServer()
    with fakeredis.FakeRedis(server=server) as supplied:
        backend = RedisSyncBackend(SyncConfig(enabled=True), client=supplied)
        twin = backend.async_twin()
        assert isinstance(twin, ThreadedAsyncBackend)  # no asyncio twin of a supplied client
        seen: list[int] = []

        def noting(reply: object, **_: object) -> object:
            seen.append(threading.get_ident())
            return reply

        supplied.set_response_callback("MGET", noting)

        async def scenario() -> int:
            await twin.load(["openai"])
            result = await twin.transition("openai", Op.FAILURE, policy(), "w")
            assert result.record.run == 1
            return threading.get_ident()

        loop_thread = asyncio.run(scenario())
        assert seen and loop_thread not in seen  # MGET ran on a worker thread
        assert backend.load(["openai"]).records["openai"].run == 1
        backend.close()
