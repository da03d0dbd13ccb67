"""The shared record of one provider's breaker, and its public read-only snapshot.

A record is what the store keeps (a Redis hash, or a dict in memory). Times are wall-clock
seconds of the *store's* clock (Redis ``TIME``), so workers' clocks never have to agree.
"""

from __future__ import annotations

import dataclasses
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

    # The hash layout in Redis: one field per attribute, numbers as decimal strings.
    def to_fields(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, CircuitState) else str(value)
        return out

    @classmethod
    def from_fields(cls, fields: dict[str, str] | dict[bytes, bytes]) -> BreakerRecord:
        """Parse a stored hash. Raises ``ValueError`` naming the bad field on garbage.

        On the snapshot path of every Lambda request: the parsers are built once, below."""
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
