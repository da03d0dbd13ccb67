"""One provider's breaker as one worker sees it: a local view of the shared record.

Decisions that need no coordination (CLOSED: call; OPEN before its recovery time: skip) are
taken from the view with no I/O. Everything that changes state goes through the store,
atomically, and the store's answer replaces the view: only the store grants probes.

A success while CLOSED writes nothing: it joins this worker's ``Tally``, which travels to
the store with the next failure or the manager's next flush (``take_tally``).

Each operation that may reach the store is a store flow (see ``_sharing``): ``allow_flow``
and friends yield the store's calls, and ``allow()`` and friends drive them with blocking
I/O, while the client's async driver awaits them.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Generator
from typing import Any, NamedTuple, Protocol, TypeVar

from flexiai._clock import Clock
from flexiai.circuit_breaker._machine import NO_TALLY, Op, Policy, Tally, Transition, admission
from flexiai.circuit_breaker._record import BreakerRecord, BreakerSnapshot, CircuitState
from flexiai.events import BreakerChanged
from flexiai.exceptions import ProviderError
from flexiai.models import CircuitBreakerConfig, FailurePolicy

__all__ = ["BreakerStore", "CircuitBreaker", "Permit"]

_T = TypeVar("_T")

logger = logging.getLogger("flexiai.circuit_breaker")


class BreakerStore(Protocol):
    """What a breaker needs from ``StateSyncManager``: one atomic operation at a time, the
    store's clock, and the worker's name."""

    worker_id: str

    def store_now(self) -> int:
        """The store's clock in milliseconds, without I/O."""
        ...

    def transition_flow(
        self,
        provider: str,
        op: Op,
        policy: Policy,
        *,
        open_for: int | None = None,
        tally: Tally = NO_TALLY,
    ) -> Generator[Any, Any, Transition]: ...

    def run(self, flow: Generator[Any, Any, _T]) -> _T:
        """Drive a store flow with blocking I/O."""
        ...

    @property
    def shared(self) -> bool: ...

    def hurry(self) -> None:
        """Counts are waiting that should not wait for the next periodic report."""
        ...


# A NamedTuple, not a frozen dataclass: an internal record on the Lambda cold-start path,
# and python3.12 creates a NamedTuple class in ~0.1 ms, a frozen slotted dataclass in ~0.6.
class Permit(NamedTuple):
    """Leave to make one call. ``probe`` calls must report back: they hold a fleet lease."""

    provider: str
    probe: bool


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
        on_change: Callable[[BreakerChanged], None] | None = None,
    ) -> None:
        self.provider = provider
        self.policy = Policy.from_config(config)
        self._counts = _compile_policy(config.failure_on)
        self._store = store
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._view = BreakerRecord()
        # This worker's calls not yet sent to the store (see take_tally).
        self._successes = 0
        self._slow = 0
        self._last_success: float | None = None  # local monotonic seconds
        self._hurried_for = -1  # the record version a success was last hurried for

    # -- decisions -------------------------------------------------------------------
    def store_now(self) -> int:
        """The store's clock, in milliseconds: OPEN-until times written with Redis TIME are
        compared with it, never with this host's clock."""
        return self._store.store_now()

    def allow(self) -> Permit | None:
        """A permit to call, or None when the breaker (as the store sees it) says skip."""
        return self._store.run(self.allow_flow())

    def allow_flow(self) -> Generator[Any, Any, Permit | None]:
        decision = admission(self._view, self.policy, self.store_now())
        if decision == "call":
            return Permit(self.provider, probe=False)
        if decision == "skip":
            return None
        result = yield from self._operate(Op.ACQUIRE)
        if not result.granted:
            return None
        return Permit(self.provider, probe=result.record.state is not CircuitState.CLOSED)

    def record_success(self, permit: Permit, duration: float = 0.0) -> None:
        """Report a call that succeeded after ``duration`` seconds. A probe's success goes
        to the store at once (it may close the breaker); any other is only counted here."""
        self._store.run(self.record_success_flow(permit, duration))

    def record_success_flow(
        self, permit: Permit, duration: float = 0.0
    ) -> Generator[Any, Any, None]:
        if permit.probe:
            yield from self._operate(Op.SUCCESS)
            return
        slow = self._is_slow(duration)
        with self._lock:
            self._successes += 1
            self._slow += slow
            self._last_success = self._clock.monotonic()
        view = self._view
        if view.run and view.version != self._hurried_for:
            # The fleet has a run of failures in progress that this success breaks. Failures
            # reach the store at once and successes in batches, so unless this one hurries
            # the store would count failures on other workers as "in a row" and open a
            # healthy provider. Once per record version this worker sees.
            self._hurried_for = view.version
            self._store.hurry()

    def record_failure(self, permit: Permit, exc: BaseException, duration: float = 0.0) -> bool:
        """Report a failed call. Returns whether it counted toward the breaker. A counted
        failure goes to the store at once, with every success counted here since the last
        report."""
        return self._store.run(self.record_failure_flow(permit, exc, duration))

    def record_failure_flow(
        self, permit: Permit, exc: BaseException, duration: float = 0.0
    ) -> Generator[Any, Any, bool]:
        if not self._counts(exc):
            # The provider answered; it is not sick.
            yield from self.record_success_flow(permit, duration)
            return False
        tally = self.take_tally(slow=self._is_slow(duration))
        yield from self._operate(Op.FAILURE, tally=tally)
        return True

    def take_tally(self, *, slow: bool = False) -> Tally:
        """Hand over (and forget) the calls counted since the last report; ``slow`` adds a
        slow call that is not a success (the failure this tally travels with)."""
        with self._lock:
            successes, slow_calls, last = self._successes, self._slow + slow, self._last_success
            self._successes = self._slow = 0
            self._last_success = None
        if not successes and not slow_calls:
            return NO_TALLY
        age = None if last is None else max(0, int((self._clock.monotonic() - last) * 1000))
        return Tally(successes, slow_calls, age)

    def _is_slow(self, duration: float) -> bool:
        threshold = self.policy.slow_call_duration
        return bool(threshold) and duration * 1000 >= threshold

    def trip(self, seconds: float) -> None:
        """Open for the whole fleet for ``seconds`` (a 429's Retry-After)."""
        self._store.run(self.trip_flow(seconds))

    def trip_flow(self, seconds: float) -> Generator[Any, Any, None]:
        yield from self._operate(Op.TRIP, open_for=max(1, math.ceil(seconds * 1000)))

    def reset(self) -> None:
        self._store.run(self._operate(Op.RESET))

    def _operate(
        self, op: Op, *, open_for: int | None = None, tally: Tally = NO_TALLY
    ) -> Generator[Any, Any, Transition]:
        """One operation of this worker on the store; its answer replaces the view."""
        result = yield from self._store.transition_flow(
            self.provider, op, self.policy, open_for=open_for, tally=tally
        )
        return self._apply_own(result)

    # -- views -----------------------------------------------------------------------
    @property
    def state(self) -> CircuitState:
        return self._view.state

    @property
    def record(self) -> BreakerRecord:
        return self._view

    def snapshot(self) -> BreakerSnapshot:
        return BreakerSnapshot.from_record(
            self.provider,
            self._view,
            shared=self._store.shared,
            now=self.store_now(),
            window_ms=self.policy.failure_window,
        )

    def seconds_until_probe(self) -> float | None:
        if self._view.state is CircuitState.CLOSED:
            return None
        return max(0.0, (self._view.open_until - self.store_now()) / 1000)

    def _apply_own(self, result: Transition) -> Transition:
        """This worker's own operation: applied unless a fresher read already overtook it."""
        self._update(result.record, remote=False)
        return result

    def apply_snapshot(self, record: BreakerRecord) -> None:
        """A fresh read of the store is authoritative (it also sees expired and reset keys).
        Other workers' events never reach a view directly: they only trigger such a read."""
        self._update(record, remote=True)

    def _update(self, record: BreakerRecord, *, remote: bool) -> None:
        with self._lock:
            old = self._view
            if not remote and record.version < old.version:
                return
            self._view = record
            if record.state is not CircuitState.CLOSED:
                # Counts from before it opened belong to a window that has ended.
                self._successes = self._slow = 0
                self._last_success = None
        if old.state is not record.state:
            change = BreakerChanged(
                self.provider, old.state, record.state, remote, self._store.worker_id, record
            )
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
