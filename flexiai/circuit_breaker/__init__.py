"""Circuit breakers with explicit states, an injectable clock and a shared store.

``CircuitBreaker`` is one worker's view of a provider's breaker; the state itself lives in a
store (in memory, or Redis for the whole fleet), changed only by ``_machine.transition``.
"""

from flexiai.circuit_breaker._breaker import CircuitBreaker, Permit, StateChange
from flexiai.circuit_breaker._machine import EventType, Op, Policy, Tally, Transition
from flexiai.circuit_breaker._record import (
    BreakerRecord,
    BreakerSnapshot,
    CircuitState,
    OpenReason,
    WindowCounts,
)

__all__ = [
    "BreakerRecord",
    "BreakerSnapshot",
    "CircuitBreaker",
    "CircuitState",
    "EventType",
    "Op",
    "OpenReason",
    "Permit",
    "Policy",
    "StateChange",
    "Tally",
    "Transition",
    "WindowCounts",
]
