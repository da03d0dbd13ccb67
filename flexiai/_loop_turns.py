"""Concurrent async requests take turns on the event loop instead of holding it together.

asyncio runs every ready task once per loop iteration, and nothing else (no timer, no other
coroutine's I/O) runs until they all reach their next suspension. A burst of requests that
become ready together (a ``gather`` of 100 calls, 100 HTTP requests read by one uvicorn
worker in the same iteration, 100 store reads failing on one timeout) therefore does all of
its CPU-bound steps back to back: building each request, httpcore assigning each one to a
pooled connection (work that grows with the number of connections), handling each reply.
Measured by ``bench/async_loop.py`` on a 2-core VM, that held the loop for 20-30 ms, with or
without flexiai around httpx.

``take_turn()`` runs before each step of a request (a store call, a provider attempt, a
backoff), before the step's reply is handled, before a provider's body is read and before
a connection is opened. The first step of a loop iteration opens a slice of
``SLICE_SECONDS``; later steps of the same iteration go on while the slice lasts and no more
than a batch of them has gone. Past that, a step queues (first come, first served) and a
pump, once per iteration, wakes a batch of queued steps for the next iteration: those that
find the slice used up wait again at the head of the queue. The batch shrinks to as many as
fitted in the slice, and in proportion when a whole iteration ran past
``_ITERATION_SECONDS`` (a step's slice ends at its first suspension, and what it started
comes due later, outside any turn); it doubles when there was room. Waiting costs nothing
per iteration, unlike yielding and checking again. Outside a burst every step is the first
of its iteration and goes straight on: one clock read and, once per iteration, one
``call_soon``. What still runs unsliced is httpx's and anyio's own handling of I/O as it
arrives (headers, closed connections), which no caller of theirs can split.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
import weakref
from typing import Any

__all__ = ["SLICE_SECONDS", "take_turn", "take_turn_after"]

#: How long one loop iteration may run flexiai steps. Small enough for a 1 ms timer to fire
#: within a few ms of its deadline while a burst is served, large enough that a lone request
#: never waits.
SLICE_SECONDS = 0.0005
#: The most queued steps one iteration lets through, however cheap they were.
_MAX_BATCH = 64
#: How long a whole loop iteration may take while steps are queued. A step's slice covers
#: it only up to its first suspension; what it started goes on in later iterations as I/O
#: and locks let it (httpcore takes a lock, yielding, before it sends), so the batches of
#: a few iterations pile up in one. A 1 ms timer fires at most about two iterations late,
#: and a young collection (up to 2 ms under a burst on a slow VM) may fall in either: 2 ms
#: left the worst of 10 bursts at 5.4-5.7 ms in half the runs, 1.5 ms at 3.1-5.0 ms.
_ITERATION_SECONDS = 0.0015


class _Turns:
    """The turns on one event loop."""

    __slots__ = (
        "_admitted",
        "_batch",
        "_batch_ran",
        "_batch_started",
        "_last_pump",
        "_open",
        "_pumping",
        "_requeued",
        "_started",
        "_waiters",
    )

    # It keeps no reference to its loop (every method runs on it): ``_turns`` is keyed
    # weakly by the loop, and a value holding its key would keep every loop a process ever
    # ran (each ``asyncio.run``) alive.
    def __init__(self) -> None:
        self._open = False  # a slice is open in this iteration
        self._started = 0.0
        self._admitted = 0  # steps let straight through in this iteration's slice
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._pumping = False
        # The batch the pump wakes, and the most a slice lets straight through: sized by
        # how many of the last one fitted in the slice and how long its iteration took.
        self._batch = 4
        self._batch_started: float | None = None
        self._batch_ran = 0
        self._requeued: list[asyncio.Future[None]] = []
        self._last_pump: float | None = None  # while pumping: when the pump last ran

    def ticket(self) -> asyncio.Future[None] | None:
        """None to go on now, or a future to wait for: set when it is this step's turn."""
        if not self._waiters:  # first come, first served: no overtaking the queue
            now = time.perf_counter()
            if not self._open:
                self._open, self._started, self._admitted = True, now, 1
                asyncio.get_running_loop().call_soon(self._close)  # runs first thing next iteration
                return None
            # No more than a batch either: a step that suspends at once (httpcore takes a
            # lock before it sends) costs its slice nothing and does its work later.
            if now - self._started < SLICE_SECONDS and self._admitted < self._batch:
                self._admitted += 1
                return None
        waiter = asyncio.get_running_loop().create_future()
        self.enqueue(waiter)
        return waiter

    def enqueue(self, waiter: asyncio.Future[None], *_: object) -> None:
        """Queue ``waiter``: the pump sets it when its turn comes."""
        self._waiters.append(waiter)
        if not self._pumping:
            self._pumping = True
            asyncio.get_running_loop().call_soon(self._pump)

    def woken_ticket(self) -> asyncio.Future[None] | None:
        """For a step the pump woke: None to go on, or a future if its batch has used the
        slice already (it keeps its place at the head of the queue)."""
        now = time.perf_counter()
        if self._batch_started is None:
            self._batch_started = now
        elif now - self._batch_started >= SLICE_SECONDS:
            waiter = asyncio.get_running_loop().create_future()
            self._requeued.append(waiter)
            return waiter
        self._batch_ran += 1
        return None

    def _close(self) -> None:
        self._open = False

    def _pump(self) -> None:
        # The steps woken last time ran just before this callback (their wake-ups were
        # queued first). Some waited again: the batch was too big, wake as many as ran.
        # The whole iteration took too long (earlier batches' work came due with it):
        # shrink the batch in proportion. Neither: there is room, wake more.
        now = time.perf_counter()
        iteration = 0.0 if self._last_pump is None else now - self._last_pump
        self._last_pump = now
        if self._requeued:
            self._batch = max(1, self._batch_ran)
            self._waiters.extendleft(reversed(self._requeued))
            self._requeued.clear()
        if iteration > _ITERATION_SECONDS:
            self._batch = max(1, int(self._batch * _ITERATION_SECONDS / iteration))
        elif self._batch_ran >= self._batch:
            self._batch = min(_MAX_BATCH, self._batch * 2)
        self._batch_started, self._batch_ran = None, 0
        woken = 0
        while self._waiters and woken < self._batch:
            waiter = self._waiters.popleft()
            if not waiter.done():  # its task was cancelled while it waited
                waiter.set_result(None)
                woken += 1
        if woken:
            asyncio.get_running_loop().call_soon(self._pump)
        else:
            self._pumping, self._last_pump = False, None


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turns] = weakref.WeakKeyDictionary()


def _on(loop: asyncio.AbstractEventLoop) -> _Turns:
    turns = _turns.get(loop)
    if turns is None:
        turns = _turns[loop] = _Turns()
    return turns


async def _until_its_turn(turns: _Turns, waiter: asyncio.Future[None] | None) -> None:
    """Wait for ``waiter`` and then for as long as the pump's batch has no room."""
    while waiter is not None:
        await waiter
        waiter = turns.woken_ticket()


async def take_turn() -> None:
    """Return when this step may run: at once, or when the loop has room for it."""
    turns = _on(asyncio.get_running_loop())
    await _until_its_turn(turns, turns.ticket())


async def take_turn_after(done: asyncio.Future[Any]) -> None:
    """Return when ``done`` is done and this step's turn has come. Many waiters of one
    future (a store read that a burst of requests shares) would otherwise all resume in
    the iteration it completes in; this way they join the queue when it completes."""
    loop = asyncio.get_running_loop()
    turns = _on(loop)
    queued: asyncio.Future[None] = loop.create_future()
    done.add_done_callback(functools.partial(turns.enqueue, queued))
    await _until_its_turn(turns, queued)
