"""One resource per running event loop, closed on that loop when asyncio shuts it down.

An asyncio client (httpx's, redis-py's) belongs to the loop it first ran on: its
connections are that loop's transports, which no other loop can use or close. A client of
flexiai outlives loops: a module-level client in a Lambda handler that calls
``asyncio.run`` in each invocation, a script that calls it twice, threads with loops of
their own. So it keeps one such resource per loop, and:

* **closes it on its loop when the loop shuts down.** ``asyncio.run``, every
  ``asyncio.Runner`` and uvicorn close the async generators still suspended on a loop
  before they close the loop: the one hook a loop's end offers. An async generator started
  on the loop when the resource is built closes the resource there, then forgets it.
  Without it, the sockets were left to the garbage collector ("unclosed transport"), and
  HTTP requests sent on a kept-alive connection of the finished loop raised "Event loop is
  closed".
* **holds no loop once it has ended.** Entries are dropped at shutdown, and those of loops
  closed without one (``loop.close()`` alone) when another loop builds its resource. (A
  weakly keyed dict would not do: a value whose connections reach their loop keeps its
  key, and so every loop a process ever ran, alive.)

Imported by async code only: it imports asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

_T = TypeVar("_T")

_log = logging.getLogger("flexiai")

#: Closes scheduled on a running loop by ``PerLoop.close_all``, until they finish (a loop
#: keeps only weak references to its tasks).
_closing: set[asyncio.Task[None]] = set()


class PerLoop(Generic[_T]):
    """The running loop's ``build()``, closed with ``close(resource)`` on its loop."""

    def __init__(self, build: Callable[[], _T], close: Callable[[_T], Awaitable[None]]) -> None:
        self._build = build
        self._close = close
        self._resources: dict[asyncio.AbstractEventLoop, _T] = {}
        self._closers: dict[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = {}
        self._lock = threading.Lock()

    def get(self) -> _T:
        """The running loop's resource, built on first use there."""
        loop = asyncio.get_running_loop()
        resource = self._resources.get(loop)
        if resource is None:
            with self._lock:
                resource = self._resources.get(loop)
                if resource is None:
                    for ended in [other for other in self._resources if other.is_closed()]:
                        self._forget(ended)  # its sockets went with that loop
                    resource = self._resources[loop] = self._build()
                    self._closers[loop] = self._closer(resource)
        return resource

    def take(self) -> _T | None:
        """Remove the running loop's resource, for its owner to close now."""
        with self._lock:
            loop = asyncio.get_running_loop()
            resource = self._resources.get(loop)
            self._forget(loop)
        return resource

    def close_all(self) -> None:
        """Close every loop's resource without blocking on a loop: on the running loop in a
        task, on a loop running in another thread by handing it over, on a loop that is not
        running by running it (closing sends nothing: it drops sockets). A closed loop took
        its sockets along."""
        with self._lock:
            resources, self._resources, self._closers = self._resources, {}, {}
        if not resources:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for owner, resource in resources.items():
            try:
                if owner is running:
                    task = owner.create_task(self._closed(resource))
                    _closing.add(task)
                    task.add_done_callback(_closing.discard)
                elif owner.is_running():
                    asyncio.run_coroutine_threadsafe(self._closed(resource), owner)
                elif not owner.is_closed():
                    owner.run_until_complete(self._closed(resource))
            except Exception as exc:  # the loop closed meanwhile, or refuses to run here
                _log.debug("closing %r: %s: %s", resource, type(exc).__name__, exc)

    def reset(self) -> None:
        """Forget everything, closing nothing: a forked child's loops are the parent's."""
        self._resources, self._closers = {}, {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many loops hold a resource now."""
        return len(self._resources)

    async def _closed(self, resource: _T) -> None:
        await self._close(resource)

    def _forget(self, loop: asyncio.AbstractEventLoop, resource: _T | None = None) -> None:
        """Drop ``loop``'s entry (only if it is still ``resource``, when given)."""
        if resource is None or self._resources.get(loop) is resource:
            self._resources.pop(loop, None)
            self._closers.pop(loop, None)

    def _closer(self, resource: _T) -> AsyncGenerator[None, None]:
        """An async generator, started on the running loop, that closes ``resource`` when
        the loop shuts down. Kept by this object: a loop holds its generators weakly.
        Dropped while its loop runs, it closes the resource then; on a closed loop it does
        nothing."""

        async def close_at_shutdown() -> AsyncGenerator[None, None]:
            try:
                yield
            finally:
                with self._lock:
                    self._forget(asyncio.get_running_loop(), resource)
                await self._close(resource)  # idempotent closes: the owner may have closed it

        closer = close_at_shutdown()
        # Run it to its first yield, here and now: that registers it with the running loop.
        with contextlib.suppress(StopIteration):
            closer.asend(None).send(None)
        return closer
