"""In-process breaker store: the backend for ``backend="memory"``, for sync disabled, and the
local fallback while Redis is unreachable.

Backends built with the same ``namespace`` share one hub, so every client in a process sees
the same breakers (the guide's memory backend). ``namespace=None`` gives a private hub.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Sequence

from flexiai._clock import Clock, SystemClock
from flexiai.circuit_breaker._machine import Op, Policy, Transition, transition
from flexiai.circuit_breaker._record import BreakerRecord
from flexiai.sync.backends.base import EventHandler, StoreSnapshot, SyncBackend
from flexiai.sync.events import SyncEvent

__all__ = ["MemorySyncBackend"]

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
        return StoreSnapshot(records=records, now=self._clock.now())

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
        open_for: float | None = None,
        publish: bool = True,
    ) -> Transition:
        now = self._clock.now()
        with self._hub.lock:
            current = self._hub.records.get(provider, BreakerRecord())
            result = transition(current, op, policy, now, worker_id, open_for=open_for)
            if result.changed:
                self._hub.records[provider] = result.record
            handlers = list(self._hub.handlers) if result.event and publish else []
        if result.event is not None and handlers:
            event = SyncEvent(result.event, provider, worker_id, now, result.record)
            for handler in handlers:
                if handler is not self._handler:
                    handler(event)
        return result

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

    def __repr__(self) -> str:
        return f"MemorySyncBackend(records={len(self._hub.records)})"
