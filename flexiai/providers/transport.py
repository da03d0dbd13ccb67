"""One lazily built httpx client pair per FlexiAI client, shared by all its HTTP providers.

Built on first use so that constructing a client opens nothing and imports nothing heavy;
kept alive so warm Lambda invocations and long-lived workers reuse connections.

Hard deadlines. httpx's timeouts apply to each socket operation, so a server that sends one
byte a second never trips a 2 s read timeout and can hold an exchange open indefinitely. The
sync client therefore runs its sockets through ``_DeadlineBackend``: before every connect,
TLS handshake, read and write it shrinks the operation's timeout to what is left of
``flexiai._deadline.remaining_time()`` (which a provider sets to the attempt's end with
``attempt_deadline``), and fails with httpcore's own timeout error once nothing is left. An
exchange therefore ends by its deadline however the peer paces its bytes. The async client
needs no such help: the provider runs the exchange under a cancel scope
(``anyio.fail_after``), which interrupts any await. What the async pool does instead, to stay
fair to the event loop under a burst, is in ``flexiai.providers._async_transport``.

What is not bounded this way: DNS resolution in the sync client (``getaddrinfo`` blocks and
takes no timeout); requests sent through a proxy taken from ``HTTP(S)_PROXY``, which httpx
routes through transports it builds itself; and a ``transport=`` passed to ``FlexiAI`` (tests).
Those keep httpx's per-operation timeouts for the headers, and the provider's between-chunk
deadline check bounds their body.

Forks. A pool copied into a forked child (a client built before ``gunicorn --preload``
forked its workers) forgets the parent's clients there, unclosed: their keep-alive sockets
are the parent's connections, and the child builds its own on first use.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from flexiai._deadline import remaining_time
from flexiai._fork import forget_parent_state

if TYPE_CHECKING:
    import asyncio
    import ssl
    from collections.abc import AsyncGenerator, Callable, Iterable

    import httpcore
    import httpx

__all__ = ["HttpPool"]

_T = TypeVar("_T")

_log = logging.getLogger("flexiai.providers")

#: Writes are split so a peer that drains slowly cannot stretch one ``send`` past the deadline.
_WRITE_PIECE = 64 * 1024


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` shrunk to the time left before the deadline; ``error`` if none is left."""
    left = remaining_time()
    if left is None:
        return timeout
    if left <= 0:
        raise error("the attempt's deadline has passed")
    return left if timeout is None else min(timeout, left)


def _deadline_backend(inner: Any) -> Any:
    """Wrap an httpcore sync ``NetworkBackend`` so every socket operation honours the
    deadline."""
    return _deadline_backend_class()(inner)


@functools.cache
def _deadline_backend_class() -> Any:
    """The wrapper classes, defined once on first use: httpcore is imported only when a
    provider sends."""
    import httpcore

    class DeadlineStream(httpcore.NetworkStream):
        def __init__(self, stream: httpcore.NetworkStream) -> None:
            self._stream = stream

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            view = memoryview(buffer)
            while view:
                piece, view = view[:_WRITE_PIECE], view[_WRITE_PIECE:]
                self._stream.write(bytes(piece), _bounded(timeout, httpcore.WriteTimeout))

        def close(self) -> None:
            self._stream.close()

        def start_tls(
            self,
            ssl_context: ssl.SSLContext,
            server_hostname: str | None = None,
            timeout: float | None = None,
        ) -> httpcore.NetworkStream:
            stream = self._stream.start_tls(
                ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout)
            )
            return DeadlineStream(stream)

        def get_extra_info(self, info: str) -> Any:
            return self._stream.get_extra_info(info)

    class DeadlineBackend(httpcore.NetworkBackend):
        def __init__(self, backend: httpcore.NetworkBackend) -> None:
            self._backend = backend

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Iterable[Any] | None = None,
        ) -> httpcore.NetworkStream:
            stream = self._backend.connect_tcp(
                host,
                port,
                _bounded(timeout, httpcore.ConnectTimeout),
                local_address,
                socket_options,
            )
            return DeadlineStream(stream)

        def connect_unix_socket(
            self,
            path: str,
            timeout: float | None = None,
            socket_options: Iterable[Any] | None = None,
        ) -> httpcore.NetworkStream:
            stream = self._backend.connect_unix_socket(
                path, _bounded(timeout, httpcore.ConnectTimeout), socket_options
            )
            return DeadlineStream(stream)

        def sleep(self, seconds: float) -> None:
            self._backend.sleep(seconds)

    return DeadlineBackend


_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every pool in the process.

    httpx builds a context per client by default, and loading certifi's CA bundle into it
    costs a few milliseconds and about 1 MB of C heap that the allocator keeps after the
    client is closed: a process that creates and closes clients grew by that much per client
    until it plateaued. Sharing one (as ``ssl`` allows: contexts are safe to use from many
    threads) makes a client cost only its Python objects. Built like httpx's own default,
    so ``SSL_CERT_FILE``/``SSL_CERT_DIR`` are honoured, as read when the first client sends.
    """
    global _ssl_context
    if _ssl_context is None:
        import httpx

        with _ssl_lock:
            if _ssl_context is None:
                _ssl_context = httpx.create_ssl_context()
    return _ssl_context


def _with_backend(transport: _T, wrap: Callable[[Any], Any], lost: str) -> _T:
    """httpx's own transport (TLS, proxies and limits as httpx configures them) whose
    connection pool opens its sockets through ``wrap(its backend)``.

    httpx builds its httpcore pool without a way to pass a network backend, so the pool's
    backend is swapped before the pool has opened anything (httpx 0.27 and 0.28 name it
    ``_pool._network_backend``). Should a future httpx lay this out differently, the plain
    transport is used and a warning says what is ``lost``.
    """
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if pool is None or backend is None:  # pragma: no cover - depends on the httpx version
        _log.warning("flexiai: this httpx does not let flexiai wrap its sockets: %s", lost)
        return transport
    pool._network_backend = wrap(backend)
    return transport


def _deadline_transport(limits: httpx.Limits) -> httpx.HTTPTransport:
    """The sync pool's transport: every socket operation honours the attempt's deadline."""
    import httpx

    return _with_backend(
        httpx.HTTPTransport(limits=limits, verify=shared_ssl_context()),
        _deadline_backend,
        "whole exchanges are not bounded, per-read timeouts only",
    )


class HttpPool:
    def __init__(
        self,
        *,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._transport = transport
        self._async_transport = async_transport
        self._sync: httpx.Client | None = None
        # One async client per event loop: a connection belongs to the loop that opened it.
        self._async: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._closers: dict[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = {}
        self._lock = threading.Lock()
        forget_parent_state(self)

    def sync(self) -> httpx.Client:
        if self._sync is None:
            import httpx

            with self._lock:
                if self._sync is None:
                    limits = httpx.Limits(max_keepalive_connections=20, keepalive_expiry=60)
                    self._sync = httpx.Client(
                        transport=self._transport or _deadline_transport(limits),
                        limits=limits,
                        verify=shared_ssl_context(),  # also for proxies taken from the env
                        headers={"user-agent": "flexiai"},
                    )
        return self._sync

    def async_(self) -> httpx.AsyncClient:
        """The running loop's client. A client used from a second loop (a second
        ``asyncio.run``, as a Lambda handler that runs one per invocation does, or a thread
        with a loop of its own) gets a pool of its own: the first loop's kept-alive
        connections cannot be used from it, and sending on one raised "Event loop is
        closed". The pools of loops that have closed since are dropped on the way."""
        import asyncio  # only async callers get here

        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            with self._lock:
                client = self._async.get(loop)
                if client is None:
                    for finished in [other for other in self._async if other.is_closed()]:
                        self._forget(finished)
                    client = self._async[loop] = self._new_async_client()
                    self._closers[loop] = _closes_with_its_loop(client, self._forget)
        return client

    def _forget(
        self, loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient | None = None
    ) -> None:
        """Drop ``loop``'s client (only if it is still ``client``, when given)."""
        if client is None or self._async.get(loop) is client:
            self._async.pop(loop, None)
            self._closers.pop(loop, None)

    def _new_async_client(self) -> httpx.AsyncClient:
        import httpx

        from flexiai.providers._async_transport import turn_taking_transport

        # As many kept alive as may be open (httpx's default keeps 20): a burst above 20
        # would otherwise close the rest once idle, and the next burst open them again, a
        # TLS handshake each. The OpenAI SDK keeps 100 too.
        limits = httpx.Limits(
            max_connections=100, max_keepalive_connections=100, keepalive_expiry=60
        )
        return httpx.AsyncClient(
            transport=self._async_transport or turn_taking_transport(limits),
            limits=limits,
            verify=shared_ssl_context(),
            headers={"user-agent": "flexiai"},
        )

    def close(self) -> None:
        """Close every client without blocking on a loop. An async client's connections
        belong to the event loop that opened them, and only that loop can close them: from
        inside that loop the close is scheduled there, a loop running in another thread is
        handed the close, and a loop that is not running runs it (it sends nothing:
        HTTP/1.1 closes by dropping the socket). A loop that has been closed
        (``asyncio.run`` returned) cannot close anything any more: its sockets are freed
        with the client, and ``aclose()`` inside the loop is the way to avoid that."""
        with self._lock:
            sync, self._sync = self._sync, None
            clients, self._async, self._closers = self._async, {}, {}
        if sync is not None:
            sync.close()
        for owner, client in clients.items():
            _close_on(owner, client)

    async def aclose(self) -> None:
        import asyncio

        with self._lock:
            loop = asyncio.get_running_loop()
            client = self._async.get(loop)
            self._forget(loop)
        if client is not None:
            await client.aclose()
        self.close()

    def _reset_after_fork(self) -> None:
        self._sync = None
        self._async = {}
        self._closers = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HttpPool(sync={self._sync is not None}, async={bool(self._async)})"


def _closes_with_its_loop(
    client: httpx.AsyncClient,
    forget: Callable[[asyncio.AbstractEventLoop, httpx.AsyncClient], None],
) -> AsyncGenerator[None, None]:
    """An async generator, started on the running loop, that closes ``client`` when that loop
    shuts down. ``asyncio.run`` (and uvicorn, and every ``asyncio.Runner``) closes the async
    generators still suspended on a loop before it closes the loop: that is the one hook a
    loop's end offers. Without it, a loop that ended (a Lambda handler that runs
    ``asyncio.run`` per invocation) left its kept-alive sockets to the garbage collector.
    The pool keeps the generator (a loop holds its generators only weakly); dropped while
    its loop runs, it closes the client then, and on a closed loop it does nothing."""

    async def close_at_shutdown() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            import asyncio

            forget(asyncio.get_running_loop(), client)
            await client.aclose()  # idempotent: the pool may have closed it already

    closer = close_at_shutdown()
    # Run it to its first yield, here and now: that registers it with the running loop.
    with contextlib.suppress(StopIteration):
        closer.asend(None).send(None)
    return closer


def _close_on(owner: asyncio.AbstractEventLoop, client: httpx.AsyncClient) -> None:
    """Close ``client`` on ``owner``, the loop its connections belong to (see
    ``HttpPool.close``), without blocking on it."""
    import asyncio  # here: a process that never goes async never imports it

    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    try:
        if owner is running:
            task = owner.create_task(client.aclose())
            _closing.add(task)  # the loop keeps only a weak reference to its tasks
            task.add_done_callback(_closing.discard)
        elif owner.is_running():
            asyncio.run_coroutine_threadsafe(client.aclose(), owner)
        elif not owner.is_closed():
            owner.run_until_complete(client.aclose())
        # A closed loop took its sockets along: they are freed with the client.
    except Exception as exc:  # the loop closed meanwhile, or refuses to run here
        _log.debug("closing the async HTTP client: %s: %s", type(exc).__name__, exc)


#: Async closes scheduled by ``HttpPool.close`` inside a running loop, until they finish.
_closing: set[asyncio.Task[None]] = set()
