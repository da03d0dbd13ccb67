"""The circuit breaker's one home: states and rules, the shared record, the stores and the
wire format.

    _machine.py   the rules: pure functions of (record, operation, policy, now)
    _record.py    the stored record (one JSON encoding) and the public snapshot
    _breaker.py   one worker's view of one provider's breaker
    _sharing.py   StateSyncManager: fail-open, resync, batched counts, events
    _wire.py      events on the pub/sub channel
    stores/       where records live: memory, Redis (with breaker.lua)

Imports point one way: ``stores`` and ``_sharing`` use ``_machine``, ``_record`` and
``_wire``; nothing here imports ``flexiai.client``. Log records keep the names the
deployment guide documents (``flexiai.circuit_breaker``, ``flexiai.sync.manager``).
"""

from flexiai.circuit_breaker._breaker import CircuitBreaker, Permit
from flexiai.circuit_breaker._machine import EventType, Op, Policy, Tally, Transition
from flexiai.circuit_breaker._record import (
    BreakerRecord,
    BreakerSnapshot,
    CircuitState,
    OpenReason,
    WindowCounts,
)
from flexiai.circuit_breaker._sharing import StateSyncManager, StoreHealth, generate_worker_id
from flexiai.circuit_breaker._wire import SyncEvent, decode_event, encode_event
from flexiai.circuit_breaker.stores import MemorySyncBackend, StoreSnapshot, SyncBackend

__all__ = [
    "BreakerRecord",
    "BreakerSnapshot",
    "CircuitBreaker",
    "CircuitState",
    "EventType",
    "MemorySyncBackend",
    "Op",
    "OpenReason",
    "Permit",
    "Policy",
    "StateSyncManager",
    "StoreHealth",
    "StoreSnapshot",
    "SyncBackend",
    "SyncEvent",
    "Tally",
    "Transition",
    "WindowCounts",
    "decode_event",
    "encode_event",
    "generate_worker_id",
]
