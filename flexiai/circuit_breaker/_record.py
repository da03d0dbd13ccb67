"""The shared record of one provider's breaker, and its public read-only snapshot.

A record is what the store keeps (one JSON string per provider in Redis, an object in
memory). Times are wall-clock seconds of the *store's* clock (Redis ``TIME``), so workers'
clocks never have to agree.

The stored JSON (``to_json``) is compact, in field order, with numbers exactly as Python's
``repr(float)`` / ``str(int)`` write them; ``sync/backends/lua/breaker.lua`` builds the same
bytes by hand, so a record reads back identically whichever side wrote it:

    {"state":"OPEN","failures":0,"window_started_at":0.0,"opened_at":1764180000.123,...}
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["BreakerRecord", "BreakerSnapshot", "CircuitState"]


class CircuitState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    window_started_at: float = 0.0
    opened_at: float = 0.0
    open_until: float = 0.0
    probes_in_flight: int = 0
    probe_lease_until: float = 0.0
    successes: int = 0
    version: int = 0
    updated_by: str = ""
    updated_at: float = 0.0

    def replace(self, **changes: Any) -> BreakerRecord:
        return dataclasses.replace(self, **changes)

    # The record inside an event (flexiai.sync.events): one field per attribute, numbers as
    # decimal strings.
    def to_fields(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, CircuitState) else str(value)
        return out

    @classmethod
    def from_fields(cls, fields: dict[str, str] | dict[bytes, bytes]) -> BreakerRecord:
        """Parse an event's record. Raises ``ValueError`` naming the bad field on garbage.

        On the event path of every pub/sub worker: the parsers are built once, below."""
        kwargs: dict[str, Any] = {}
        for raw_key, raw_value in fields.items():
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            parse = _PARSERS.get(key)
            if parse is None:
                continue
            value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
            try:
                kwargs[key] = parse(value)
            except ValueError:
                raise ValueError(f"breaker record field {key!r} has an invalid value") from None
        return cls(**kwargs)

    # The string stored in Redis: one compact JSON object.
    def to_json(self) -> str:
        return json.dumps(
            {
                f.name: (value.value if isinstance(value, CircuitState) else value)
                for f in dataclasses.fields(self)
                for value in (getattr(self, f.name),)
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> BreakerRecord:
        """Parse a stored record. Raises ``ValueError`` on garbage, with the same rules as
        breaker.lua: a JSON object (strict JSON numbers: no NaN, Infinity, hex or ``+1``);
        ``state`` one of the states, ``updated_by`` a string, int fields integral numbers
        below 2**53, float fields finite numbers. Unknown fields are ignored, missing ones
        take their defaults."""
        try:
            doc = json.loads(raw, parse_constant=_reject_constant, strict=False)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ValueError("breaker record is not JSON") from None
        if not isinstance(doc, dict):
            raise ValueError("breaker record is not a JSON object")
        kwargs: dict[str, Any] = {}
        for key, kind in _KINDS.items():
            if key not in doc:
                continue
            value = _json_value(kind, doc[key])
            if value is None:
                raise ValueError(f"breaker record field {key!r} has an invalid value")
            kwargs[key] = value
        return cls(**kwargs)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _json_value(kind: str, value: Any) -> Any:
    """One decoded JSON field as the record holds it; None where breaker.lua finds garbage
    (Lua has one number type, so 7 and 7.0 are the same there, and here)."""
    if kind == "CircuitState":
        return CircuitState(value) if isinstance(value, str) and value in _STATES else None
    if kind == "str":
        return value if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer literal beyond a double
        return None
    if not math.isfinite(number):
        return None
    if kind == "int":
        if not number.is_integer() or abs(number) >= 2**53:
            return None
        return int(number)
    return number


def _finite(raw: str) -> float:
    number = float(raw)
    if not math.isfinite(number):
        raise ValueError(raw)
    return number


def _parser(type_name: str) -> Callable[[str], Any]:
    return {"CircuitState": CircuitState, "str": str, "int": int}.get(type_name, _finite)


_PARSERS: dict[str, Callable[[str], Any]] = {
    f.name: _parser(str(f.type)) for f in dataclasses.fields(BreakerRecord)
}
_KINDS: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(BreakerRecord)}
_STATES = frozenset(state.value for state in CircuitState)


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """What callers see of a breaker: ``get_provider_status()`` and ``CircuitOpenError``."""

    provider: str
    state: CircuitState
    failures: int
    opened_at: float | None
    retry_at: float | None
    probes_in_flight: int
    version: int
    updated_by: str
    shared: bool

    @classmethod
    def from_record(cls, provider: str, record: BreakerRecord, *, shared: bool) -> BreakerSnapshot:
        return cls(
            provider=provider,
            state=record.state,
            failures=record.failures,
            opened_at=record.opened_at or None,
            retry_at=record.open_until if record.state is not CircuitState.CLOSED else None,
            probes_in_flight=record.probes_in_flight,
            version=record.version,
            updated_by=record.updated_by,
            shared=shared,
        )

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return data
