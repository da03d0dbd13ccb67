"""In-process breaker store: the backend for ``backend="memory"``, for sync disabled, and the
local fallback while Redis is unreachable.

Backends built with the same ``namespace`` share one hub, so every client in a process sees
the same breakers (the guide's memory backend). ``namespace=None`` gives a private hub.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence

from flexiai._clock import Clock, SystemClock, epoch_ms
from flexiai.circuit_breaker._machine import NO_TALLY, Op, Policy, Tally, Transition, transition
from flexiai.circuit_breaker._record import BreakerRecord
from flexiai.circuit_breaker._wire import SyncEvent
from flexiai.circuit_breaker.stores.base import (
    AsyncBackend,
    EventHandler,
    StoreSnapshot,
    SyncBackend,
)

__all__ = ["MemoryAsyncBackend", "MemorySyncBackend"]

logger = logging.getLogger("flexiai.sync.memory")


class _Hub:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, BreakerRecord] = {}
        self.handlers: list[EventHandler] = []


# Hubs live exactly as long as some backend uses them; this is how two clients in one
# process find each other without a process-wide provider registry.
_HUBS: weakref.WeakValueDictionary[str, _Hub] = weakref.WeakValueDictionary()
_HUBS_LOCK = threading.Lock()


class MemorySyncBackend(SyncBackend):
    name = "memory"
    shared = False

    def __init__(self, namespace: str | None = None, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        if namespace is None:
            self._hub = _Hub()
        else:
            with _HUBS_LOCK:
                hub = _HUBS.get(namespace)
                if hub is None:
                    hub = _Hub()
                    _HUBS[namespace] = hub
                self._hub = hub
        self._handler: EventHandler | None = None

    def load(self, providers: Sequence[str]) -> StoreSnapshot:
        with self._hub.lock:
            records = {p: self._hub.records.get(p, BreakerRecord()) for p in providers}
        return StoreSnapshot(records=records, now=epoch_ms(self._clock))

    def now(self) -> int:
        return epoch_ms(self._clock)

    def seed(self, records: dict[str, BreakerRecord]) -> None:
        """Start from known state (the last view of Redis) when taking over as a fallback."""
        with self._hub.lock:
            self._hub.records.update(records)

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
        now = epoch_ms(self._clock)
        with self._hub.lock:
            result = self._apply(provider, op, policy, now, worker_id, open_for, tally)
            handlers = list(self._hub.handlers) if result.event and publish else []
        self._publish(provider, worker_id, result, handlers)
        return result

    def report(
        self,
        tallies: Mapping[str, Tally],
        policy: Policy,
        worker_id: str,
        *,
        read: Sequence[str] = (),
    ) -> StoreSnapshot:
        now = epoch_ms(self._clock)
        published: list[tuple[str, Transition, list[EventHandler]]] = []
        with self._hub.lock:
            for provider, tally in tallies.items():
                result = self._apply(provider, Op.REPORT, policy, now, worker_id, None, tally)
                if result.event is not None:
                    published.append((provider, result, list(self._hub.handlers)))
            names = dict.fromkeys([*tallies, *read])
            records = {p: self._hub.records.get(p, BreakerRecord()) for p in names}
        for provider, result, handlers in published:
            self._publish(provider, worker_id, result, handlers)
        return StoreSnapshot(records=records, now=now)

    def _apply(
        self,
        provider: str,
        op: Op,
        policy: Policy,
        now: int,
        worker_id: str,
        open_for: int | None,
        tally: Tally,
    ) -> Transition:
        """One operation on the hub's record; the caller holds the hub's lock."""
        current = self._hub.records.get(provider, BreakerRecord())
        result = transition(current, op, policy, now, worker_id, open_for=open_for, tally=tally)
        if result.changed:
            self._hub.records[provider] = result.record
        return result

    def _publish(
        self, provider: str, worker_id: str, result: Transition, handlers: list[EventHandler]
    ) -> None:
        if result.event is None:
            return
        event = SyncEvent(result.event, provider, worker_id, result.now, result.record)
        for handler in handlers:
            if handler is not self._handler:
                handler(event)

    def subscribe(self, handler: EventHandler, on_connect: Callable[[], None]) -> None:
        with self._hub.lock:
            if self._handler is None:
                self._handler = handler
                self._hub.handlers.append(handler)
        on_connect()

    def health_check(self) -> bool:
        return True

    def close(self) -> None:
        with self._hub.lock:
            if self._handler is not None and self._handler in self._hub.handlers:
                self._hub.handlers.remove(self._handler)
            self._handler = None

    def async_twin(self) -> AsyncBackend:
        return MemoryAsyncBackend(self)

    def __repr__(self) -> str:
        return f"MemorySyncBackend(records={len(self._hub.records)})"


class MemoryAsyncBackend(AsyncBackend):
    """The memory store for the async API: its operations do no I/O and hold the hub's
    lock only for a few dict operations, so they run on the loop as they are."""

    def __init__(self, backend: MemorySyncBackend) -> None:
        self.backend = backend

    async def load(self, providers: Sequence[str]) -> StoreSnapshot:
        return self.backend.load(providers)

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
        return self.backend.transition(
            provider, op, policy, worker_id, open_for=open_for, tally=tally, publish=publish
        )

    async def report(
        self,
        tallies: Mapping[str, Tally],
        policy: Policy,
        worker_id: str,
        *,
        read: Sequence[str] = (),
    ) -> StoreSnapshot:
        return self.backend.report(tallies, policy, worker_id, read=read)
