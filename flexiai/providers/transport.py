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

import functools
import logging
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from flexiai._deadline import remaining_time
from flexiai._fork import forget_parent_state

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Iterable

    import httpcore
    import httpx

    from flexiai._per_loop import PerLoop

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
        # One async client per event loop (see flexiai._per_loop), made on the first async
        # call: a process that never goes async never imports asyncio for it.
        self._async: PerLoop[httpx.AsyncClient] | None = None
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
        """The running loop's client: a client used from a second loop (a second
        ``asyncio.run``) cannot use the first loop's kept-alive connections."""
        if self._async is None:
            import httpx

            from flexiai._per_loop import PerLoop

            with self._lock:
                if self._async is None:
                    self._async = PerLoop(self._new_async_client, httpx.AsyncClient.aclose)
        return self._async.get()

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
        """Close every client without blocking on a loop (``PerLoop.close_all``): a loop's
        connections are closed by that loop. ``aclose()`` inside the loop waits for it."""
        with self._lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()
        if self._async is not None:
            self._async.close_all()

    async def aclose(self) -> None:
        client = None if self._async is None else self._async.take()
        if client is not None:
            await client.aclose()
        self.close()

    def _reset_after_fork(self) -> None:
        self._sync = None
        if self._async is not None:
            self._async.reset()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HttpPool(sync={self._sync is not None}, async={bool(self._async)})"
