"""The breaker's state machine as pure functions of (record, operation, policy, now).

No I/O and no clock: the memory store calls ``transition`` under a lock, and the Redis
store runs the same rules in Lua (``circuit_breaker/stores/lua/breaker.lua``); one contract test
suite holds both to this module's behaviour. Times are integer milliseconds.

    CLOSED --failure rate >= failure_rate_threshold over failure_window,
             once minimum_calls were counted-------------------------------> OPEN
    CLOSED --failure_threshold failures in a row, no success in between----> OPEN
    CLOSED --slow-call rate >= slow_call_rate_threshold (when enabled)------> OPEN
    OPEN --recovery_timeout passed, a probe acquires a lease--> HALF_OPEN
    HALF_OPEN --success_threshold probe successes--> CLOSED (the window starts empty)
    HALF_OPEN --a probe fails--> OPEN (recovery_timeout starts again)
    any --429 with Retry-After (TRIP)--> OPEN until then
    any --RESET--> CLOSED

Why a rate: summed over a fleet, any provider with a small error rate crosses any fixed
count, and the bigger the fleet the sooner. A rate over a sliding window does not grow with
the fleet; the run of consecutive failures is the fast path for a provider that is dead.

What it costs: successes are never written one by one. A worker counts its calls in a
``Tally`` and sends it with its next failure, its next snapshot refresh, or a periodic
``REPORT``; the tally carries how long ago the worker's latest success was, so the store
can tell whether that success broke the current run (it did only if it happened after the
run's first failure, however late it arrives).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Literal, NamedTuple

from flexiai.circuit_breaker._record import (
    BreakerRecord,
    Bucket,
    CircuitState,
    OpenReason,
    next_version,
)
from flexiai.models import CircuitBreakerConfig

__all__ = [
    "NO_TALLY",
    "WINDOW_BUCKETS",
    "Admission",
    "EventType",
    "Op",
    "Policy",
    "Tally",
    "Transition",
    "admission",
    "transition",
]

#: The failure window is kept as this many buckets: it slides in steps of a tenth.
WINDOW_BUCKETS = 10
#: How far a worker's estimate of the store's clock may be behind it (ms): a record dated
#: later than that is not trusted.
CLOCK_TOLERANCE = 5_000


class Op(StrEnum):
    FAILURE = "failure"
    SUCCESS = "success"  # a probe's success; other successes travel in tallies
    REPORT = "report"  # a tally on its own
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


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


@dataclass(frozen=True, slots=True)
class Policy:
    """A ``CircuitBreakerConfig`` in the store's units (milliseconds, percents)."""

    failure_threshold: int
    failure_rate_threshold: float
    minimum_calls: int
    failure_window: int
    slow_call_duration: int  # 0: the slow-call rule is off
    slow_call_rate_threshold: float
    recovery_timeout: int
    half_open_max_calls: int
    success_threshold: int
    probe_lease_ttl: int
    max_open_for: int
    #: The policy as breaker.lua takes it: one JSON argument, built once.
    wire: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "wire"}
        doc["bucket"] = self.bucket_width
        object.__setattr__(self, "wire", json.dumps(doc, separators=(",", ":")))

    @property
    def bucket_width(self) -> int:
        return -(-self.failure_window // WINDOW_BUCKETS)

    @classmethod
    def from_config(cls, config: CircuitBreakerConfig) -> Policy:
        slow = config.slow_call_duration
        return cls(
            failure_threshold=config.failure_threshold,
            failure_rate_threshold=float(config.failure_rate_threshold),
            minimum_calls=config.minimum_calls,
            failure_window=_ms(config.failure_window),
            slow_call_duration=0 if slow is None else _ms(slow),
            slow_call_rate_threshold=float(config.slow_call_rate_threshold),
            recovery_timeout=_ms(config.recovery_timeout),
            half_open_max_calls=config.half_open_max_calls,
            success_threshold=config.success_threshold,
            probe_lease_ttl=_ms(config.probe_lease_ttl),
            max_open_for=_ms(config.max_open_for),
        )


# A NamedTuple, not a frozen dataclass: an internal record on the Lambda cold-start path,
# and python3.12 creates a NamedTuple class in ~0.1 ms, a frozen slotted dataclass in ~0.6.
class Tally(NamedTuple):
    """One worker's calls not yet sent to the store: successes, how many calls (these
    successes and the failure that carries them) were slow, and how long ago the latest
    success happened (None: no success in this tally)."""

    successes: int = 0
    slow: int = 0
    last_success_age: int | None = None

    def __bool__(self) -> bool:
        return bool(self.successes or self.slow)

    @property
    def wire(self) -> str:
        """breaker.lua's form: ``successes slow age`` (``-`` for no age)."""
        age = "-" if self.last_success_age is None else str(self.last_success_age)
        return f"{self.successes} {self.slow} {age}"


NO_TALLY = Tally()


# A NamedTuple, not a frozen dataclass: an internal record on the Lambda cold-start path,
# and python3.12 creates a NamedTuple class in ~0.1 ms, a frozen slotted dataclass in ~0.6.
class Transition(NamedTuple):
    """The result of one operation: the new record, whether it changed (must be written),
    whether a probe lease was granted, the event to publish, if any, and the store's clock."""

    record: BreakerRecord
    changed: bool
    granted: bool = False
    event: EventType | None = None
    now: int = 0


Admission = Literal["call", "probe", "skip"]


def admission(record: BreakerRecord, policy: Policy, now: int) -> Admission:
    """What a worker may do with a provider given its (possibly slightly stale) view.

    ``probe`` means: ask the store for a lease first; only the store's answer is final.
    """
    if record.state is CircuitState.CLOSED:
        return "call"
    if record.state is CircuitState.OPEN:
        return "probe" if now >= open_deadline(record, policy, now) else "skip"
    lease_until = lease_deadline(record, policy, now)
    if record.probes_in_flight < policy.half_open_max_calls or now >= lease_until:
        return "probe"
    return "skip"


def open_deadline(record: BreakerRecord, policy: Policy, now: int) -> int:
    """When an OPEN record lets a probe in: its ``open_until``, but never later than the
    longest this policy opens for after it opened, whatever a record says (a hostile or
    broken writer cannot keep a provider out for good). A record that claims to have opened
    in the future cannot be right: a probe may decide."""
    if record.opened_at > now + CLOCK_TOLERANCE:
        return now
    longest = max(policy.recovery_timeout, policy.max_open_for)
    return min(record.open_until, record.opened_at + longest)


def lease_deadline(record: BreakerRecord, policy: Policy, now: int) -> int:
    """When the probe leases in a HALF_OPEN record lapse: never later than one lease after
    the record was last written (a write dated in the future cannot be right)."""
    if record.updated_at > now + CLOCK_TOLERANCE:
        return now
    return min(record.probe_lease_until, record.updated_at + policy.probe_lease_ttl)


def transition(
    record: BreakerRecord,
    op: Op,
    policy: Policy,
    now: int,
    worker_id: str,
    *,
    open_for: int | None = None,
    tally: Tally = NO_TALLY,
) -> Transition:
    new, granted, event = _apply(record, op, policy, now, open_for, tally)
    if new == record:
        # A reset is announced even when there is nothing to write: it tells every worker
        # to read the key again, whatever it believed.
        announced = event if op is Op.RESET else None
        return Transition(record=record, changed=False, granted=granted, event=announced, now=now)
    new = new.replace(version=next_version(record.version), updated_by=worker_id, updated_at=now)
    return Transition(record=new, changed=True, granted=granted, event=event, now=now)


def _opened(record: BreakerRecord, now: int, open_for: int, reason: OpenReason) -> BreakerRecord:
    return BreakerRecord(
        state=CircuitState.OPEN,
        version=record.version,
        opened_at=now,
        open_until=now + open_for,
        opened_because=reason,
    )


def _apply(
    record: BreakerRecord,
    op: Op,
    policy: Policy,
    now: int,
    open_for: int | None,
    tally: Tally,
) -> tuple[BreakerRecord, bool, EventType | None]:
    state = record.state
    if record.foreign:
        # A newer worker's record: read-only here (see _record). Only a CLOSED breaker's
        # plain admission needs no write.
        return record, op is Op.ACQUIRE and state is CircuitState.CLOSED, None

    if op is Op.RESET:
        return BreakerRecord(version=record.version), False, EventType.CLOSED

    if op is Op.TRIP:
        wanted = policy.recovery_timeout if open_for is None else open_for
        duration = min(wanted, policy.max_open_for)
        if state is CircuitState.OPEN and record.open_until >= now + duration:
            return record, False, None
        return _opened(record, now, duration, OpenReason.RETRY_AFTER), False, EventType.OPENED

    if op is Op.ACQUIRE:
        return _acquire(record, policy, now)

    if op is Op.SUCCESS:
        if state is not CircuitState.HALF_OPEN:
            return record, False, None
        successes = record.successes + 1
        if successes >= policy.success_threshold:
            return BreakerRecord(version=record.version), False, EventType.CLOSED
        in_flight = max(0, record.probes_in_flight - 1)
        counted = record.replace(successes=successes, probes_in_flight=in_flight)
        return counted, False, EventType.SUCCESS

    failed = op is Op.FAILURE
    if failed and state is CircuitState.HALF_OPEN:
        return (
            _opened(record, now, policy.recovery_timeout, OpenReason.PROBE_FAILED),
            False,
            EventType.OPENED,
        )
    if state is not CircuitState.CLOSED or not (failed or tally):
        # Counts that arrive while the breaker is not CLOSED belong to a window that ended.
        return record, False, None
    counted = _count(record, policy, now, tally, failures=int(failed))
    reason = _trips(counted, policy, now, failed)
    if reason is not None:
        return _opened(record, now, policy.recovery_timeout, reason), False, EventType.OPENED
    return counted, False, EventType.FAILURE if failed else None


def _acquire(
    record: BreakerRecord, policy: Policy, now: int
) -> tuple[BreakerRecord, bool, EventType | None]:
    if record.state is CircuitState.CLOSED:
        return record, True, None
    if record.state is CircuitState.OPEN:
        if now < open_deadline(record, policy, now):
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
    in_flight = record.probes_in_flight if now < lease_deadline(record, policy, now) else 0
    if in_flight >= policy.half_open_max_calls:
        return record, False, None
    return (
        record.replace(
            probes_in_flight=in_flight + 1, probe_lease_until=now + policy.probe_lease_ttl
        ),
        True,
        None,
    )


def _count(
    record: BreakerRecord, policy: Policy, now: int, tally: Tally, *, failures: int
) -> BreakerRecord:
    """Add a tally (and a failure) to the run and to the window's current bucket."""
    run, run_started_at = record.run, record.run_started_at
    if run and tally.last_success_age is not None and now - tally.last_success_age > run_started_at:
        run, run_started_at = 0, 0  # a success after the run began broke it
    if failures:
        if not run:
            run_started_at = now
        run += failures
    width = policy.bucket_width
    current = now - now % width
    oldest = now - policy.failure_window
    buckets: list[Bucket] = [b for b in record.buckets if b[0] > oldest and b[0] != current]
    calls, failed, slow = tally.successes + failures, failures, tally.slow
    for start, c, f, s in record.buckets:
        if start == current:
            calls, failed, slow = calls + c, failed + f, slow + s
    buckets.append((current, calls, failed, slow))
    return record.replace(run=run, run_started_at=run_started_at, buckets=tuple(buckets))


def _trips(record: BreakerRecord, policy: Policy, now: int, failed: bool) -> OpenReason | None:
    if failed and record.run >= policy.failure_threshold:
        return OpenReason.CONSECUTIVE_FAILURES
    counts = record.window(now, policy.failure_window)
    if counts.calls < policy.minimum_calls:
        return None
    if counts.failures * 100 >= policy.failure_rate_threshold * counts.calls:
        return OpenReason.FAILURE_RATE
    if (
        policy.slow_call_duration
        and counts.slow * 100 >= policy.slow_call_rate_threshold * counts.calls
    ):
        return OpenReason.SLOW_CALLS
    return None
