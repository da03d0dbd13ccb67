"""One provider's breaker as one worker sees it: a local view of the shared record.

Decisions that need no coordination (CLOSED: call; OPEN before its recovery time: skip) are
taken from the view with no I/O. Everything that changes state goes through the store,
atomically, and the store's answer replaces the view: only the store grants probes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from flexiai._clock import Clock
from flexiai.circuit_breaker._machine import Op, Policy, Transition, admission
from flexiai.circuit_breaker._record import BreakerRecord, BreakerSnapshot, CircuitState
from flexiai.exceptions import ProviderError
from flexiai.models import CircuitBreakerConfig, FailurePolicy

__all__ = ["BreakerStore", "CircuitBreaker", "Permit", "StateChange"]

logger = logging.getLogger("flexiai.circuit_breaker")


class BreakerStore(Protocol):
    """What a breaker needs from ``StateSyncManager``: one atomic operation at a time."""

    def transition(
        self, provider: str, op: Op, policy: Policy, *, open_for: float | None = None
    ) -> Transition: ...

    @property
    def shared(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one call. ``probe`` calls must report back: they hold a fleet lease."""

    provider: str
    probe: bool


@dataclass(frozen=True, slots=True)
class StateChange:
    """A breaker changed state, locally or because another worker said so."""

    provider: str
    old: CircuitState
    new: CircuitState
    record: BreakerRecord
    remote: bool


def default_failure_policy(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.counts_toward_breaker


def _compile_policy(failure_on: FailurePolicy | None) -> Callable[[BaseException], bool]:
    if failure_on is None:
        return default_failure_policy
    if isinstance(failure_on, tuple):
        classes = failure_on
        return lambda exc: isinstance(exc, classes)
    return failure_on


class CircuitBreaker:
    def __init__(
        self,
        provider: str,
        config: CircuitBreakerConfig,
        store: BreakerStore,
        clock: Clock,
        *,
        on_change: Callable[[StateChange], None] | None = None,
    ) -> None:
        self.provider = provider
        self.policy = Policy.from_config(config)
        self._counts = _compile_policy(config.failure_on)
        self._store = store
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._view = BreakerRecord()
        # store clock minus local clock, so OPEN-until times written by Redis TIME can be
        # compared with the local clock without trusting it to agree with the server.
        self._offset = 0.0

    # -- decisions -------------------------------------------------------------------
    def store_now(self) -> float:
        return self._clock.now() + self._offset

    def allow(self) -> Permit | None:
        """A permit to call, or None when the breaker (as the store sees it) says skip."""
        decision = admission(self._view, self.policy, self.store_now())
        if decision == "call":
            return Permit(self.provider, probe=False)
        if decision == "skip":
            return None
        result = self._apply_own(self._store.transition(self.provider, Op.ACQUIRE, self.policy))
        if not result.granted:
            return None
        return Permit(self.provider, probe=result.record.state is not CircuitState.CLOSED)

    def record_success(self, permit: Permit) -> None:
        if permit.probe:
            self._apply_own(self._store.transition(self.provider, Op.SUCCESS, self.policy))

    def record_failure(self, permit: Permit, exc: BaseException) -> bool:
        """Report a failed call. Returns whether it counted toward the breaker."""
        if not self._counts(exc):
            self.record_success(permit)  # the provider answered; it is not sick
            return False
        self._apply_own(self._store.transition(self.provider, Op.FAILURE, self.policy))
        return True

    def trip(self, seconds: float) -> None:
        """Open for the whole fleet for ``seconds`` (a 429's Retry-After)."""
        self._apply_own(
            self._store.transition(self.provider, Op.TRIP, self.policy, open_for=seconds)
        )

    def reset(self) -> None:
        self._apply_own(self._store.transition(self.provider, Op.RESET, self.policy))

    # -- views -----------------------------------------------------------------------
    @property
    def state(self) -> CircuitState:
        return self._view.state

    @property
    def record(self) -> BreakerRecord:
        return self._view

    def snapshot(self) -> BreakerSnapshot:
        return BreakerSnapshot.from_record(self.provider, self._view, shared=self._store.shared)

    def seconds_until_probe(self) -> float | None:
        if self._view.state is CircuitState.CLOSED:
            return None
        return max(0.0, self._view.open_until - self.store_now())

    def _apply_own(self, result: Transition) -> Transition:
        self._update(result.record, result.now, remote=False, force=False)
        return result

    def apply_remote(self, record: BreakerRecord, store_now: float | None) -> None:
        """Another worker's event: applied only if newer than what we have."""
        self._update(record, store_now, remote=True, force=False)

    def apply_snapshot(self, record: BreakerRecord, store_now: float) -> None:
        """A fresh read of the store is authoritative (it also sees expired and reset keys)."""
        self._update(record, store_now, remote=True, force=True)

    def _update(
        self, record: BreakerRecord, store_now: float | None, *, remote: bool, force: bool
    ) -> None:
        with self._lock:
            if store_now is not None:
                self._offset = store_now - self._clock.now()
            old = self._view
            if not force and record.version < old.version:
                return
            if remote and not force and record.version == old.version:
                return
            self._view = record
        if old.state is not record.state:
            change = StateChange(self.provider, old.state, record.state, record, remote)
            verb = {"OPEN": "opened", "CLOSED": "closed", "HALF_OPEN": "half-open"}
            logger.info(
                "Circuit %s for provider %s%s",
                verb[record.state.value],
                self.provider,
                " (remote)" if remote else "",
            )
            if self._on_change is not None:
                try:
                    self._on_change(change)
                except Exception:
                    logger.exception("breaker state-change hook failed")

    def __repr__(self) -> str:
        return f"CircuitBreaker(provider={self.provider!r}, state={self._view.state.value})"
