"""The fleet-wide breaker store for the async API: ``RedisSyncBackend``'s asyncio twin.

Same keys, same ``breaker.lua``, same arguments (``transition_args``/``report_args``), same
reply parsing, and the same state: the twin holds its blocking backend and shares its clock
offset to the server, parse cache and counters, so ``now()`` and ``stats()`` know about
both. Only the I/O differs: redis-py's asyncio client (``redis.asyncio``), with the same
connection options (``connections.client_settings``: timeouts, TLS, ACL user, IAM
credentials) and the same ``Retry(NoBackoff(), 1)`` on ``ConnectionError``. A frozen server
therefore costs one awaited ``socket_timeout``, during which the loop serves everything
else.

An asyncio client belongs to the loop it first ran on (its connections are that loop's
transports), so the twin keeps one client per running loop, built on first use there and
closed when asyncio shuts that loop down (``flexiai._per_loop``). A forked child drops them
all (see ``flexiai._fork``) and builds its own. The subscriber of pub/sub mode and its
background flusher stay threads of the blocking backend: they are not on the loop, so they
cannot stall it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flexiai._fork import forget_parent_state
from flexiai._per_loop import PerLoop
from flexiai.circuit_breaker._machine import NO_TALLY, Op, Policy, Tally, Transition
from flexiai.circuit_breaker.stores import connections
from flexiai.circuit_breaker.stores.base import AsyncBackend, StoreSnapshot
from flexiai.circuit_breaker.stores.redis import (
    RedisSyncBackend,
    _script_source,
    function_library,
    function_load_failed,
    function_missing,
    report_args,
    transition_args,
)
from flexiai.exceptions import StateStoreError
from flexiai.models import SyncConfig

__all__ = ["AsyncRedisBackend"]


@dataclass(frozen=True, slots=True)
class _LoopClient:
    """One loop's client and its registered script (EVALSHA, SCRIPT LOAD on NOSCRIPT)."""

    client: Any
    breaker: Any
    close: Any  # an async callable releasing every connection of this client


class AsyncRedisBackend(AsyncBackend):
    """``twin``'s records, reached with asyncio I/O. ``twin`` must build its own client
    (``RedisSyncBackend(config)``): a supplied blocking client has no asyncio counterpart
    here, and ``RedisSyncBackend.async_twin`` falls back to a thread for it."""

    name = "redis"
    shared = True

    def __init__(self, twin: RedisSyncBackend) -> None:
        self._twin = twin
        self._config: SyncConfig = twin._config
        self._cluster = twin._cluster
        self._clients: PerLoop[_LoopClient] = PerLoop(self._new_client, lambda made: made.close())
        forget_parent_state(self)

    def _reset_after_fork(self) -> None:
        """In a forked child the parent's loops and their sockets are not ours to use."""
        self._clients.reset()

    # -- AsyncBackend -----------------------------------------------------------------

    async def load(self, providers: Sequence[str]) -> StoreSnapshot:
        twin = self._twin
        keys = twin.keys_for(providers)
        try:
            client = self._client().client
            raws = await client.mget(keys) if keys else []
            if twin.clock_due():
                options: dict[str, Any] = {}
                if self._cluster and keys:
                    # The node that holds the records runs the scripts: use its clock.
                    options["target_nodes"] = client.get_node_from_key(keys[0])
                before = twin._clock.monotonic()
                reply = await client.time(**options)
                twin.measured_time(reply, before, twin._clock.monotonic())
            return twin.load_reply(providers, raws)
        except Exception as exc:
            raise twin.store_error("load", exc) from exc

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
        twin = self._twin
        args = transition_args(
            twin.script_inputs(),
            provider,
            op,
            policy,
            worker_id,
            open_for=open_for,
            tally=tally,
            publish=publish,
        )
        try:
            script = self._client().breaker
            before = twin._clock.monotonic()
            reply = await script(keys=[twin.key_for(provider)], args=args)
            return twin.transition_reply(provider, reply, before, twin._clock.monotonic())
        except Exception as exc:
            raise twin.store_error(f"transition({op.value})", exc) from exc

    async def report(
        self,
        tallies: Mapping[str, Tally],
        policy: Policy,
        worker_id: str,
        *,
        read: Sequence[str] = (),
    ) -> StoreSnapshot:
        twin = self._twin
        names = list(dict.fromkeys([*tallies, *read]))
        args = report_args(twin.script_inputs(), names, tallies, policy, worker_id)
        try:
            script = self._client().breaker
            before = twin._clock.monotonic()
            reply = await script(keys=[twin.key_for(n) for n in names], args=args)
            return twin.report_reply(names, reply, before, twin._clock.monotonic())
        except Exception as exc:
            raise twin.store_error("report", exc) from exc

    async def ping(self) -> bool:
        """True if the store answered just now."""
        try:
            await self._client().client.ping()
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        """Close the running loop's client (the other loops' close as their loops end)."""
        made = self._clients.take()
        if made is not None:
            await made.close()

    def close(self) -> None:
        """Close every loop's client, each on its own loop (``PerLoop.close_all``)."""
        self._clients.close_all()

    def __repr__(self) -> str:
        return f"AsyncRedisBackend({self._twin.describe()!r})"

    # -- internals --------------------------------------------------------------------

    def _client(self) -> _LoopClient:
        if self._twin._closed:
            raise StateStoreError(f"{self._twin.describe()}: backend is closed")
        return self._clients.get()

    def _new_client(self) -> _LoopClient:
        client, close = build_async_client(self._config)
        breaker: Any
        if self._config.redis_use_functions:
            breaker = _AsyncFunction(client)
        else:
            breaker = client.register_script(_script_source("breaker.lua"))
        return _LoopClient(client, breaker, close)


class _AsyncFunction:
    """``FCALL`` of flexiai's function library over asyncio: ``redis._Function``'s twin
    (loads the library once if this user may, else says how to)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._name, self._code = function_library()

    async def __call__(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        try:
            return await self._client.fcall(self._name, len(keys), *keys, *args)
        except Exception as exc:
            if not function_missing(exc):
                raise
        try:
            await self._client.function_load(self._code)
        except Exception as exc:
            function_load_failed(self._name, exc)
        return await self._client.fcall(self._name, len(keys), *keys, *args)


def build_async_client(config: SyncConfig) -> tuple[Any, Any]:
    """A ``redis.asyncio`` client for ``config`` and the coroutine function that closes it:
    standalone, TLS, ACL user, IAM, Sentinel or Cluster, as ``connections`` builds the
    blocking one. Opens no socket (a cluster discovers its nodes on the first command)."""
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    endpoint, options = connections.client_settings(config)
    if config.redis_sentinels:
        from redis.asyncio.sentinel import Sentinel

        endpoint.pop("host", None), endpoint.pop("port", None)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [connections.host_port(item) for item in config.redis_sentinels],
            sentinel_kwargs=connections.sentinel_options(config, options, retry),
            retry=retry,
            **endpoint,
            **options,
        )
        client = sentinel.master_for(config.redis_sentinel_service or "")

        async def close_sentinel() -> None:
            await client.aclose()
            for sentinel_client in sentinel.sentinels:
                await sentinel_client.aclose()

        return client, close_sentinel
    if config.redis_cluster:
        from redis.asyncio.cluster import RedisCluster

        endpoint.pop("db", None)
        cluster = RedisCluster(retry=retry, dynamic_startup_nodes=False, **endpoint, **options)
        return cluster, cluster.aclose
    client = aredis.Redis(retry=retry, **endpoint, **options)
    return client, client.aclose
