"""The breaker's state machine as pure functions of (record, operation, policy, now).

No I/O and no clock: the memory store calls ``transition`` under a lock, and the Redis
store runs the same rules in Lua (``sync/backends/lua/breaker.lua``); one contract test
suite holds both to this module's behaviour.

    CLOSED --failure_threshold failures within failure_window--> OPEN
    OPEN --recovery_timeout passed, a probe acquires a lease--> HALF_OPEN
    HALF_OPEN --success_threshold probe successes--> CLOSED
    HALF_OPEN --a probe fails--> OPEN (recovery_timeout starts again)
    any --429 with Retry-After (TRIP)--> OPEN until then
    any --RESET--> CLOSED

The healthy path is free: a success while CLOSED changes nothing and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from flexiai.circuit_breaker._record import BreakerRecord, CircuitState
from flexiai.models import CircuitBreakerConfig

__all__ = ["Admission", "EventType", "Op", "Policy", "Transition", "admission", "transition"]


class Op(StrEnum):
    FAILURE = "failure"
    SUCCESS = "success"
    ACQUIRE = "acquire"
    TRIP = "trip"
    RESET = "reset"


class EventType(StrEnum):
    """The deployment guide's event names, published on the sync channel."""

    OPENED = "OPENED"
    CLOSED = "CLOSED"
    HALF_OPEN = "HALF_OPEN"
    FAILURE = "FAILURE"
    SUCCESS = "SUCCESS"


@dataclass(frozen=True, slots=True)
class Policy:
    failure_threshold: int
    failure_window: float
    recovery_timeout: float
    half_open_max_calls: int
    success_threshold: int
    probe_lease_ttl: float
    max_open_for: float

    @classmethod
    def from_config(cls, config: CircuitBreakerConfig) -> Policy:
        return cls(
            failure_threshold=config.failure_threshold,
            failure_window=config.failure_window,
            recovery_timeout=config.recovery_timeout,
            half_open_max_calls=config.half_open_max_calls,
            success_threshold=config.success_threshold,
            probe_lease_ttl=config.probe_lease_ttl,
            max_open_for=config.max_open_for,
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """The result of one operation: the new record, whether it changed (must be written),
    whether a probe lease was granted, and the event to publish, if any."""

    record: BreakerRecord
    changed: bool
    granted: bool = False
    event: EventType | None = None
    now: float = 0.0


Admission = Literal["call", "probe", "skip"]


def admission(record: BreakerRecord, policy: Policy, now: float) -> Admission:
    """What a worker may do with a provider given its (possibly slightly stale) view.

    ``probe`` means: ask the store for a lease first; only the store's answer is final.
    """
    if record.state is CircuitState.CLOSED:
        return "call"
    if record.state is CircuitState.OPEN:
        return "probe" if now >= record.open_until else "skip"
    if record.probes_in_flight < policy.half_open_max_calls or now >= record.probe_lease_until:
        return "probe"
    return "skip"


def _opened(record: BreakerRecord, now: float, open_for: float) -> BreakerRecord:
    return record.replace(
        state=CircuitState.OPEN,
        failures=0,
        window_started_at=0.0,
        opened_at=now,
        open_until=now + open_for,
        probes_in_flight=0,
        probe_lease_until=0.0,
        successes=0,
    )


def transition(
    record: BreakerRecord,
    op: Op,
    policy: Policy,
    now: float,
    worker_id: str,
    *,
    open_for: float | None = None,
) -> Transition:
    new, granted, event = _apply(record, op, policy, now, open_for)
    if new == record:
        return Transition(record=record, changed=False, granted=granted, event=None, now=now)
    new = new.replace(version=record.version + 1, updated_by=worker_id, updated_at=now)
    return Transition(record=new, changed=True, granted=granted, event=event, now=now)


def _apply(
    record: BreakerRecord, op: Op, policy: Policy, now: float, open_for: float | None
) -> tuple[BreakerRecord, bool, EventType | None]:
    state = record.state
    if op is Op.RESET:
        return BreakerRecord(version=record.version), False, EventType.CLOSED

    if op is Op.TRIP:
        seconds = min(
            open_for if open_for is not None else policy.recovery_timeout, policy.max_open_for
        )
        if state is CircuitState.OPEN and record.open_until >= now + seconds:
            return record, False, None
        return _opened(record, now, seconds), False, EventType.OPENED

    if op is Op.FAILURE:
        if state is CircuitState.HALF_OPEN:
            return _opened(record, now, policy.recovery_timeout), False, EventType.OPENED
        if state is CircuitState.OPEN:
            return record, False, None  # a call that started before the breaker opened
        if record.failures == 0 or now - record.window_started_at >= policy.failure_window:
            failures, started = 1, now
        else:
            failures, started = record.failures + 1, record.window_started_at
        if failures >= policy.failure_threshold:
            return _opened(record, now, policy.recovery_timeout), False, EventType.OPENED
        return (
            record.replace(failures=failures, window_started_at=started),
            False,
            EventType.FAILURE,
        )

    if op is Op.ACQUIRE:
        if state is CircuitState.CLOSED:
            return record, True, None
        if state is CircuitState.OPEN:
            if now < record.open_until:
                return record, False, None
            return (
                record.replace(
                    state=CircuitState.HALF_OPEN,
                    probes_in_flight=1,
                    probe_lease_until=now + policy.probe_lease_ttl,
                    successes=0,
                ),
                True,
                EventType.HALF_OPEN,
            )
        in_flight = record.probes_in_flight if now < record.probe_lease_until else 0
        if in_flight >= policy.half_open_max_calls:
            return record, False, None
        return (
            record.replace(
                probes_in_flight=in_flight + 1, probe_lease_until=now + policy.probe_lease_ttl
            ),
            True,
            None,
        )

    # Op.SUCCESS
    if state is not CircuitState.HALF_OPEN:
        return record, False, None
    successes = record.successes + 1
    if successes >= policy.success_threshold:
        return BreakerRecord(version=record.version), False, EventType.CLOSED
    return (
        record.replace(successes=successes, probes_in_flight=max(0, record.probes_in_flight - 1)),
        False,
        EventType.SUCCESS,
    )
