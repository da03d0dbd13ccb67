"""One contract, three stores: the memory store, Redis over fakeredis, a real redis-server.

Each scenario runs against every store (``store`` fixture); scenarios about garbage in a
key run against the two Redis stores (``redis_store``). Every store runs on a fake clock
(breaker.lua takes it as its ``now``), so recovery and the sliding window need no sleeps.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from typing import Any

import pytest

from flexiai.circuit_breaker._machine import EventType, Op, Tally, transition
from flexiai.circuit_breaker._record import BreakerRecord, CircuitState, OpenReason
from flexiai.circuit_breaker._wire import SyncEvent
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
from flexiai.models import SyncConfig
from tests.circuit_breaker.conftest import Store, policy, wait_until

W1, W2 = "worker-1", "worker-2"


def successes(count: int, *, ago: int = 0, slow: int = 0) -> Tally:
    return Tally(successes=count, slow=slow, last_success_age=ago)


# -- a run of consecutive failures -----------------------------------------------------------


def test_a_run_of_failures_opens_after_exactly_failure_threshold(store: Store) -> None:
    backend, p = store.backend(), policy(failure_threshold=4)
    results = [backend.transition("openai", Op.FAILURE, p, W1) for _ in range(4)]
    assert [r.event for r in results] == [EventType.FAILURE] * 3 + [EventType.OPENED]
    assert [r.record.run for r in results[:3]] == [1, 2, 3]
    assert all(r.record.state is CircuitState.CLOSED for r in results[:3])
    opened = results[-1].record
    assert opened.state is CircuitState.OPEN
    assert opened.opened_because is OpenReason.CONSECUTIVE_FAILURES
    assert opened.version == 4
    assert opened.opened_at == results[-1].now == store.now()
    assert opened.open_until == opened.opened_at + p.recovery_timeout
    assert (opened.run, opened.buckets) == (0, ())
    # A failure that started before the breaker opened changes nothing.
    late = backend.transition("openai", Op.FAILURE, p, W2)
    assert not late.changed and late.event is None and late.record == opened


def test_a_success_after_the_run_began_breaks_it_however_late_it_arrives(store: Store) -> None:
    backend, p = store.backend(), policy(failure_threshold=3, minimum_calls=1000)
    backend.transition("openai", Op.FAILURE, p, W1)  # the run begins
    store.advance(1.0)
    backend.transition("openai", Op.FAILURE, p, W1)
    store.advance(1.0)
    # Worker 2's success happened 0.5 s ago: after the run's first failure, 2 s ago.
    broken = backend.report({"openai": successes(1, ago=500)}, p, W2).records["openai"]
    assert broken.run == 0
    third = backend.transition("openai", Op.FAILURE, p, W1)
    assert third.record.state is CircuitState.CLOSED and third.record.run == 1


def test_a_success_before_the_run_began_does_not_break_it(store: Store) -> None:
    backend, p = store.backend(), policy(failure_threshold=3, minimum_calls=1000)
    store.advance(1.0)
    backend.transition("openai", Op.FAILURE, p, W1)
    store.advance(1.0)
    # Worker 2's success happened 1.5 s ago, before the run began 1 s ago: it arrives late.
    kept = backend.report({"openai": successes(1, ago=1500)}, p, W2).records["openai"]
    assert kept.run == 1
    # The same holds for a success carried by a failure.
    second = backend.transition("openai", Op.FAILURE, p, W2, tally=successes(2, ago=1600))
    assert second.record.run == 2
    third = backend.transition("openai", Op.FAILURE, p, W1)
    assert third.event is EventType.OPENED
    assert third.record.opened_because is OpenReason.CONSECUTIVE_FAILURES


def test_a_failure_carrying_its_own_later_success_starts_a_new_run(store: Store) -> None:
    backend, p = store.backend(), policy(failure_threshold=3, minimum_calls=1000)
    backend.transition("openai", Op.FAILURE, p, W1)
    backend.transition("openai", Op.FAILURE, p, W1)
    store.advance(1.0)
    result = backend.transition("openai", Op.FAILURE, p, W2, tally=successes(5, ago=100))
    assert result.record.state is CircuitState.CLOSED
    assert (result.record.run, result.record.run_started_at) == (1, store.now())


# -- the failure rate over a sliding window ---------------------------------------------------


def test_the_rate_needs_minimum_calls_and_opens_exactly_at_the_threshold(store: Store) -> None:
    backend = store.backend()
    p = policy(failure_threshold=1000, minimum_calls=10, failure_rate_threshold=50.0)
    backend.report({"openai": successes(5)}, p, W1)
    results = [backend.transition("openai", Op.FAILURE, p, W2) for _ in range(5)]
    # 9 calls (minimum_calls - 1), 4 failures: no rate yet, whatever it is.
    assert results[3].record.state is CircuitState.CLOSED
    assert results[3].record.window(store.now(), p.failure_window).calls == 9
    # 10 calls, 5 failures: exactly 50 %.
    assert results[4].event is EventType.OPENED
    assert results[4].record.opened_because is OpenReason.FAILURE_RATE


def test_a_rate_below_the_threshold_never_opens(store: Store) -> None:
    backend = store.backend()
    p = policy(failure_threshold=1000, minimum_calls=10, failure_rate_threshold=50.0)
    for _ in range(20):
        backend.report({"openai": successes(3)}, p, W1)
        result = backend.transition("openai", Op.FAILURE, p, W2)  # 25 % fail
        assert result.record.state is CircuitState.CLOSED
        store.advance(0.5)
    counts = result.record.window(store.now(), p.failure_window)
    assert (counts.calls, counts.failures) == (80, 20)


def test_the_window_slides_rather_than_tumbles(store: Store) -> None:
    backend = store.backend()
    p = policy(failure_threshold=1000, minimum_calls=10, failure_window=10.0)
    backend.report({"openai": successes(10)}, p, W1)
    store.advance(5.0)
    for _ in range(9):
        result = backend.transition("openai", Op.FAILURE, p, W2)
    assert result.record.state is CircuitState.CLOSED  # 9 of 19 calls
    store.advance(5.5)  # the successes' bucket leaves the window; the failures' stays
    counts = result.record.window(store.now(), p.failure_window)
    assert (counts.calls, counts.failures) == (9, 9)
    opened = backend.transition("openai", Op.FAILURE, p, W2)
    assert opened.event is EventType.OPENED  # 10 of 10: a tumbling window would hold 1
    assert opened.record.opened_because is OpenReason.FAILURE_RATE


def test_a_window_holds_at_most_ten_buckets(store: Store) -> None:
    backend = store.backend()
    p = policy(minimum_calls=1_000_000, failure_window=10.0)
    for _ in range(30):
        record = backend.report({"openai": successes(1)}, p, W1).records["openai"]
        store.advance(0.4)
    assert len(record.buckets) <= 10
    assert record.window(store.now(), p.failure_window).calls <= 26


def test_slow_calls_open_the_breaker_only_when_enabled(store: Store) -> None:
    backend = store.backend()
    off = policy(minimum_calls=4)
    on = policy(minimum_calls=4, slow_call_duration=2.0, slow_call_rate_threshold=50.0)
    quiet = backend.report({"openai": successes(4, slow=4)}, off, W1).records["openai"]
    assert quiet.state is CircuitState.CLOSED
    backend.report({"anthropic": successes(3, slow=1)}, on, W1)
    opened = backend.report({"anthropic": successes(1, slow=1)}, on, W1).records["anthropic"]
    assert opened.state is CircuitState.OPEN
    assert opened.opened_because is OpenReason.SLOW_CALLS


def test_counts_while_open_are_dropped_and_closing_starts_an_empty_window(store: Store) -> None:
    backend, p = store.backend(), policy(failure_threshold=1)
    backend.report({"openai": successes(7)}, p, W1)
    opened = backend.transition("openai", Op.FAILURE, p, W1).record
    late = backend.report({"openai": successes(3)}, p, W2).records["openai"]
    assert late == opened
    store.advance(0.25)
    assert backend.transition("openai", Op.ACQUIRE, p, W1).granted
    closed = backend.transition("openai", Op.SUCCESS, p, W1).record
    assert closed.state is CircuitState.CLOSED
    assert (closed.run, closed.buckets) == (0, ())


def test_concurrent_reports_lose_no_count(store: Store) -> None:
    p = policy(minimum_calls=1_000_000)
    backends = [store.backend() for _ in range(8)]

    def report(index: int) -> None:
        for _ in range(25):
            backends[index].report({"openai": successes(1), "anthropic": successes(2)}, p, W1)

    threads = [threading.Thread(target=report, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = backends[0].load(["openai", "anthropic"]).records
    assert records["openai"].window(store.now(), p.failure_window).calls == 200
    assert records["anthropic"].window(store.now(), p.failure_window).calls == 400


def test_a_report_reads_the_providers_it_is_asked_to(store: Store) -> None:
    backend, p = store.backend(), policy()
    tripped = backend.transition("gemini", Op.TRIP, p, W1).record
    snapshot = backend.report({"openai": successes(2)}, p, W2, read=["gemini", "never-used"])
    assert set(snapshot.records) == {"openai", "gemini", "never-used"}
    assert snapshot.records["gemini"] == tripped
    assert snapshot.records["never-used"] == BreakerRecord()
    assert snapshot.records["openai"].window(store.now(), p.failure_window).calls == 2
    assert snapshot.now == store.now()


# -- recovery ---------------------------------------------------------------------------------


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
    assert again.record.probe_lease_until == again.now + 200


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


def test_a_probe_success_while_closed_changes_nothing(store: Store) -> None:
    backend = store.backend()
    backend.transition("openai", Op.FAILURE, policy(), W1)
    result = backend.transition("openai", Op.SUCCESS, policy(), W1)
    assert not result.changed and result.event is None and result.record.run == 1


def test_a_failed_probe_reopens_the_breaker(store: Store) -> None:
    backend, p = store.backend(), policy(failure_threshold=1)
    first = backend.transition("openai", Op.FAILURE, p, W1)
    store.advance(0.25)
    backend.transition("openai", Op.ACQUIRE, p, W1)
    reopened = backend.transition("openai", Op.FAILURE, p, W1)
    assert reopened.event is EventType.OPENED
    assert reopened.record.state is CircuitState.OPEN
    assert reopened.record.opened_because is OpenReason.PROBE_FAILED
    assert reopened.record.opened_at > first.record.opened_at
    assert reopened.record.open_until == reopened.now + p.recovery_timeout
    assert reopened.record.probes_in_flight == 0
    assert not backend.transition("openai", Op.ACQUIRE, p, W2).granted


def test_trip_opens_for_retry_after_capped_by_max_open_for(store: Store) -> None:
    backend, p = store.backend(), policy(max_open_for=30.0)
    tripped = backend.transition("openai", Op.TRIP, p, W1, open_for=5000)
    assert tripped.event is EventType.OPENED
    assert tripped.record.open_until == tripped.now + 5000
    assert tripped.record.opened_because is OpenReason.RETRY_AFTER
    # A shorter Retry-After while already open for longer changes nothing...
    shorter = backend.transition("openai", Op.TRIP, p, W2, open_for=1000)
    assert not shorter.changed and shorter.record == tripped.record
    # ...a longer one extends, up to max_open_for.
    capped = backend.transition("openai", Op.TRIP, p, W2, open_for=1_000_000)
    assert capped.changed
    assert capped.record.open_until == capped.now + 30_000
    assert capped.record.version == tripped.record.version + 1
    # Without a Retry-After, TRIP opens for recovery_timeout.
    other = backend.transition("anthropic", Op.TRIP, p, W1)
    assert other.record.open_until == other.now + p.recovery_timeout


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
    one = writer.transition("openai", Op.FAILURE, p, W1, tally=successes(3, slow=1)).record
    two = writer.transition("anthropic", Op.TRIP, p, W1, open_for=7500).record
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
    event = events.get(timeout=30)
    assert (event.type, event.provider, event.worker_id) == (EventType.FAILURE, "openai", W2)
    assert event.record == result.record and event.timestamp == result.now
    # publish=False stores without announcing; a report that opens nothing announces nothing.
    worker.transition("openai", Op.FAILURE, policy(), W2, publish=False)
    worker.report({"openai": successes(1)}, policy(), W2)
    marker = worker.transition("marker", Op.TRIP, policy(), W2)
    assert events.get(timeout=30).record == marker.record


# -- schemas: rolling upgrades both ways -------------------------------------------------


def test_a_newer_schema_is_honoured_but_never_written(store: Store) -> None:
    if store.raw is None:
        pytest.skip("only a shared store can hold another version's record")
    backend = store.backend()
    opened_at, open_until = store.now(), store.now() + 60_000
    newer = (
        f'{{"schema":3,"state":"OPEN","version":41,"opened_at":{opened_at},'
        f'"open_until":{open_until},"extra":[1]}}'
    )
    store.raw.set(store.key("openai"), newer)
    record = backend.load(["openai"]).records["openai"]
    assert (record.schema, record.state, record.version) == (3, CircuitState.OPEN, 41)
    assert record.open_until == store.now() + 60_000
    for op in (Op.FAILURE, Op.ACQUIRE, Op.TRIP, Op.RESET):
        result = backend.transition("openai", op, policy(), W1)
        assert not result.changed and not result.granted
    backend.report({"openai": successes(4)}, policy(), W1)
    assert store.raw.get(store.key("openai")) == newer.encode()


def test_the_first_schema_is_migrated_not_misread(store: Store) -> None:
    if store.raw is None:
        pytest.skip("only a shared store can hold another version's record")
    backend = store.backend()
    now_s = store.now() / 1000
    store.raw.set(
        store.key("openai"),
        json.dumps(
            {
                "state": "OPEN",
                "failures": 0,
                "window_started_at": 0.0,
                "opened_at": now_s,
                "open_until": now_s + 30.5,
                "version": 9,
                "updated_by": "old-worker",
                "updated_at": now_s,
            }
        ),
    )
    record = backend.load(["openai"]).records["openai"]
    assert (record.state, record.version, record.schema) == (CircuitState.OPEN, 9, 2)
    assert record.open_until == store.now() + 30_500
    store.advance(31)
    probe = backend.transition("openai", Op.ACQUIRE, policy(), W1)
    assert probe.granted and probe.record.state is CircuitState.HALF_OPEN
    assert BreakerRecord.from_json(store.raw.get(store.key("openai"))).schema == 2


# -- garbage in the store (Redis only) -------------------------------------------------


def _set(text: str) -> Callable[[Any, str], object]:
    return lambda raw, key: raw.set(key, text)


@pytest.mark.parametrize(
    ("corrupt", "seen_by_load"),
    [
        pytest.param(_set("garbage"), True, id="not-json"),
        pytest.param(_set('["CLOSED"]'), True, id="json-array"),
        pytest.param(_set('{"schema": 2, "state": "OPEN"'), True, id="truncated"),
        pytest.param(_set('{"schema": 2, "state": "BOGUS"}'), True, id="bad-state"),
        pytest.param(_set('{"schema": 2, "run": "many"}'), True, id="bad-int"),
        pytest.param(_set('{"schema": 2, "open_until": NaN}'), True, id="nan"),
        pytest.param(_set('{"schema": 2, "open_until": 0x10}'), True, id="hex"),
        pytest.param(_set('{"schema": 2, "version": 1.5}'), True, id="float-version"),
        pytest.param(_set('{"schema": 2, "version": -1}'), True, id="negative-version"),
        pytest.param(_set('{"schema": 2, "updated_by": null}'), True, id="null-string"),
        pytest.param(_set('{"schema": 2, "buckets": [[1, 2, 3]]}'), True, id="short-bucket"),
        pytest.param(_set('{"schema": 1}'), True, id="unknown-old-schema"),
        pytest.param(_set('{"schema": 2, "x": "%s"}' % ("y" * 5000)), True, id="over-4kb"),
        # MGET answers nil for a key of another type: it reads as absent (fresh CLOSED) and
        # the first transition finds it, counts it and overwrites it.
        pytest.param(lambda raw, key: raw.rpush(key, "a", "b"), False, id="list"),
        pytest.param(lambda raw, key: raw.hset(key, "state", "OPEN"), False, id="hash"),
    ],
)
def test_garbage_reads_as_fresh_and_a_transition_overwrites_it(
    redis_store: Store, corrupt: Callable[[Any, str], object], seen_by_load: bool
) -> None:
    backend = redis_store.backend()
    corrupt(redis_store.raw, redis_store.key("openai"))
    snapshot = backend.load(["openai", "anthropic"])
    assert snapshot.records["openai"] == BreakerRecord()
    assert snapshot.invalid == (("openai",) if seen_by_load else ())
    counted = 1 if seen_by_load else 0
    assert backend.stats()["invalid_records"] == counted

    result = backend.transition("openai", Op.FAILURE, policy(), W1)
    assert result.changed and result.record.run == 1 and result.record.version == 1
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


def test_fields_this_schema_does_not_know_are_ignored_and_dropped(redis_store: Store) -> None:
    backend = redis_store.backend()
    key = redis_store.key("openai")
    redis_store.raw.set(key, '{"schema": 2, "run": 2, "colour": "blue", "n": null}')
    snapshot = backend.load(["openai"])
    assert snapshot.invalid == () and snapshot.records["openai"] == BreakerRecord(run=2)
    result = backend.transition("openai", Op.FAILURE, policy(), W1)
    expected = transition(BreakerRecord(run=2), Op.FAILURE, policy(), result.now, W1)
    assert result == expected
    assert redis_store.raw.get(key) == result.record.to_json().encode()


def test_a_supplied_client_that_decodes_responses_works_too() -> None:
    import fakeredis

    with fakeredis.FakeRedis(decode_responses=True) as client:
        backend = RedisSyncBackend(SyncConfig(), client=client)
        result = backend.transition("openai", Op.FAILURE, policy(), W1)
        assert backend.load(["openai"]).records["openai"] == result.record
        flushed = backend.report({"openai": successes(2)}, policy(), W1).records["openai"]
        assert flushed.window(flushed.updated_at, policy().failure_window).calls == 3
        client.set("flexiai:state:bad", "x")
        client.hset("flexiai:state:hash", "state", "OPEN")  # MGET reads it as absent
        assert backend.load(["bad"]).invalid == ("bad",)
        assert backend.load(["hash"]).invalid == ()
        assert backend.list_providers() == ["bad", "hash", "openai"]
        backend.close()


# -- absurd values written by a careless or hostile neighbour (issue 11, finding 3) ---------


def test_no_record_keeps_a_provider_out_longer_than_the_policy_opens_for(
    redis_store: Store,
) -> None:
    backend, p = redis_store.backend(), policy(recovery_timeout=5.0, max_open_for=30.0)
    now = redis_store.now()
    forged = BreakerRecord(state=CircuitState.OPEN, version=7, opened_at=now, open_until=2**53 - 1)
    redis_store.raw.set(redis_store.key("openai"), forged.to_json())
    assert not backend.transition("openai", Op.ACQUIRE, p, W1).granted
    redis_store.advance(30.0)  # the longest this policy ever opens for
    probe = backend.transition("openai", Op.ACQUIRE, p, W1)
    assert probe.granted and probe.record.state is CircuitState.HALF_OPEN


def test_a_probe_lease_written_far_ahead_lapses_one_lease_after_the_write(
    redis_store: Store,
) -> None:
    backend, p = redis_store.backend(), policy(probe_lease_ttl=2.0)
    now = redis_store.now()
    forged = BreakerRecord(
        state=CircuitState.HALF_OPEN,
        version=3,
        probes_in_flight=1000,
        probe_lease_until=2**53 - 1,
        updated_at=now,
    )
    redis_store.raw.set(redis_store.key("openai"), forged.to_json())
    assert not backend.transition("openai", Op.ACQUIRE, p, W1).granted
    redis_store.advance(2.0)
    assert backend.transition("openai", Op.ACQUIRE, p, W1).granted


def test_an_opened_at_in_the_future_counts_as_now(redis_store: Store) -> None:
    backend, p = redis_store.backend(), policy(recovery_timeout=5.0, max_open_for=10.0)
    forged = BreakerRecord(
        state=CircuitState.OPEN, version=1, opened_at=2**52, open_until=2**52 + 1
    )
    redis_store.raw.set(redis_store.key("openai"), forged.to_json())
    redis_store.advance(10.0)
    assert backend.transition("openai", Op.ACQUIRE, p, W1).granted
