"""What a client reports to listeners: ``FlexiAI.add_listener(fn)`` calls ``fn`` with each
of these, synchronously. The Lambda middleware's logs and metrics are such a listener.

An exception in a listener is logged and swallowed, so bookkeeping can never replace a
provider's answer or its real error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flexiai.circuit_breaker._record import BreakerRecord, CircuitState

__all__ = [
    "BreakerChanged",
    "ClientEvent",
    "FailedOver",
    "Listener",
    "ProviderCallFailed",
    "ProviderCallSucceeded",
    "notify",
]

logger = logging.getLogger("flexiai.client")


@dataclass(frozen=True, slots=True)
class ProviderCallSucceeded:
    """``provider`` answered in ``latency_ms``; ``attempt``: the request's provider calls so
    far, this one included."""

    provider: str
    latency_ms: float
    attempt: int


@dataclass(frozen=True, slots=True)
class ProviderCallFailed:
    """A call of ``provider`` failed with ``error_type`` (``status_code`` when the provider
    answered); ``counted``: whether it counts toward the provider's breaker."""

    provider: str
    error_type: str
    status_code: int | None
    latency_ms: float
    counted: bool


@dataclass(frozen=True, slots=True)
class FailedOver:
    """The request gave up on ``provider`` (failed or skipped) and moves down the list."""

    provider: str
    reason: str


@dataclass(frozen=True, slots=True)
class BreakerChanged:
    """A breaker changed state in this worker's view: by this worker's own call
    (``remote=False``), or because the store or another worker said so."""

    provider: str
    old: CircuitState
    new: CircuitState
    remote: bool
    worker_id: str
    record: BreakerRecord


ClientEvent = ProviderCallSucceeded | ProviderCallFailed | FailedOver | BreakerChanged
Listener = Callable[[ClientEvent], None]


def notify(listeners: list[Listener], event: ClientEvent) -> None:
    """Call every listener; one that raises is logged and skipped."""
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            logger.exception("flexiai listener %r failed on %s", listener, type(event).__name__)
