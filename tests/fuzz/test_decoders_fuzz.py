"""Fuzzed breaker records and events (issue 11, "Tests"): whatever a shared Redis holds or
its channel carries, bytes, text, JSON of any shape, nesting, huge or odd numbers, long
strings, valid documents with one field replaced, the decoders raise only their documented
error: ``ValueError`` from ``BreakerRecord.from_json`` / ``from_doc``,
``MalformedEventError`` from ``decode_event``. How long the worst input takes is measured
by ``bench/decoders.py``, not here."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flexiai.circuit_breaker import BreakerRecord, CircuitState, EventType, SyncEvent
from flexiai.circuit_breaker._record import OpenReason
from flexiai.circuit_breaker._wire import MalformedEventError, decode_event, encode_event

FUZZ = settings(
    max_examples=200,
    deadline=None,  # no timing: a busy machine is not a failure
    suppress_health_check=[HealthCheck.too_slow],
)

VALID_RECORD = BreakerRecord(
    state=CircuitState.OPEN,
    version=7,
    run=2,
    buckets=((1_764_180_000_000, 40, 1, 0),),
    opened_at=1_764_180_000_123,
    open_until=1_764_180_060_123,
    opened_because=OpenReason.FAILURE_RATE,
    updated_by="host-1-ab12",
    updated_at=1_764_180_000_123,
)
VALID_EVENT = SyncEvent(
    EventType.OPENED, "openai", "host-1-ab12", 1_764_180_000_123, VALID_RECORD, "flexiai"
)

NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**53 - 1, 2**53, 2**63, -(2**63), 10**300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, 0.5, -0.0]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    st.text(max_size=50),
    st.text(max_size=4200, alphabet=st.characters(codec="utf-8")).filter(lambda s: len(s) > 4000),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)
RECORD_FIELDS = [*VALID_RECORD.to_doc(), "failures", "window_started_at", "colour"]
EVENT_FIELDS = ["v", "prefix", "type", "provider", "worker_id", "ts", "record"]


def _mutated(doc: dict[str, Any], fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid document with some fields replaced by anything, or removed."""
    changes = st.dictionaries(st.sampled_from(fields), JSON_VALUES, min_size=1, max_size=3)
    removed = st.sets(st.sampled_from(fields), max_size=2)
    return st.builds(
        lambda c, r: {k: v for k, v in {**doc, **c}.items() if k not in r}, changes, removed
    )


def _dumps(doc: Any) -> str:
    """JSON text, NaN and Infinity included (Python writes them; a hostile writer may)."""
    return json.dumps(doc)


def _nested(depth: int, body: str = "1") -> str:
    return "[" * depth + body + "]" * depth


ADVERSARIAL_RECORDS = [
    _nested(1_000),
    _nested(100_000),
    '{"schema": 2, "buckets": ' + _nested(900) + "}",
    '{"schema": 2, "run": ' + "9" * 4000 + "}",
    '{"schema": 2, "run": 1' + "0" * 400 + "}",
    '{"schema": 2, "open_until": 1e308}',
    '{"schema": 2, "open_until": 1e999}',
    '{"schema": 2, "updated_by": "' + "x" * 4000 + '"}',
    '{"schema": 2, "updated_by": "' + "\\ud800" * 600 + '"}',
    '{"schema": 2, "version": -1}',
    '{"failures": 1, "opened_at": 1e308}',
    '{"failures": 1, "opened_at": NaN}',
    "\ufeff{}",
]


@pytest.mark.parametrize("raw", ADVERSARIAL_RECORDS)
def test_adversarial_records_raise_only_value_error(raw: str) -> None:
    for payload in (raw, raw.encode("utf-8", "surrogatepass")):
        assert_record_decoder_contract(payload)


@FUZZ
@given(st.binary(max_size=5000) | st.text(max_size=5000))
@example(b"\xff\xfe\x00\x00")
@example(b"\x00\x00\x00{")
def test_any_bytes_or_text_as_a_record(raw: bytes | str) -> None:
    assert_record_decoder_contract(raw)


@FUZZ
@given(JSON_VALUES | _mutated(VALID_RECORD.to_doc(), RECORD_FIELDS))
def test_any_json_as_a_record(doc: Any) -> None:
    assert_record_decoder_contract(_dumps(doc))
    try:
        record = BreakerRecord.from_doc(doc)
    except ValueError:
        return
    assert BreakerRecord.from_json(record.to_json()) == record


def assert_record_decoder_contract(raw: str | bytes) -> None:
    try:
        record = BreakerRecord.from_json(raw)
    except ValueError:
        return
    # What it accepts is a record it can write back and read again unchanged.
    assert BreakerRecord.from_json(record.to_json()) == record


ADVERSARIAL_EVENTS = [
    '{"v": ' + _nested(900) + "}",
    '{"v": 2, "type": ' + _nested(900) + "}",
    _nested(100_000),
    '{"v": 2, "type": "OPENED", "provider": "p", "worker_id": "w", "ts": 1e308, "record": {}}',
    '{"v": 2, "type": "OPENED", "provider": "p", "worker_id": "w", "ts": NaN, "record": {}}',
    '{"v": 2, "type": "OPENED", "provider": "p", "worker_id": "w", "ts": 1, "record": {},'
    ' "prefix": ["x"]}',
    '{"v": ' + "9" * 4400 + "}",
    '{"v": 2, "type": "OPENED", "provider": "' + "p" * 5000 + '"}',
    "[]",
    "null",
]


@pytest.mark.parametrize("raw", ADVERSARIAL_EVENTS)
def test_adversarial_events_raise_only_malformed_event_error(raw: str) -> None:
    for payload in (raw, raw.encode()):
        assert_event_decoder_contract(payload)


@FUZZ
@given(st.binary(max_size=6000) | st.text(max_size=6000))
def test_any_bytes_or_text_as_an_event(raw: bytes | str) -> None:
    assert_event_decoder_contract(raw)


@FUZZ
@given(
    JSON_VALUES
    | _mutated(json.loads(encode_event(VALID_EVENT)), EVENT_FIELDS)
    | st.builds(
        lambda record: {**json.loads(encode_event(VALID_EVENT)), "record": record},
        _mutated(VALID_RECORD.to_doc(), RECORD_FIELDS),
    )
)
def test_any_json_as_an_event(doc: Any) -> None:
    assert_event_decoder_contract(_dumps(doc))


def assert_event_decoder_contract(payload: str | bytes) -> None:
    try:
        event = decode_event(payload)
    except MalformedEventError:
        return
    assert decode_event(encode_event(event)) == event


def test_a_valid_event_and_record_round_trip() -> None:
    assert decode_event(encode_event(VALID_EVENT)) == VALID_EVENT
    assert BreakerRecord.from_json(VALID_RECORD.to_json()) == VALID_RECORD
