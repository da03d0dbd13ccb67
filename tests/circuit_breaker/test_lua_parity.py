"""breaker.lua against circuit_breaker._machine: same records, same flags, same wire bytes.

The Lua script is the fleet's copy of the state machine; these tests hold it to the Python
one on seeded random operation sequences (fakeredis runs Lua 5.1 through lupa, the real
server its own interpreter and cjson), field by field, including the exact bytes of every
stored record (``BreakerRecord.to_json``) and every published event, and on what counts as
garbage in a stored record. The store's clock is a fake one passed to the script as its
``now``, so every run is deterministic, whatever the load on the machine.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from flexiai.circuit_breaker._machine import NO_TALLY, EventType, Op, Tally, transition
from flexiai.circuit_breaker._record import MAX_VERSION_STEP, BreakerRecord
from flexiai.circuit_breaker._wire import SyncEvent, encode_event
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
from flexiai_dev.servers import RedisProcess
from tests.circuit_breaker.conftest import Store, policy
from tests.support.redis_fixtures import sync_config_for

# Durations of a few milliseconds to seconds, so the steps below cross every deadline.
TINY = policy(
    failure_threshold=3,
    minimum_calls=6,
    failure_rate_threshold=40.0,
    failure_window=0.05,
    slow_call_duration=0.01,
    slow_call_rate_threshold=60.0,
    recovery_timeout=0.003,
    half_open_max_calls=2,
    success_threshold=2,
    probe_lease_ttl=0.004,
    max_open_for=0.006,
)
OPS = [Op.FAILURE] * 5 + [Op.REPORT] * 4 + [Op.ACQUIRE] * 5 + [Op.SUCCESS] * 4
OPS += [Op.TRIP, Op.RESET]
OPEN_FOR = [None, None, 0, 2, 50, 1, 333]
STEPS_MS = [0, 0, 1, 2, 3, 5, 8, 20, 60]
# Worker ids JSON must escape (quotes, backslashes, control characters) or may not (non-ASCII).
WORKERS = ["w-a", "w-b", 'w-"quoted"\\/ü', "w-\n\t\x01\x1f\x7f-€"]


def random_tally(rng: random.Random) -> Tally:
    count = rng.choice([0, 0, 1, 3, 7])
    if not count:
        return Tally(0, rng.choice([0, 1]), None) if rng.random() < 0.3 else NO_TALLY
    return Tally(count, rng.randint(0, count), rng.choice([0, 1, 4, 30, 200]))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_sequences_match_the_python_machine(redis_store: Store, seed: int) -> None:
    rng = random.Random(seed)
    backend = redis_store.backend()
    model = BreakerRecord()
    seen_events: set[EventType | None] = set()
    reasons = set()
    granted = denied = 0
    for step in range(800):
        op = rng.choice(OPS)
        open_for = rng.choice(OPEN_FOR) if op is Op.TRIP else None
        tally = random_tally(rng) if op in (Op.FAILURE, Op.REPORT) else NO_TALLY
        worker = rng.choice(WORKERS)
        if op is Op.REPORT:
            snapshot = backend.report({"openai": tally}, TINY, worker)
            expected = transition(model, op, TINY, snapshot.now, worker, tally=tally)
            assert snapshot.records["openai"] == expected.record, f"step {step}: {tally}"
            result = expected
        else:
            result = backend.transition("openai", op, TINY, worker, open_for=open_for, tally=tally)
            expected = transition(
                model, op, TINY, result.now, worker, open_for=open_for, tally=tally
            )
            assert result == expected, f"step {step}: {op} {tally} from {model}"
        model = expected.record
        stored = redis_store.raw.get(redis_store.key("openai"))
        if stored is not None:  # absent until the first change
            assert stored == model.to_json().encode(), f"step {step}: stored bytes"
        seen_events.add(result.event)
        reasons.add(model.opened_because)
        if op is Op.ACQUIRE:
            granted += result.granted
            denied += not result.granted
        if step % 50 == 0:
            assert backend.load(["openai"]).records["openai"] == model
        redis_store.advance(rng.choice(STEPS_MS) / 1000)
    # The sequence really exercised the machine: every event and every reason to open.
    assert seen_events >= {None, *EventType}
    assert {r.value for r in reasons} >= {
        "",
        "failure_rate",
        "consecutive_failures",
        "slow_calls",
        "probe_failed",
        "retry_after",
    }
    assert granted and denied


def test_stored_record_is_exactly_to_json(redis_store: Store) -> None:
    backend, p = redis_store.backend(), policy(failure_threshold=2)
    steps: list[tuple[Op, dict[str, Any]]] = [
        (Op.FAILURE, {}),
        (Op.FAILURE, {}),
        (Op.TRIP, {"open_for": 100}),
        (Op.TRIP, {"open_for": 12_345}),
        (Op.RESET, {}),
    ]
    for op, kwargs in steps:
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
    tally = Tally(3, 1, 12)
    pubsub = redis_store.raw.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(redis_store.config.channel)
        pubsub.get_message(timeout=1)  # the subscribe confirmation
        results = [backend.transition("openai", Op.FAILURE, p, "w-1")]
        results.append(backend.transition("openai", Op.FAILURE, p, 'w-"quoted"/ü', tally=tally))
        redis_store.advance(0.06)
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
            for _ in range(30):
                message = pubsub.get_message(timeout=1)
                if message is not None:
                    break
            assert message is not None
            assert result.event is not None
            expected = encode_event(
                SyncEvent(
                    result.event,
                    "openai",
                    result.record.updated_by,
                    result.now,
                    result.record,
                    redis_store.config.key_prefix,
                )
            )
            assert message["data"] == expected.encode()  # byte for byte
    finally:
        pubsub.close()


# Raw JSON values of one field and whether Python's from_json accepts them. Lua has one
# number type, so an integral 7.0 is a fine count on both sides; cjson alone would also take
# hex, nan, inf, +7, 07 and 5., which Python's json rejects, so breaker.lua checks the text.
FIELD_CASES = [
    ("run", "7", True),
    ("run", "-2", False),
    ("run", "7.0", True),
    ("run", "1e3", True),
    ("run", "1.5", False),
    ("run", "9007199254740992", False),
    ("run", '"7"', False),
    ("run", "+7", False),
    ("run", "07", False),
    ("run", "true", False),
    ("run", "null", False),
    ("run", "[7]", False),
    ("opened_at", "1e3", True),
    ("opened_at", "2.5", False),
    ("opened_at", "-0", True),
    ("opened_at", "1E-3", False),
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
    ("opened_because", '"failure_rate"', True),
    ("opened_because", '"bored"', False),
    ("buckets", "[]", True),
    ("buckets", "[[1, 2, 3, 4], [5, 6, 7, 8]]", True),
    ("buckets", "[[1, 2, 3]]", False),
    ("buckets", "[[1, 2, 3, 4, 5]]", False),
    ("buckets", "[[1, 2, -3, 4]]", False),
    ("buckets", '[[1, 2, 3, "4"]]', False),
    ("buckets", "[1, 2, 3, 4]", False),
    ("buckets", '{"a": 1}', False),
    ("buckets", "[" + ",".join(["[1,1,1,1]"] * 65) + "]", False),
    ("updated_by", '"anything at all"', True),
    ("updated_by", '"\\u00fc \\n \\"quoted\\""', True),
    ("updated_by", '"' + "x" * 801 + '"', False),
    ("updated_by", "5", False),
    ("updated_by", '["x"]', False),
    ("colour", '{"deep": [1, 2.5, "x", null, true]}', True),
    ("colour", "0x10", False),  # not JSON at all, whichever field it is in
]


@pytest.mark.parametrize(("field", "raw", "valid"), FIELD_CASES)
def test_lua_and_python_agree_on_what_is_garbage(
    redis_store: Store, field: str, raw: str, valid: bool
) -> None:
    assert_agree(redis_store, f'{{"schema": 2, "run": 1, "{field}": {raw}}}', valid)


# Whole stored strings: schema 2, a newer schema, and flexiai 0.1's records (no schema).
DOCUMENT_CASES = [
    ('{"schema": 2}', True),
    ('{"schema": 3, "state": "OPEN", "anything": {"new": 1}}', True),
    ('{"schema": 3, "state": "SIDEWAYS"}', False),
    ('{"schema": 1}', False),
    ('{"schema": "2"}', False),
    ('{"failures": 2, "opened_at": 1764180000.5, "window_started_at": -1}', False),
    ('{"failures": 2, "opened_at": 1764180000.0005}', True),
    ('{"failures": 2, "opened_at": 1e308}', False),  # 1e308 s is inf ms: no OverflowError
    ('{"schema": 2, "open_until": 1e308}', False),
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


# A record's version against the last one this worker read (K): how far ahead it may be.
K = 1_000
VERSION_CASES = [
    (K, True),
    (K - 900, True),  # behind: the store went backwards, which is adopted
    (0, True),
    (K + MAX_VERSION_STEP, True),
    (K + MAX_VERSION_STEP + 1, False),
    (2**53 - 1, False),
]


@pytest.mark.parametrize(("version", "valid"), VERSION_CASES)
def test_lua_and_python_agree_on_version_jumps(
    redis_store: Store, version: int, valid: bool
) -> None:
    """Python checks a record it reads (MGET), breaker.lua one it is about to change; the
    same record is garbage to both or to neither, and garbage is replaced by a fresh one."""
    key = redis_store.key("openai")
    reader, writer = redis_store.backend(), redis_store.backend()
    redis_store.raw.set(key, BreakerRecord(version=K).to_json())
    for backend in (reader, writer):
        assert backend.load(["openai"]).records["openai"].version == K
    record = BreakerRecord(version=version, run=1, updated_by="someone")
    redis_store.raw.set(key, record.to_json())

    assert (reader.load(["openai"]).invalid == ()) is valid  # Python's verdict
    before = writer.stats()["invalid_records"]
    result = writer.transition("openai", Op.ACQUIRE, policy(), "w-1")  # breaker.lua's
    assert (writer.stats()["invalid_records"] == before) is valid
    stored = BreakerRecord.from_json(redis_store.raw.get(key))
    assert stored == (record if valid else BreakerRecord())
    assert result.record == stored


def test_the_version_wraps_to_one_instead_of_leaving_the_range(redis_store: Store) -> None:
    key = redis_store.key("openai")
    redis_store.raw.set(key, BreakerRecord(version=2**53 - 1).to_json())
    backend = redis_store.backend()
    result = backend.transition("openai", Op.FAILURE, policy(), "w-1")
    expected = transition(BreakerRecord(version=2**53 - 1), Op.FAILURE, policy(), result.now, "w-1")
    assert result == expected
    assert result.record.version == 1
    assert redis_store.raw.get(key) == expected.record.to_json().encode()
    # Every reader takes the wrapped record: it went backwards, which is adopted.
    assert backend.load(["openai"]).invalid == ()
    assert redis_store.backend().load(["openai"]).records["openai"].version == 1


def test_fcall_runs_the_same_code_as_evalsha(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    """Redis Functions wrap breaker.lua itself (one source): the same random operations
    give the same records, flags and events through FCALL as through EVALSHA."""
    clock = [1_764_180_000_000]
    backends = {
        functions: make_backend(
            sync_config_for(
                redis_server, key_prefix=f"p{functions}", redis_use_functions=functions
            ),
            store_clock=lambda: clock[0],
        )
        for functions in (False, True)
    }
    rng = random.Random(7)
    for step in range(300):
        op = rng.choice(OPS)
        open_for = rng.choice(OPEN_FOR) if op is Op.TRIP else None
        tally = random_tally(rng) if op in (Op.FAILURE, Op.REPORT) else NO_TALLY
        if op is Op.REPORT:
            reports = [backends[f].report({"openai": tally}, TINY, "w") for f in (False, True)]
            assert reports[0] == reports[1], f"step {step}"
        else:
            results = [
                backends[f].transition("openai", op, TINY, "w", open_for=open_for, tally=tally)
                for f in (False, True)
            ]
            assert results[0] == results[1], f"step {step}: {op}"
        clock[0] += rng.choice(STEPS_MS)
    with redis_server.client() as r:
        assert r.get("pFalse:state:openai") == r.get("pTrue:state:openai")
        assert r.function_list()  # it really ran as a function
