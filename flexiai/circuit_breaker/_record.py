"""The shared record of one provider's breaker, and its public read-only snapshot.

A record is what the store keeps: one JSON string per provider in Redis, an object in
memory. Every time in it is an integer number of milliseconds on the *store's* clock (Redis
``TIME``), so workers' clocks never have to agree and the Lua twin needs no float format.

The stored JSON (``to_json``) is compact, in field order, integers only (``buckets`` is a
list of ``[start, calls, failures, slow]``); ``circuit_breaker/stores/lua/breaker.lua`` builds the
same bytes by hand, and an event carries exactly these bytes, so there is one encoding:

    {"schema":2,"state":"CLOSED","version":7,"run":1,"run_started_at":1764180000123,
     "buckets":[[1764180000000,40,1,0]],"opened_at":0,"open_until":0,"opened_because":"",
     "probes_in_flight":0,"probe_lease_until":0,"successes":0,"updated_by":"host-1-ab12",
     "updated_at":1764180000123}

``schema`` makes rolling upgrades safe both ways. A record without it is the first format
(0.1: float seconds); it is read and migrated, never misread. A record of a *newer* schema
is read-only to this version: its ``state``, ``version``, ``opened_at`` and ``open_until``
keep their meaning in every schema, so this worker still skips an open provider, but it
never writes such a record, and leaves counting and probing to the newer workers.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

__all__ = [
    "MAX_RECORD_BYTES",
    "MAX_VERSION_STEP",
    "RECORD_SCHEMA",
    "BreakerRecord",
    "BreakerSnapshot",
    "Bucket",
    "CircuitState",
    "OpenReason",
    "WindowCounts",
    "next_version",
    "version_jumped",
]

#: The schema this version reads and writes.
RECORD_SCHEMA = 2
#: A stored record longer than this is garbage: a healthy one is a few hundred bytes.
MAX_RECORD_BYTES = 4096
#: At most this many window buckets are read from a record (the policy writes 10).
MAX_BUCKETS = 64
#: Longest ``updated_by`` accepted, in UTF-8 bytes (Lua counts bytes; ``SyncConfig.worker_id``
#: allows 200 characters).
MAX_TEXT = 800
#: Integers in a record are below this (exact in a double, and so in Lua).
MAX_INT = 2**53
#: The most a record's version may grow between two reads by one worker. A fleet makes a
#: few transitions a second at most; a record far ahead of the last one read was forged or
#: corrupted (it would otherwise win every comparison for good) and is treated as garbage.
MAX_VERSION_STEP = 2**32


def next_version(version: int) -> int:
    """The version after ``version``: back to 1 rather than out of range (a reader adopts a
    store that went backwards, so the wrap is a transition like any other)."""
    return version + 1 if version + 1 < MAX_INT else 1


def version_jumped(last_read: int | None, version: int) -> bool:
    """Whether ``version`` is further ahead of the last version this worker read for the
    key than any real fleet can go (breaker.lua applies the same rule)."""
    return last_read is not None and version > last_read + MAX_VERSION_STEP


#: ``(start_ms, calls, failures, slow)``: one slice of the failure window.
Bucket = tuple[int, int, int, int]


class CircuitState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class OpenReason(StrEnum):
    """Why a breaker opened: shown by ``flexiai status`` and in snapshots."""

    NONE = ""
    FAILURE_RATE = "failure_rate"
    CONSECUTIVE_FAILURES = "consecutive_failures"
    SLOW_CALLS = "slow_calls"
    PROBE_FAILED = "probe_failed"
    RETRY_AFTER = "retry_after"


# A NamedTuple, not a frozen dataclass: an internal record on the Lambda cold-start path,
# and python3.12 creates a NamedTuple class in ~0.1 ms, a frozen slotted dataclass in ~0.6.
class WindowCounts(NamedTuple):
    """The fleet's calls in the failure window as one record counts them."""

    calls: int = 0
    failures: int = 0
    slow: int = 0

    @property
    def failure_rate(self) -> float | None:
        """Percent of calls that failed, or None before any call was counted."""
        return 100.0 * self.failures / self.calls if self.calls else None


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """One provider's breaker as the store keeps it (``to_json`` is the stored string).
    Times are the store's clock in milliseconds."""

    # The docstring also spares dataclass() building one from inspect.signature, ~0.4 ms of
    # cold start for these 14 fields.
    schema: int = RECORD_SCHEMA
    state: CircuitState = CircuitState.CLOSED
    version: int = 0
    #: Failures in a row fleet-wide, and when the first of them happened.
    run: int = 0
    run_started_at: int = 0
    buckets: tuple[Bucket, ...] = ()
    opened_at: int = 0
    open_until: int = 0
    opened_because: OpenReason = OpenReason.NONE
    probes_in_flight: int = 0
    probe_lease_until: int = 0
    #: Probe successes so far in HALF_OPEN.
    successes: int = 0
    updated_by: str = ""
    updated_at: int = 0

    def replace(self, **changes: Any) -> BreakerRecord:
        return dataclasses.replace(self, **changes)

    @property
    def foreign(self) -> bool:
        """Written by a newer schema: read-only here."""
        return self.schema > RECORD_SCHEMA

    def window(self, now: int, window_ms: int) -> WindowCounts:
        """The counts of the buckets still inside the window that ends at ``now``."""
        calls = failures = slow = 0
        for start, bucket_calls, bucket_failures, bucket_slow in self.buckets:
            if start > now - window_ms:
                calls += bucket_calls
                failures += bucket_failures
                slow += bucket_slow
        return WindowCounts(calls, failures, slow)

    # -- the one encoding: the stored string, also inside every event -----------------
    def to_json(self) -> str:
        return json.dumps(self.to_doc(), separators=(",", ":"), ensure_ascii=False)

    def to_doc(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "state": self.state.value,
            "version": self.version,
            "run": self.run,
            "run_started_at": self.run_started_at,
            "buckets": [list(b) for b in self.buckets],
            "opened_at": self.opened_at,
            "open_until": self.open_until,
            "opened_because": self.opened_because.value,
            "probes_in_flight": self.probes_in_flight,
            "probe_lease_until": self.probe_lease_until,
            "successes": self.successes,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, raw: str | bytes) -> BreakerRecord:
        """Parse a stored record. Raises ``ValueError`` on garbage, by the same rules as
        breaker.lua: at most ``MAX_RECORD_BYTES``; a JSON object with strict JSON numbers
        (no NaN, Infinity, hex or ``+1``); see ``from_doc`` for the fields."""
        if len(raw) > MAX_RECORD_BYTES:
            raise ValueError("breaker record is too large")
        try:
            doc = json.loads(raw, parse_constant=_reject_constant, strict=False)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ValueError("breaker record is not JSON") from None
        return cls.from_doc(doc)

    @classmethod
    def from_doc(cls, doc: Any) -> BreakerRecord:
        """A decoded record: integers integral, non-negative and below 2**53 (Lua has one
        number type, so 7 and 7.0 are the same there, and here); ``state`` and
        ``opened_because`` from their enums; ``updated_by`` a string of at most
        ``MAX_TEXT`` bytes; ``buckets`` a list of ``[start, calls, failures, slow]``.
        Unknown fields are ignored, missing ones take their defaults."""
        if not isinstance(doc, dict):
            raise ValueError("breaker record is not a JSON object")
        if "schema" not in doc:
            return _migrate_first_schema(doc)
        schema = _int(doc["schema"], "schema")
        if schema > RECORD_SCHEMA:
            # Only the fields every schema keeps: see the module docstring.
            return cls(
                schema=schema,
                state=_state(doc.get("state", "CLOSED")),
                version=_int(doc.get("version", 0), "version"),
                opened_at=_int(doc.get("opened_at", 0), "opened_at"),
                open_until=_int(doc.get("open_until", 0), "open_until"),
            )
        if schema != RECORD_SCHEMA:
            raise ValueError(f"breaker record schema {schema} is unknown")
        kwargs: dict[str, Any] = {}
        for key, parse in _FIELDS.items():
            if key in doc:
                kwargs[key] = parse(doc[key], key)
        return cls(**kwargs)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _int(value: Any, name: str) -> int:
    # bool is an int in Python but not a number in JSON: reject it as Lua does.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"breaker record field {name!r} has an invalid value")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"breaker record field {name!r} has an invalid value")
    if not 0 <= value < MAX_INT:
        raise ValueError(f"breaker record field {name!r} has an invalid value")
    return int(value)


def _state(value: Any, name: str = "state") -> CircuitState:
    if not isinstance(value, str) or value not in _STATES:
        raise ValueError(f"breaker record field {name!r} has an invalid value")
    return CircuitState(value)


def _reason(value: Any, name: str) -> OpenReason:
    if not isinstance(value, str) or value not in _REASONS:
        raise ValueError(f"breaker record field {name!r} has an invalid value")
    return OpenReason(value)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value.encode("utf-8", "surrogatepass")) > MAX_TEXT:
        raise ValueError(f"breaker record field {name!r} has an invalid value")
    return value


def _buckets(value: Any, name: str) -> tuple[Bucket, ...]:
    if value == {}:
        return ()  # Lua's cjson cannot tell an empty object from an empty list
    if not isinstance(value, list) or len(value) > MAX_BUCKETS:
        raise ValueError(f"breaker record field {name!r} has an invalid value")
    out: list[Bucket] = []
    for item in value:
        if not isinstance(item, list) or len(item) != 4:
            raise ValueError(f"breaker record field {name!r} has an invalid value")
        start, calls, failures, slow = (_int(v, name) for v in item)
        out.append((start, calls, failures, slow))
    return tuple(out)


_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "state": _state,
    "version": _int,
    "run": _int,
    "run_started_at": _int,
    "buckets": _buckets,
    "opened_at": _int,
    "open_until": _int,
    "opened_because": _reason,
    "probes_in_flight": _int,
    "probe_lease_until": _int,
    "successes": _int,
    "updated_by": _text,
    "updated_at": _int,
}
_STATES = frozenset(state.value for state in CircuitState)
_REASONS = frozenset(reason.value for reason in OpenReason)


def _migrate_first_schema(doc: dict[str, Any]) -> BreakerRecord:
    """flexiai 0.1's record: float seconds, ``failures`` within a tumbling window. Its
    state, deadlines and failure count carry over; its counts become the current run."""

    def ms(name: str) -> int:
        value = doc.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"breaker record field {name!r} has an invalid value")
        scaled = value * 1000 + 0.5  # as Lua rounds; 1e308 seconds overflows to inf here
        if not math.isfinite(scaled):
            raise ValueError(f"breaker record field {name!r} has an invalid value")
        return _int(math.floor(scaled), name)

    return BreakerRecord(
        state=_state(doc.get("state", "CLOSED")),
        version=_int(doc.get("version", 0), "version"),
        run=_int(doc.get("failures", 0), "failures"),
        run_started_at=ms("window_started_at"),
        opened_at=ms("opened_at"),
        open_until=ms("open_until"),
        probes_in_flight=_int(doc.get("probes_in_flight", 0), "probes_in_flight"),
        probe_lease_until=ms("probe_lease_until"),
        successes=_int(doc.get("successes", 0), "successes"),
        updated_by=_text(doc.get("updated_by", ""), "updated_by"),
        updated_at=ms("updated_at"),
    )


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """What callers see of a breaker: ``get_provider_status()``, ``CircuitOpenError`` and
    ``flexiai status``. Times are epoch seconds on the store's clock."""

    provider: str
    state: CircuitState
    opened_at: float | None
    retry_at: float | None
    opened_because: str | None
    probes_in_flight: int
    version: int
    updated_by: str
    shared: bool
    #: The failure window, counted across the fleet (or this process when not shared).
    window_calls: int = 0
    window_failures: int = 0
    window_slow_calls: int = 0
    failure_rate: float | None = None
    #: Failures in a row, with no success anywhere in between.
    consecutive_failures: int = 0

    @property
    def failures(self) -> int:
        """Failures in the window (the guide's name for the count)."""
        return self.window_failures

    @classmethod
    def from_record(
        cls, provider: str, record: BreakerRecord, *, shared: bool, now: int, window_ms: int
    ) -> BreakerSnapshot:
        counts = record.window(now, window_ms)
        is_open = record.state is not CircuitState.CLOSED
        return cls(
            provider=provider,
            state=record.state,
            opened_at=record.opened_at / 1000 if record.opened_at else None,
            retry_at=record.open_until / 1000 if is_open else None,
            opened_because=record.opened_because.value or None,
            probes_in_flight=record.probes_in_flight,
            version=record.version,
            updated_by=record.updated_by,
            shared=shared,
            window_calls=counts.calls,
            window_failures=counts.failures,
            window_slow_calls=counts.slow,
            failure_rate=counts.failure_rate,
            consecutive_failures=record.run,
        )

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        data["failures"] = self.failures
        return data
