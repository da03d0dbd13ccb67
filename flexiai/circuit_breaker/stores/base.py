"""The interface every breaker store implements: a few atomic primitives and nothing else.

A backend never decides anything on its own: ``transition`` and ``report`` run
``circuit_breaker._machine`` atomically against the stored records (under a lock, or in one
Lua script) and, when a record changed, write it with a fresh TTL and publish the event.
Fail-open, fallback and resync live one level up, in ``StateSyncManager``, so every backend
behaves the same way. Backends raise ``StateStoreError`` for any failure of the store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from flexiai.circuit_breaker._machine import NO_TALLY, Op, Policy, Tally, Transition
from flexiai.circuit_breaker._record import BreakerRecord
from flexiai.circuit_breaker._wire import SyncEvent

__all__ = ["AsyncBackend", "EventHandler", "StoreSnapshot", "SyncBackend", "ThreadedAsyncBackend"]

#: Called with each event; it may return True to say it has just re-read every record, so
#: the events received before it was called are covered and need not be delivered.
EventHandler = Callable[[SyncEvent], bool | None]


# A NamedTuple, not a frozen dataclass: an internal record on the Lambda cold-start path,
# and python3.12 creates a NamedTuple class in ~0.1 ms, a frozen slotted dataclass in ~0.6.
class StoreSnapshot(NamedTuple):
    """Every requested provider's record (absent ones are fresh CLOSED records) read at once,
    with the store's clock at that moment (milliseconds)."""

    records: dict[str, BreakerRecord]
    now: int
    invalid: tuple[str, ...] = ()


class SyncBackend(ABC):
    #: ``"redis"`` or ``"memory"``: shown in logs and ``get_provider_status()``.
    name: str
    #: True when the state is visible to other processes.
    shared: bool
    #: The key prefix this store's events carry; an event with another one belongs to
    #: another app on the same channel and is dropped unread. None: no filtering (a store
    #: private to this process).
    key_prefix: str | None = None

    @abstractmethod
    def load(self, providers: Sequence[str]) -> StoreSnapshot:
        """Read every provider's record in one round trip. Garbage reads as a fresh record and
        its provider is listed in ``invalid``."""

    @abstractmethod
    def transition(
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
        """Apply one operation atomically; when the record changes, store it and, if
        ``publish``, announce the event. Returns the new record and the store's clock."""

    @abstractmethod
    def report(
        self,
        tallies: Mapping[str, Tally],
        policy: Policy,
        worker_id: str,
        *,
        read: Sequence[str] = (),
    ) -> StoreSnapshot:
        """Add each provider's tally to its window, all at once (one round trip), and return
        the records of those providers and of ``read``."""

    @abstractmethod
    def now(self) -> int:
        """The store's clock in milliseconds, as this backend last measured it: no I/O."""

    @abstractmethod
    def subscribe(self, handler: EventHandler, on_connect: Callable[[], None]) -> None:
        """Start delivering other workers' events to ``handler``; call ``on_connect`` after
        every (re)connection so the caller can resync. Idempotent. When ``handler`` returns
        True, the events already received when it was called may be dropped undelivered."""

    @abstractmethod
    def health_check(self) -> bool:
        """True only if the store answered just now (and the subscriber, if any, is alive)."""

    @abstractmethod
    def close(self) -> None:
        """Stop background work and release connections. Idempotent."""

    def stats(self) -> dict[str, int]:
        """Counters for operators: malformed events dropped, invalid records read, errors."""
        return {}

    def describe(self) -> str:
        """A one-line description for logs: never includes a password."""
        return self.name

    def async_twin(self) -> AsyncBackend:
        """The same store for the async API (``agenerate``): its calls must never block the
        event loop. By default each call runs in a worker thread; a backend that can do
        better (asyncio I/O, or no I/O at all) returns its own twin."""
        return ThreadedAsyncBackend(self)


class AsyncBackend(ABC):
    """The operations of ``SyncBackend`` that a request makes, awaited. A twin shares its
    blocking backend's state (clock offset, counters, the subscriber, ``now``); only the
    I/O differs, so the request path of ``agenerate`` never waits on a socket on the loop.
    ``StateSyncManager`` decides what a failure means, for both alike."""

    @abstractmethod
    async def load(self, providers: Sequence[str]) -> StoreSnapshot:
        """``SyncBackend.load``, awaited."""

    @abstractmethod
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
        """``SyncBackend.transition``, awaited."""

    @abstractmethod
    async def report(
        self,
        tallies: Mapping[str, Tally],
        policy: Policy,
        worker_id: str,
        *,
        read: Sequence[str] = (),
    ) -> StoreSnapshot:
        """``SyncBackend.report``, awaited."""

    async def aclose(self) -> None:  # noqa: B027 - most twins hold nothing of their own
        """Release the connections this twin opened on the running loop. Idempotent."""

    def close(self) -> None:  # noqa: B027 - most twins hold nothing of their own
        """Release the connections this twin opened on every loop, without waiting on any
        loop (``StateSyncManager.close``, called from outside them). Idempotent."""


class ThreadedAsyncBackend(AsyncBackend):
    """Any ``SyncBackend``, its calls run in the default executor's threads: the loop goes
    on serving while a call waits (used for a supplied blocking client, whose connection
    settings are unknown, and for third-party backends)."""

    def __init__(self, backend: SyncBackend) -> None:
        self.backend = backend

    async def load(self, providers: Sequence[str]) -> StoreSnapshot:
        import asyncio

        return await asyncio.to_thread(self.backend.load, providers)

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
        import asyncio

        return await asyncio.to_thread(
            self.backend.transition,
            provider,
            op,
            policy,
            worker_id,
            open_for=open_for,
            tally=tally,
            publish=publish,
        )

    async def report(
        self,
        tallies: Mapping[str, Tally],
        policy: Policy,
        worker_id: str,
        *,
        read: Sequence[str] = (),
    ) -> StoreSnapshot:
        import asyncio

        return await asyncio.to_thread(self.backend.report, tallies, policy, worker_id, read=read)
