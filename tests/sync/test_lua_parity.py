"""breaker.lua against circuit_breaker._machine: same records, same flags, same wire bytes.

The Lua script is the fleet's copy of the state machine; these tests hold it to the Python
one on seeded random operation sequences (fakeredis runs Lua 5.1 through lupa, the real
server its own interpreter and cjson), field by field, including the exact text of every
stored field and every published event.
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
OPEN_FOR = [None, None, 0.0, 0.002, 0.05]


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
        worker = rng.choice(["w-a", "w-b", "w-c"])
        result = backend.transition("openai", op, TINY, worker, open_for=open_for)
        expected = transition(model, op, TINY, result.now, worker, open_for=open_for)
        assert result == expected, f"step {step}: {op} from {model}"
        model = expected.record
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


def test_stored_fields_are_exactly_to_fields(redis_store: Store) -> None:
    backend, p = redis_store.backend(), policy(failure_threshold=2)
    for op, kwargs in [
        (Op.FAILURE, {}),
        (Op.FAILURE, {}),
        (Op.TRIP, {"open_for": 0.1}),
        (Op.TRIP, {"open_for": 12.345678}),
        (Op.RESET, {}),
    ]:
        result = backend.transition("openai", op, p, "w-1", **kwargs)
        stored = redis_store.raw.hgetall(redis_store.key("openai"))
        assert {k.decode(): v.decode() for k, v in stored.items()} == result.record.to_fields()


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


# Raw field values and whether Python's from_fields accepts them.
FIELD_CASES = [
    ("failures", " 7 ", True),
    ("failures", "+7", True),
    ("failures", "-2", True),
    ("failures", "7.0", False),
    ("failures", "1e3", False),
    ("failures", "", False),
    ("failures", "seven", False),
    ("opened_at", "1e3", True),
    ("opened_at", " 2.5 ", True),
    ("opened_at", ".5", True),
    ("opened_at", "5.", True),
    ("opened_at", "-0", True),
    ("opened_at", "0x10", False),
    ("opened_at", "inf", False),
    ("opened_at", "-Infinity", False),
    ("opened_at", "nan", False),
    ("opened_at", "", False),
    ("state", "OPEN", True),
    ("state", "open", False),
    ("state", "", False),
    ("updated_by", "anything at all", True),
]


@pytest.mark.parametrize(("field", "raw", "valid"), FIELD_CASES)
def test_lua_and_python_agree_on_what_is_garbage(
    redis_store: Store, field: str, raw: str, valid: bool
) -> None:
    backend, key = redis_store.backend(), redis_store.key("openai")
    try:
        BreakerRecord.from_fields({field: raw})
        python_valid = True
    except ValueError:
        python_valid = False
    assert python_valid is valid

    redis_store.raw.hset(key, field, raw)
    assert (backend.load(["openai"]).invalid == ()) is valid
    before = backend.stats()["invalid_records"]
    result = backend.transition("openai", Op.ACQUIRE, policy(), "w-1")
    assert (backend.stats()["invalid_records"] == before) is valid
    if valid:
        stored = BreakerRecord.from_fields({field: raw})
        assert result == transition(stored, Op.ACQUIRE, policy(), result.now, "w-1")
