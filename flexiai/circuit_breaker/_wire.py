"""Breaker events on the wire: versioned JSON, one message per transition.

    {"v":2,"prefix":"flexiai","type":"OPENED","provider":"openai",
     "worker_id":"host-123-ab12","ts":1764180000123,
     "record":{...the stored record, BreakerRecord.to_json()...}}

``ts`` and the record's times are the store's clock in milliseconds. The record is the
stored JSON itself, so there is one encoding of a record; its ``version`` orders events per
provider: a receiver applies an event only when it is newer than what it already has, so
late and duplicated messages are harmless. breaker.lua builds the same bytes.

``prefix`` is the sender's ``key_prefix``: apps that share one channel (an explicit
``channel=``) drop each other's events unread (``StateSyncManager``'s ``foreign_events``).
An event without it (flexiai before prefixes were sent) decodes with prefix ``""``, which no
app has, so it is dropped too; the periodic resync covers a rolling upgrade.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from flexiai.circuit_breaker._machine import EventType
from flexiai.circuit_breaker._record import MAX_RECORD_BYTES, BreakerRecord

__all__ = ["WIRE_VERSION", "MalformedEventError", "SyncEvent", "decode_event", "encode_event"]

WIRE_VERSION = 2
#: An event is its record plus a few short fields.
MAX_EVENT_BYTES = MAX_RECORD_BYTES + 1024


class MalformedEventError(ValueError):
    """A message on the channel is not a valid event. It is dropped, logged and counted."""


# A NamedTuple, not a frozen dataclass: an internal record on the Lambda cold-start path,
# and python3.12 creates a NamedTuple class in ~0.1 ms, a frozen slotted dataclass in ~0.6.
class SyncEvent(NamedTuple):
    type: EventType
    provider: str
    worker_id: str
    timestamp: int
    record: BreakerRecord
    #: The sender's key_prefix ("" for an event that carried none).
    prefix: str = ""

    @property
    def version(self) -> int:
        return self.record.version


def encode_event(event: SyncEvent) -> str:
    """The same bytes as breaker.lua publishes."""
    head = json.dumps(
        {
            "v": WIRE_VERSION,
            "prefix": event.prefix,
            "type": event.type.value,
            "provider": event.provider,
            "worker_id": event.worker_id,
            "ts": event.timestamp,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return f'{head[:-1]},"record":{event.record.to_json()}}}'


def decode_event(payload: str | bytes) -> SyncEvent:
    """One message from the channel. Raises ``MalformedEventError`` (and nothing else) for
    anything that is not a valid event, at a cost bounded by ``MAX_EVENT_BYTES``."""
    if len(payload) > MAX_EVENT_BYTES:
        raise MalformedEventError("event is too large")
    try:
        doc: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedEventError(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise MalformedEventError("event is not a JSON object")
    if doc.get("v") != WIRE_VERSION:
        raise MalformedEventError(f"unsupported wire version {_short(doc.get('v'))}")
    try:
        event_type = EventType(doc["type"])
        provider = doc["provider"]
        worker_id = doc["worker_id"]
        timestamp = doc["ts"]
        raw_record = doc["record"]
        prefix = doc.get("prefix", "")
    except (KeyError, ValueError, TypeError) as exc:
        raise MalformedEventError(f"missing or invalid field: {exc!s:.60}") from None
    if not isinstance(provider, str) or not isinstance(worker_id, str):
        raise MalformedEventError("provider and worker_id must be strings")
    if not isinstance(prefix, str):
        raise MalformedEventError("prefix must be a string")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise MalformedEventError("ts must be a non-negative integer")
    try:
        record = BreakerRecord.from_doc(raw_record)
    except ValueError as exc:
        raise MalformedEventError(str(exc)) from None
    return SyncEvent(event_type, provider, worker_id, timestamp, record, prefix)


def _short(value: Any) -> str:
    """A few characters naming a value from the wire, without walking a nested one."""
    if value is None or isinstance(value, bool | int | float | str):
        return f"{value!r:.20}"
    return type(value).__name__
