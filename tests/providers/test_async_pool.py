"""The async HTTP pool (flexiai.providers.transport, flexiai.providers._async_transport): the
answers httpcore's pool needs from its sockets, the connections a burst keeps, and the pool's
entry, one request at a time, on a real loopback server."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from flexiai.providers._async_transport import turn_taking_transport
from flexiai.providers.transport import HttpPool
from flexiai.testing import FakeLLMServer, Slow
from tests.providers.raw_server import RawServer, json_reply


@pytest.mark.anyio
async def test_a_kept_alive_connection_the_server_closed_is_not_reused() -> None:
    # The server promises keep-alive, then closes each connection after its answer. The
    # pool must see that the idle socket is readable (the peer's FIN) and open a new
    # connection, instead of sending the next request into a closed one.
    reply = json_reply({"ok": True}, headers={"connection": "keep-alive"})
    pool = HttpPool()
    with RawServer(reply) as server:
        client = pool.async_()
        first = await client.get(f"{server.url}/first")
        assert first.json() == {"ok": True}
        server._threads[0].join()  # it has closed that connection
        second = await client.get(f"{server.url}/second")
        assert second.json() == {"ok": True}
        assert server.count == 2
    await pool.aclose()


@pytest.mark.anyio
async def test_a_kept_alive_connection_is_reused() -> None:
    # The same check must not discard a healthy idle connection.
    pool = HttpPool()
    with FakeLLMServer() as llm:
        client = pool.async_()
        streams = []
        for _ in range(3):
            answer = await client.get(f"{llm.url}/no-such-path")
            streams.append(answer.extensions["network_stream"])
        assert all(stream is streams[0] for stream in streams)
    await pool.aclose()


async def _chat(client: httpx.AsyncClient, llm: FakeLLMServer, name: str) -> httpx.Response:
    return await client.post(
        f"{llm.base_url(name, 'openai')}/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    )


@pytest.mark.anyio
async def test_a_burst_keeps_its_connections_for_the_next_burst() -> None:
    # 40 requests in flight at once need 40 connections. Keeping only 20 of them alive
    # (httpx's default) closed the rest once idle, and the next burst opened them again: a
    # connect and a TLS handshake each, on the loop.
    pool = HttpPool()
    with FakeLLMServer() as llm:
        llm.set_default("held", Slow(0.3))  # holds each connection while the burst arrives
        client = pool.async_()
        opened = []
        for _ in range(2):
            before = llm.connections_accepted()
            answers = await asyncio.gather(*(_chat(client, llm, "held") for _ in range(40)))
            assert all(answer.status_code == 200 for answer in answers)
            opened.append(llm.connections_accepted() - before)
    await pool.aclose()

    assert opened[0] > 20  # the burst did need more than httpx keeps by default
    assert opened[1] == 0


@pytest.mark.anyio
async def test_a_request_cancelled_before_it_has_a_connection_lets_the_next_one_in() -> None:
    # One connection, busy with a slow reply. The first request behind it enters the pool
    # and waits for that connection; the second waits to enter. Cancelling the first (its
    # deadline) must let the second in, or the second would wait for ever.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with FakeLLMServer() as llm:
        llm.script("p", [Slow(0.5)])
        async with httpx.AsyncClient(transport=turn_taking_transport(limits)) as client:
            busy = asyncio.ensure_future(_chat(client, llm, "p"))
            while llm.count("p") < 1:  # the slow one holds the connection
                await asyncio.sleep(0.01)
            first = asyncio.ensure_future(_chat(client, llm, "p"))
            await asyncio.sleep(0)  # in the pool, waiting for the connection
            second = asyncio.ensure_future(_chat(client, llm, "p"))
            await asyncio.sleep(0)  # waiting to enter
            first.cancel()

            answers = await asyncio.wait_for(asyncio.gather(busy, second), timeout=30)

        assert [answer.status_code for answer in answers] == [200, 200]
        assert first.cancelled()
        assert llm.count("p") == 2
