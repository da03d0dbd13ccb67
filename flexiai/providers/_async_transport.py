"""The async pool's transport: httpx's own, made fair to the event loop under a burst.

Imported by the first async call only (it imports httpcore and asyncio), so these classes
are built then, not at ``import flexiai``. Three changes, each found by ``bench/async_loop.py``
(100 concurrent requests; ``docs/performance.md`` has the figures):

* **A connection is opened in its turn** on the loop (``flexiai._loop_turns``). A burst that
  needs new connections otherwise opens them all at once, and anyio's connect (a task group
  racing the addresses, then cancelling the losers) makes that the costliest thing a burst
  does on the loop.
* **"Is this idle socket readable?" is answered cheaply** (``PooledStream``). Before each
  request it assigns, and after each response, httpcore's pool asks every idle connection
  whether its peer hung up; anyio answers by building a dict of all its typed attributes
  first, about 10 us a time, so with 20 kept-alive connections a burst of 100 spent 50 ms
  there. The socket is looked up once and polled directly, as httpcore's sync backend does.
* **Requests enter the pool one at a time** (``PoolEntryTransport``). httpcore gives a new
  request the first idle connection, which stays idle until the request's task, a few loop
  iterations later, marks it busy. Every request that enters meanwhile is given the same
  connection; all but one then fail over inside httpcore (``ConnectionNotAvailable``) and go
  round again, all onto the next idle connection, or, finding none idle, open new ones. A
  burst that takes turns enters over many iterations, so with 20 kept-alive connections it
  opened about 80 new ones per burst and closed them again once idle (a connect, a server
  thread and a TLS handshake each, and reference cycles for the collector: the loop's worst
  stall tripled), and with 100 kept alive the retries piled up (p99 latency 1.6 s). So a
  request waits (first come, first served) until the one before it has taken its
  connection, which its first write shows, or is opening a new one. That wait is a few
  loop iterations per request; no request waits for another's reply.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpcore
import httpx
from httpcore._utils import is_socket_readable

from flexiai._loop_turns import take_turn
from flexiai.providers.transport import _with_backend, shared_ssl_context

if TYPE_CHECKING:
    import ssl

__all__ = ["turn_taking_transport"]


class _Entrant:
    """The request that holds the pool's entry: it lets the next one in once."""

    __slots__ = ("_entry",)

    def __init__(self, entry: asyncio.Lock) -> None:
        self._entry: asyncio.Lock | None = entry

    def let_next_in(self) -> None:
        if self._entry is not None:
            self._entry.release()
            self._entry = None


#: The request entering the pool in this task, until it lets the next one in.
_entrant: contextvars.ContextVar[_Entrant | None] = contextvars.ContextVar(
    "flexiai_pool_entrant", default=None
)


def _let_next_in() -> None:
    entrant = _entrant.get()
    if entrant is not None:
        entrant.let_next_in()


class PoolEntryTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, whose pool requests enter one at a time (see the module's
    docstring). A request waiting here is bounded by the attempt's cancel scope, as any
    await in the exchange is."""

    _entry: asyncio.Lock | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._entry is None:
            self._entry = asyncio.Lock()  # FIFO; bound to the loop on first contention
        entry = self._entry
        await entry.acquire()
        entrant = _Entrant(entry)
        token = _entrant.set(entrant)
        try:
            return await super().handle_async_request(request)
        finally:
            entrant.let_next_in()  # it failed before taking a connection: still the next
            _entrant.reset(token)


class PooledStream(httpcore.AsyncNetworkStream):
    """anyio's stream, which answers "is_readable" by polling its socket, and whose first
    write shows that its request has taken the connection."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._socket = stream.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _let_next_in()  # the connection is marked busy by now: no one else is given it
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        return PooledStream(stream)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return is_socket_readable(self._socket)
        return self._stream.get_extra_info(info)


class TurnTakingBackend(httpcore.AsyncNetworkBackend):
    """The pool's network backend: connections opened in their turn, as ``PooledStream``."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        _let_next_in()  # a new connection is this request's alone
        await take_turn()
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return PooledStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        _let_next_in()
        await take_turn()
        stream = await self._backend.connect_unix_socket(path, timeout, socket_options)
        return PooledStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def turn_taking_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """The async pool's transport (see the module's docstring)."""
    return _with_backend(
        PoolEntryTransport(limits=limits, verify=shared_ssl_context()),
        TurnTakingBackend,
        "a burst opens its connections all in the same loop iteration",
    )
