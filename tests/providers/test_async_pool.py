"""The async HTTP pool's own sockets (flexiai.providers.transport): the answers httpcore's
pool needs from them, on a real loopback server."""

from __future__ import annotations

import pytest

from flexiai.providers.transport import HttpPool
from flexiai.testing import FakeLLMServer
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
