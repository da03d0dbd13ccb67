"""Closing a client closes its async HTTP client too: awaited by ``aclose()`` and
``async with``, scheduled on the running loop by ``close()``, and without a loop never
blocking on one."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from flexiai import FlexiAI
from flexiai.models import FlexiAIConfig
from flexiai.testing import FakeLLMServer
from tests.support.llm_fixtures import provider_config


def _client(fake_llm: FakeLLMServer) -> FlexiAI:
    return FlexiAI(FlexiAIConfig(providers=[provider_config(fake_llm, "openai", priority=1)]))


def _async_http(client: FlexiAI) -> httpx.AsyncClient:
    """The async client the providers used (read, not replaced)."""
    assert client._http_pool is not None
    return client._http_pool.async_()


@pytest.mark.anyio
async def test_async_with_closes_the_async_http_client(fake_llm: FakeLLMServer) -> None:
    async with _client(fake_llm) as client:
        assert (await client.agenerate("hi")).content
        http = _async_http(client)
    assert http.is_closed


@pytest.mark.anyio
async def test_aclose_closes_both_http_clients(fake_llm: FakeLLMServer) -> None:
    client = _client(fake_llm)
    await client.agenerate("hi")
    client.generate("hi")
    assert client._http_pool is not None
    sync_http, async_http = client._http_pool.sync(), _async_http(client)
    await client.aclose()
    assert sync_http.is_closed and async_http.is_closed


@pytest.mark.anyio
async def test_close_inside_a_running_loop_schedules_the_async_close(
    fake_llm: FakeLLMServer,
) -> None:
    client = _client(fake_llm)
    await client.agenerate("hi")
    http = _async_http(client)
    client.close()  # a sync close from async code (a lifespan that calls close())
    for _ in range(100):  # the scheduled close runs as soon as this coroutine yields
        if http.is_closed:
            break
        await asyncio.sleep(0)
    assert http.is_closed


def test_close_outside_its_loop_closes_it_there(fake_llm: FakeLLMServer) -> None:
    client = _client(fake_llm)

    async def use() -> httpx.AsyncClient:
        await client.agenerate("hi")
        return _async_http(client)

    loop = asyncio.new_event_loop()
    try:
        http = loop.run_until_complete(use())  # the loop stops; its keep-alive stays open
        client.close()  # no loop runs here: the close runs on the client's own loop
        assert http.is_closed
        client.close()  # idempotent
    finally:
        loop.close()


def test_close_from_another_thread_hands_the_close_to_the_running_loop(
    fake_llm: FakeLLMServer,
) -> None:
    """A loop serving in one thread, ``close()`` called from another (a signal handler or
    an atexit hook, say): the close runs on the client's loop, and the caller does not
    wait for it."""
    client = _client(fake_llm)
    loop = asyncio.new_event_loop()
    serving = threading.Thread(target=loop.run_forever, name="test-loop")
    serving.start()
    try:
        answer = asyncio.run_coroutine_threadsafe(client.agenerate("hi"), loop).result(30)
        assert answer.content
        http = asyncio.run_coroutine_threadsafe(_async_http_of(client), loop).result(30)
        client.close()
        # Wait for the handed-over close by queueing behind it on the same loop.
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(30)
        for _ in range(100):
            if http.is_closed:
                break
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(30)
        assert http.is_closed
    finally:
        loop.call_soon_threadsafe(loop.stop)
        serving.join()
        loop.close()


async def _async_http_of(client: FlexiAI) -> httpx.AsyncClient:
    return _async_http(client)
