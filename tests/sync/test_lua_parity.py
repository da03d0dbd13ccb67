"""breaker.lua against circuit_breaker._machine: same records, same flags, same wire bytes.

The Lua script is the fleet's copy of the state machine; these tests hold it to the Python
one on seeded random operation sequences (fakeredis runs Lua 5.1 through lupa, the real
server its own interpreter and cjson), field by field, including the exact bytes of every
stored record (``BreakerRecord.to_json``) and every published event, and on what counts as
garbage in a stored record.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from flexiai.circuit_breaker._machine import EventType, Op, transition
from flexiai.circuit_breaker._record import BreakerRecord
from flexiai.sync.events import SyncEvent, encode_event
from tests.sync.conftest import Store, policy

# Durations of a few milliseconds, so real time between operations crosses every deadline.
TINY = policy(
    failure_threshold=3,
    failure_window=0.004,
    recovery_timeout=0.003,
    half_open_max_calls=2,
    success_threshold=2,
    probe_lease_ttl=0.004,
    max_open_for=0.006,
)
OPS = [Op.FAILURE] * 5 + [Op.ACQUIRE] * 5 + [Op.SUCCESS] * 4 + [Op.TRIP, Op.RESET]
OPEN_FOR = [None, None, 0.0, 0.002, 0.05, 1e-7, 1 / 3]
# Worker ids JSON must escape (quotes, backslashes, control characters) or may not (non-ASCII).
WORKERS = ["w-a", "w-b", 'w-"quoted"\\/ü', "w-\n\t\x01\x1f\x7f-€"]


@pytest.mark.parametrize("seed", [1, 2])
def test_random_sequences_match_the_python_machine(redis_store: Store, seed: int) -> None:
    rng = random.Random(seed)
    backend = redis_store.backend()
    model = BreakerRecord()
    seen_events: set[EventType | None] = set()
    granted = denied = 0
    for step in range(600):
        op = rng.choice(OPS)
        open_for = rng.choice(OPEN_FOR) if op is Op.TRIP else None
        worker = rng.choice(WORKERS)
        result = backend.transition("openai", op, TINY, worker, open_for=open_for)
        expected = transition(model, op, TINY, result.now, worker, open_for=open_for)
        assert result == expected, f"step {step}: {op} from {model}"
        model = expected.record
        stored = redis_store.raw.get(redis_store.key("openai"))
        if stored is not None:  # absent until the first change
            assert stored == model.to_json().encode(), f"step {step}: stored bytes"
        seen_events.add(result.event)
        if op is Op.ACQUIRE:
            granted += result.granted
            denied += not result.granted
        if step % 50 == 0:
            assert backend.load(["openai"]).records["openai"] == model
        if rng.random() < 0.3:
            time.sleep(rng.choice([0.0005, 0.002, 0.005]))
    # The sequence really exercised the machine.
    assert seen_events >= {None, *EventType}
    assert granted and denied


def test_stored_record_is_exactly_to_json(redis_store: Store) -> None:
    backend, p = redis_store.backend(), policy(failure_threshold=2)
    for op, kwargs in [
        (Op.FAILURE, {}),
        (Op.FAILURE, {}),
        (Op.TRIP, {"open_for": 0.1}),
        (Op.TRIP, {"open_for": 12.345678}),
        (Op.RESET, {}),
    ]:
        result = backend.transition("openai", op, p, "w-1", **kwargs)
        stored = redis_store.raw.get(redis_store.key("openai"))
        assert stored == result.record.to_json().encode()
        assert BreakerRecord.from_json(stored) == result.record


def test_published_events_are_exactly_encode_event(redis_store: Store) -> None:
    """The raw message on the channel equals encode_event's document, float for float."""
    backend = redis_store.backend()
    p = policy(
        failure_threshold=2, success_threshold=2, half_open_max_calls=2, recovery_timeout=0.05
    )
    pubsub = redis_store.raw.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(redis_store.config.channel)
        pubsub.get_message(timeout=1)  # the subscribe confirmation
        results = [backend.transition("openai", Op.FAILURE, p, "w-1")]
        results.append(backend.transition("openai", Op.FAILURE, p, 'w-"quoted"/ü'))
        time.sleep(0.06)
        results += [
            backend.transition("openai", op, p, "w-2")
            for op in (Op.ACQUIRE, Op.ACQUIRE, Op.SUCCESS, Op.SUCCESS)
        ]
        published = [r for r in results if r.event is not None]
        assert [r.event for r in published] == [
            EventType.FAILURE,
            EventType.OPENED,
            EventType.HALF_OPEN,
            EventType.SUCCESS,
            EventType.CLOSED,
        ]
        for result in published:
            message = None
            deadline = time.monotonic() + 5
            while message is None and time.monotonic() < deadline:
                message = pubsub.get_message(timeout=1)
            assert message is not None
            expected = encode_event(
                SyncEvent(
                    result.event, "openai", result.record.updated_by, result.now, result.record
                )
            )
            assert json.loads(message["data"]) == json.loads(expected)
    finally:
        pubsub.close()


# Raw JSON values of one field and whether Python's from_json accepts them. Lua has one
# number type, so an integral 7.0 is a fine count on both sides; cjson alone would also take
# hex, nan, inf, +7, 07 and 5., which Python's json rejects, so breaker.lua checks the text.
FIELD_CASES = [
    ("failures", "7", True),
    ("failures", "-2", True),
    ("failures", "7.0", True),
    ("failures", "1e3", True),
    ("failures", "1.5", False),
    ("failures", "9007199254740992", False),
    ("failures", '"7"', False),
    ("failures", "+7", False),
    ("failures", "07", False),
    ("failures", "true", False),
    ("failures", "null", False),
    ("failures", "[7]", False),
    ("opened_at", "1e3", True),
    ("opened_at", "2.5", True),
    ("opened_at", "-0", True),
    ("opened_at", "1E-3", True),
    ("opened_at", ".5", False),
    ("opened_at", "5.", False),
    ("opened_at", "0x10", False),
    ("opened_at", "1e400", False),
    ("opened_at", "NaN", False),
    ("opened_at", "nan", False),
    ("opened_at", "Infinity", False),
    ("opened_at", "-Infinity", False),
    ("opened_at", "inf", False),
    ("opened_at", '"2.5"', False),
    ("state", '"OPEN"', True),
    ("state", '"open"', False),
    ("state", '""', False),
    ("state", "1", False),
    ("updated_by", '"anything at all"', True),
    ("updated_by", '"\\u00fc \\n \\"quoted\\""', True),
    ("updated_by", "5", False),
    ("updated_by", '["x"]', False),
    ("colour", '{"deep": [1, 2.5, "x", null, true]}', True),
    ("colour", "0x10", False),  # not JSON at all, whichever field it is in
]


@pytest.mark.parametrize(("field", "raw", "valid"), FIELD_CASES)
def test_lua_and_python_agree_on_what_is_garbage(
    redis_store: Store, field: str, raw: str, valid: bool
) -> None:
    assert_agree(redis_store, f'{{"failures": 1, "{field}": {raw}}}', valid)


# Whole stored strings.
DOCUMENT_CASES = [
    ('{"failures": 1}', True),
    (' \t{"failures":1}\n ', True),
    ("{}", True),
    ('{"failures": 1, "failures": 2}', True),
    ('{"failures": 1,}', False),
    ('{"failures": 1}x', False),
    ('{"failures": 1', False),
    ("[1]", False),
    ("[]", False),
    ('"text"', False),
    ("5", False),
    ("", False),
    ("garbage", False),
]


@pytest.mark.parametrize(("raw", "valid"), DOCUMENT_CASES)
def test_lua_and_python_agree_on_whole_documents(redis_store: Store, raw: str, valid: bool) -> None:
    assert_agree(redis_store, raw, valid)


def assert_agree(redis_store: Store, raw: str, valid: bool) -> None:
    backend, key = redis_store.backend(), redis_store.key("openai")
    try:
        BreakerRecord.from_json(raw)
        python_valid = True
    except ValueError:
        python_valid = False
    assert python_valid is valid

    redis_store.raw.set(key, raw)
    assert (backend.load(["openai"]).invalid == ()) is valid
    before = backend.stats()["invalid_records"]
    result = backend.transition("openai", Op.ACQUIRE, policy(), "w-1")
    assert (backend.stats()["invalid_records"] == before) is valid
    if valid:
        stored = BreakerRecord.from_json(raw)
        assert result == transition(stored, Op.ACQUIRE, policy(), result.now, "w-1")
    else:
        assert redis_store.raw.get(key) == BreakerRecord().to_json().encode()
