"""One contract, three stores: the memory store, Redis over fakeredis, a real redis-server.

Each scenario runs against every store (``store`` fixture); scenarios about garbage in a
key run against the two Redis stores (``redis_store``). The Redis stores use the server's
clock, so recovery scenarios wait a fraction of a second of real time.
"""

from __future__ import annotations

import json
import queue

import pytest

from flexiai.circuit_breaker._machine import EventType, Op, transition
from flexiai.circuit_breaker._record import BreakerRecord, CircuitState
from flexiai.models import SyncConfig
from flexiai.sync.backends.redis import RedisSyncBackend
from flexiai.sync.events import SyncEvent
from tests.sync.conftest import Store, policy, wait_until

W1, W2 = "worker-1", "worker-2"


def test_threshold_opens_after_exactly_n_failures(store: Store) -> None:
    backend, p = store.backend(), policy(failure_threshold=4)
    results = [backend.transition("openai", Op.FAILURE, p, W1) for _ in range(4)]
    assert [r.event for r in results] == [EventType.FAILURE] * 3 + [EventType.OPENED]
    assert [r.record.failures for r in results[:3]] == [1, 2, 3]
    assert all(r.record.state is CircuitState.CLOSED for r in results[:3])
    opened = results[-1].record
    assert opened.state is CircuitState.OPEN
    assert opened.version == 4
    assert opened.opened_at == results[-1].now
    assert opened.open_until == pytest.approx(opened.opened_at + p.recovery_timeout)
    # A failure that started before the breaker opened changes nothing.
    late = backend.transition("openai", Op.FAILURE, p, W2)
    assert not late.changed and late.event is None and late.record == opened


def test_failures_outside_the_window_restart_the_count(store: Store) -> None:
    backend, p = store.backend(), policy(failure_threshold=3, failure_window=0.15)
    backend.transition("openai", Op.FAILURE, p, W1)
    second = backend.transition("openai", Op.FAILURE, p, W2)
    assert second.record.failures == 2
    store.advance(0.2)
    third = backend.transition("openai", Op.FAILURE, p, W1)
    assert third.record.state is CircuitState.CLOSED
    assert third.record.failures == 1
    assert third.record.window_started_at == third.now


def test_open_denies_until_recovery_then_grants_exactly_max_calls(store: Store) -> None:
    backend, p = store.backend(), policy(failure_threshold=1, half_open_max_calls=3)
    backend.transition("openai", Op.FAILURE, p, W1)
    early = backend.transition("openai", Op.ACQUIRE, p, W1)
    assert not early.granted and not early.changed
    store.advance(0.25)
    results = [backend.transition("openai", Op.ACQUIRE, p, W2) for _ in range(5)]
    assert [r.granted for r in results] == [True, True, True, False, False]
    assert results[0].event is EventType.HALF_OPEN
    assert all(r.event is None for r in results[1:])
    assert results[2].record.state is CircuitState.HALF_OPEN
    assert results[2].record.probes_in_flight == 3


def test_closed_breaker_grants_without_writing(store: Store) -> None:
    backend = store.backend()
    result = backend.transition("openai", Op.ACQUIRE, policy(), W1)
    assert result.granted and not result.changed and result.record == BreakerRecord()


def test_an_expired_probe_lease_lets_a_new_probe_in(store: Store) -> None:
    backend, p = store.backend(), policy(failure_threshold=1, probe_lease_ttl=0.2)
    backend.transition("openai", Op.FAILURE, p, W1)
    store.advance(0.25)
    assert backend.transition("openai", Op.ACQUIRE, p, W1).granted
    assert not backend.transition("openai", Op.ACQUIRE, p, W2).granted
    store.advance(0.25)
    again = backend.transition("openai", Op.ACQUIRE, p, W2)
    assert again.granted
    assert again.record.probes_in_flight == 1
    assert again.record.probe_lease_until == pytest.approx(again.now + 0.2)


def test_success_threshold_probes_close_the_breaker(store: Store) -> None:
    backend = store.backend()
    p = policy(failure_threshold=1, half_open_max_calls=2, success_threshold=2)
    backend.transition("openai", Op.FAILURE, p, W1)
    store.advance(0.25)
    assert backend.transition("openai", Op.ACQUIRE, p, W1).granted
    assert backend.transition("openai", Op.ACQUIRE, p, W2).granted
    first = backend.transition("openai", Op.SUCCESS, p, W1)
    assert first.event is EventType.SUCCESS
    assert first.record.state is CircuitState.HALF_OPEN
    assert (first.record.successes, first.record.probes_in_flight) == (1, 1)
    second = backend.transition("openai", Op.SUCCESS, p, W2)
    assert second.event is EventType.CLOSED
    assert second.record == BreakerRecord(
        version=first.record.version + 1, updated_by=W2, updated_at=second.now
    )


def test_a_success_while_closed_changes_nothing(store: Store) -> None:
    backend = store.backend()
    backend.transition("openai", Op.FAILURE, policy(), W1)
    result = backend.transition("openai", Op.SUCCESS, policy(), W1)
    assert not result.changed and result.event is None and result.record.failures == 1


def test_a_failed_probe_reopens_the_breaker(store: Store) -> None:
    backend, p = store.backend(), policy(failure_threshold=1)
    first = backend.transition("openai", Op.FAILURE, p, W1)
    store.advance(0.25)
    backend.transition("openai", Op.ACQUIRE, p, W1)
    reopened = backend.transition("openai", Op.FAILURE, p, W1)
    assert reopened.event is EventType.OPENED
    assert reopened.record.state is CircuitState.OPEN
    assert reopened.record.opened_at > first.record.opened_at
    assert reopened.record.open_until == pytest.approx(reopened.now + p.recovery_timeout)
    assert reopened.record.probes_in_flight == 0
    assert not backend.transition("openai", Op.ACQUIRE, p, W2).granted


def test_trip_opens_for_retry_after_capped_by_max_open_for(store: Store) -> None:
    backend, p = store.backend(), policy(max_open_for=30.0)
    tripped = backend.transition("openai", Op.TRIP, p, W1, open_for=5.0)
    assert tripped.event is EventType.OPENED
    assert tripped.record.open_until == pytest.approx(tripped.now + 5.0)
    # A shorter Retry-After while already open for longer changes nothing...
    shorter = backend.transition("openai", Op.TRIP, p, W2, open_for=1.0)
    assert not shorter.changed and shorter.record == tripped.record
    # ...a longer one extends, up to max_open_for.
    capped = backend.transition("openai", Op.TRIP, p, W2, open_for=1000.0)
    assert capped.changed
    assert capped.record.open_until == pytest.approx(capped.now + 30.0)
    assert capped.record.version == tripped.record.version + 1
    # Without a Retry-After, TRIP opens for recovery_timeout.
    other = backend.transition("anthropic", Op.TRIP, p, W1)
    assert other.record.open_until == pytest.approx(other.now + p.recovery_timeout)


def test_reset_closes_and_bumps_the_version(store: Store) -> None:
    backend, p = store.backend(), policy(failure_threshold=1)
    opened = backend.transition("openai", Op.FAILURE, p, W1)
    reset = backend.transition("openai", Op.RESET, p, "operator")
    assert reset.event is EventType.CLOSED
    assert reset.record == BreakerRecord(
        version=opened.record.version + 1, updated_by="operator", updated_at=reset.now
    )
    assert backend.load(["openai"]).records["openai"] == reset.record
    # Resetting a breaker nobody ever touched has nothing to write.
    untouched = backend.transition("gemini", Op.RESET, p, "operator")
    assert not untouched.changed and untouched.record == BreakerRecord()


def test_records_round_trip_through_load(store: Store) -> None:
    writer, reader = store.backend(), store.backend()
    p = policy(failure_threshold=2)
    one = writer.transition("openai", Op.FAILURE, p, W1).record
    two = writer.transition("anthropic", Op.TRIP, p, W1, open_for=7.5).record
    snapshot = reader.load(["openai", "anthropic", "never-used"])
    assert snapshot.records == {"openai": one, "anthropic": two, "never-used": BreakerRecord()}
    assert snapshot.invalid == ()
    assert snapshot.now >= two.updated_at
    assert reader.load([]).records == {}


def test_another_workers_transition_reaches_a_subscriber(store: Store) -> None:
    listener, worker = store.backend(), store.backend()
    events: queue.Queue[SyncEvent] = queue.Queue()
    connected: list[bool] = []
    listener.subscribe(events.put, lambda: connected.append(True))
    wait_until(lambda: connected, what="on_connect")
    result = worker.transition("openai", Op.FAILURE, policy(), W2)
    event = events.get(timeout=5)
    assert (event.type, event.provider, event.worker_id) == (EventType.FAILURE, "openai", W2)
    assert event.record == result.record and event.timestamp == result.now
    # publish=False stores without announcing.
    worker.transition("openai", Op.FAILURE, policy(), W2, publish=False)
    marker = worker.transition("marker", Op.TRIP, policy(), W2)
    assert events.get(timeout=5).record == marker.record


# -- garbage in the store (Redis only) -------------------------------------------------


def _set(text: str):
    return lambda raw, key: raw.set(key, text)


@pytest.mark.parametrize(
    ("corrupt", "seen_by_load"),
    [
        pytest.param(_set("garbage"), True, id="not-json"),
        pytest.param(_set('["CLOSED"]'), True, id="json-array"),
        pytest.param(_set('{"state": "OPEN"'), True, id="truncated"),
        pytest.param(_set('{"state": "BOGUS"}'), True, id="bad-state"),
        pytest.param(_set('{"failures": "many"}'), True, id="bad-int"),
        pytest.param(_set('{"open_until": NaN}'), True, id="nan"),
        pytest.param(_set('{"open_until": 0x10}'), True, id="hex"),
        pytest.param(_set('{"version": 1.5}'), True, id="float-version"),
        pytest.param(_set('{"updated_by": null}'), True, id="null-string"),
        # MGET answers nil for a key of another type: it reads as absent (fresh CLOSED) and
        # the first transition finds it, counts it and overwrites it.
        pytest.param(lambda raw, key: raw.rpush(key, "a", "b"), False, id="list"),
        pytest.param(lambda raw, key: raw.hset(key, "state", "OPEN"), False, id="hash"),
    ],
)
def test_garbage_reads_as_fresh_and_a_transition_overwrites_it(
    redis_store: Store, corrupt, seen_by_load: bool
) -> None:
    backend = redis_store.backend()
    corrupt(redis_store.raw, redis_store.key("openai"))
    snapshot = backend.load(["openai", "anthropic"])
    assert snapshot.records["openai"] == BreakerRecord()
    assert snapshot.invalid == (("openai",) if seen_by_load else ())
    counted = 1 if seen_by_load else 0
    assert backend.stats()["invalid_records"] == counted

    result = backend.transition("openai", Op.FAILURE, policy(), W1)
    assert result.changed and result.record.failures == 1 and result.record.version == 1
    assert backend.stats()["invalid_records"] == counted + 1
    assert backend.load(["openai"]).invalid == ()
    assert redis_store.raw.get(redis_store.key("openai")) == result.record.to_json().encode()


def test_an_unchanging_op_on_garbage_still_repairs_the_key(redis_store: Store) -> None:
    backend = redis_store.backend()
    redis_store.raw.set(redis_store.key("openai"), "garbage")
    result = backend.transition("openai", Op.SUCCESS, policy(), W1)
    assert not result.changed and result.record == BreakerRecord()
    assert redis_store.raw.get(redis_store.key("openai")) == BreakerRecord().to_json().encode()
    assert redis_store.raw.pttl(redis_store.key("openai")) > 0
    assert backend.load(["openai"]).invalid == ()


def test_unknown_fields_are_ignored_like_from_fields_does(redis_store: Store) -> None:
    backend = redis_store.backend()
    key = redis_store.key("openai")
    redis_store.raw.set(key, '{"failures": 2, "colour": "blue", "shade": 0.5, "n": null}')
    snapshot = backend.load(["openai"])
    assert snapshot.invalid == () and snapshot.records["openai"] == BreakerRecord(failures=2)
    result = backend.transition("openai", Op.FAILURE, policy(), W1)
    expected = transition(BreakerRecord(failures=2), Op.FAILURE, policy(), result.now, W1)
    assert result == expected
    # Kept for whichever version wrote them: a rolling upgrade must not lose them.
    stored = json.loads(redis_store.raw.get(key))
    assert (stored["colour"], stored["shade"], stored["n"]) == ("blue", 0.5, None)
    assert BreakerRecord.from_json(redis_store.raw.get(key)) == result.record


def test_a_supplied_client_that_decodes_responses_works_too() -> None:
    import fakeredis

    with fakeredis.FakeRedis(decode_responses=True) as client:
        backend = RedisSyncBackend(SyncConfig(), client=client)
        result = backend.transition("openai", Op.FAILURE, policy(), W1)
        assert backend.load(["openai"]).records["openai"] == result.record
        client.set("flexiai:state:bad", "x")
        client.hset("flexiai:state:hash", "state", "OPEN")  # MGET reads it as absent
        assert backend.load(["bad"]).invalid == ("bad",)
        assert backend.load(["hash"]).invalid == ()
        assert backend.list_providers() == ["bad", "hash", "openai"]
        backend.close()
