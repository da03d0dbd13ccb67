"""Breaker events on the wire: versioned JSON, one message per transition.

    {"v": 1, "type": "OPENED", "provider": "openai", "worker_id": "host-123-ab12",
     "ts": 1764180000.123, "version": 7, "record": {...BreakerRecord fields...}}

``ts`` and the record's times are the store's clock. ``version`` orders events per provider:
a receiver applies an event only when it is newer than what it already has, so late and
duplicated messages are harmless. The Lua script builds the same document with cjson.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flexiai.circuit_breaker._machine import EventType
from flexiai.circuit_breaker._record import BreakerRecord

__all__ = ["WIRE_VERSION", "MalformedEventError", "SyncEvent", "decode_event", "encode_event"]

WIRE_VERSION = 1


class MalformedEventError(ValueError):
    """A message on the channel is not a valid event. It is dropped, logged and counted."""


@dataclass(frozen=True, slots=True)
class SyncEvent:
    type: EventType
    provider: str
    worker_id: str
    timestamp: float
    record: BreakerRecord

    @property
    def version(self) -> int:
        return self.record.version


def encode_event(event: SyncEvent) -> str:
    return json.dumps(
        {
            "v": WIRE_VERSION,
            "type": event.type.value,
            "provider": event.provider,
            "worker_id": event.worker_id,
            "ts": event.timestamp,
            "version": event.record.version,
            "record": event.record.to_fields(),
        },
        separators=(",", ":"),
    )


def decode_event(payload: str | bytes) -> SyncEvent:
    try:
        doc: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEventError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedEventError("event is not a JSON object")
    if doc.get("v") != WIRE_VERSION:
        raise MalformedEventError(f"unsupported wire version {doc.get('v')!r}")
    try:
        event_type = EventType(doc["type"])
        provider = doc["provider"]
        worker_id = doc["worker_id"]
        timestamp = float(doc["ts"])
        raw_record = doc["record"]
    except (KeyError, ValueError, TypeError) as exc:
        raise MalformedEventError(f"missing or invalid field: {exc}") from None
    if not isinstance(provider, str) or not isinstance(worker_id, str):
        raise MalformedEventError("provider and worker_id must be strings")
    if not isinstance(raw_record, dict) or not all(
        isinstance(v, str | int | float) for v in raw_record.values()
    ):
        raise MalformedEventError("record must be an object of scalar fields")
    try:
        record = BreakerRecord.from_fields({str(k): str(v) for k, v in raw_record.items()})
    except ValueError as exc:
        raise MalformedEventError(str(exc)) from None
    if record.version != doc.get("version", record.version):
        raise MalformedEventError("version does not match the record's version")
    return SyncEvent(event_type, provider, worker_id, timestamp, record)
