"""The async store after ``os.fork``: the child never uses the parent's asyncio client.

The parent has made an async call on a loop it keeps, so its twin holds that loop's
``redis.asyncio`` client and pooled connection. A child forked by ``multiprocessing``
(fork start method) starts with no asyncio client, builds its own on its own loop, and
answers; the server sees a connection id of the child's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

from flexiai import FlexiAI
from flexiai.circuit_breaker.stores.redis_async import AsyncRedisBackend
from flexiai.models import FlexiAIConfig
from flexiai.testing import FakeLLMServer
from flexiai_dev.servers import RedisProcess
from tests.support.llm_fixtures import provider_config
from tests.support.redis_fixtures import sync_config_for

#: Bounds the wait on the child, so a child that hangs fails the test instead of hanging it.
WAIT_SECONDS = 120


def _twin(client: FlexiAI) -> AsyncRedisBackend:
    twin = client._state.async_backend
    assert isinstance(twin, AsyncRedisBackend)
    return twin


async def _client_id(twin: AsyncRedisBackend) -> int:
    return int(await twin._client().client.client_id())


def _child(client: FlexiAI, results: Any) -> None:
    twin = _twin(client)
    inherited = len(twin._clients)

    async def use() -> dict[str, Any]:
        response = await client.agenerate("hello from a child")
        return {"answered": response.content, "redis_id": await _client_id(twin)}

    outcome = asyncio.run(use())
    results.put({"inherited": inherited, "worker_id": client.worker_id, **outcome})


def test_a_forked_child_builds_its_own_asyncio_client(
    redis_server: RedisProcess, fake_llm: FakeLLMServer
) -> None:
    config = FlexiAIConfig(
        providers=[provider_config(fake_llm, "openai")], sync=sync_config_for(redis_server)
    )
    client = FlexiAI(config)
    loop = asyncio.new_event_loop()  # kept open: its asyncio client stays in the twin
    try:
        loop.run_until_complete(client.agenerate("hello from the parent"))
        twin = _twin(client)
        assert len(twin._clients) == 1
        parent_id = loop.run_until_complete(_client_id(twin))

        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=_child, args=(client, results))
        child.start()
        got = results.get(timeout=WAIT_SECONDS)
        child.join(WAIT_SECONDS)
        assert child.exitcode == 0
        assert got["inherited"] == 0  # the parent's loop client is not the child's
        assert got["answered"]
        assert got["redis_id"] != parent_id
        assert got["worker_id"] != client.worker_id
        # The parent's client still works on its loop.
        assert loop.run_until_complete(client.agenerate("again")).content
        loop.run_until_complete(client.aclose())
    finally:
        loop.close()
        client.close()
