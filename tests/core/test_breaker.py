"""The breaker's states and transitions, driven by a fake clock over the memory store."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from flexiai.circuit_breaker import CircuitBreaker, CircuitState, Op, Policy, StateSyncManager
from flexiai.circuit_breaker._machine import admission, transition
from flexiai.circuit_breaker._record import BreakerRecord
from flexiai.circuit_breaker.stores.base import StoreSnapshot
from flexiai.circuit_breaker.stores.memory import MemorySyncBackend
from flexiai.exceptions import InvalidRequestError, ProviderServerError
from flexiai.models import CircuitBreakerConfig
from flexiai.testing.clock import FakeClock


def server_error() -> ProviderServerError:
    return ProviderServerError("boom", provider="p", status_code=503)


def make_breaker(
    clock: FakeClock, manager: StateSyncManager | None = None, **config: object
) -> CircuitBreaker:
    manager = manager or StateSyncManager(MemorySyncBackend(clock=clock), clock=clock)
    breaker = CircuitBreaker("p", CircuitBreakerConfig(**config), manager, clock)
    manager.attach([breaker])
    return breaker


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = breaker.allow()
        assert permit is not None
        breaker.record_failure(permit, server_error())


def test_default_config_trips_after_five_provider_errors() -> None:
    """Regression: the origin's default breaker counted exception names nothing raised."""
    clock = FakeClock()
    breaker = make_breaker(clock)
    fail(breaker, 4)
    assert breaker.state is CircuitState.CLOSED
    fail(breaker, 1)
    # fail() changed the state: mypy keeps the narrowing from the assert above.
    assert breaker.state is CircuitState.OPEN  # type: ignore[comparison-overlap]
    assert breaker.allow() is None  # type: ignore[unreachable]  # (same narrowing)


def test_a_success_between_failures_breaks_the_run() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=3, minimum_calls=1000)
    fail(breaker, 2)
    clock.advance(1)
    permit = breaker.allow()
    assert permit is not None
    breaker.record_success(permit)
    clock.advance(1)
    fail(breaker, 2)  # the success travels with the first of these and breaks the run
    assert breaker.state is CircuitState.CLOSED
    assert breaker.record.run == 2
    fail(breaker, 1)
    assert breaker.state is CircuitState.OPEN  # type: ignore[comparison-overlap]  # fail() changed it


def test_invalid_requests_do_not_count_toward_the_breaker() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1)
    permit = breaker.allow()
    assert permit is not None
    counted = breaker.record_failure(
        permit, InvalidRequestError("bad", provider="p", status_code=400)
    )
    assert counted is False
    assert breaker.state is CircuitState.CLOSED


def test_open_breaker_goes_half_open_by_itself_after_recovery_timeout() -> None:
    """Regression: the origin filtered open providers before checking recovery, so an open
    breaker never went half-open again and failback needed a restart."""
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=30)
    fail(breaker)
    clock.advance(29.9)
    assert breaker.allow() is None
    clock.advance(0.2)
    permit = breaker.allow()
    assert permit is not None and permit.probe
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.record_success(permit)
    assert breaker.state is CircuitState.CLOSED  # type: ignore[comparison-overlap]  # record_success changed it


def test_a_failed_probe_reopens_and_restarts_the_recovery_timeout() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=30)
    fail(breaker)
    clock.advance(31)
    permit = breaker.allow()
    assert permit is not None and permit.probe
    breaker.record_failure(permit, server_error())
    assert breaker.state is CircuitState.OPEN
    clock.advance(29)
    assert breaker.allow() is None
    clock.advance(2)
    assert breaker.allow() is not None


def test_success_threshold_needs_that_many_probe_successes() -> None:
    clock = FakeClock()
    breaker = make_breaker(
        clock, failure_threshold=1, recovery_timeout=5, success_threshold=2, half_open_max_calls=1
    )
    fail(breaker)
    clock.advance(6)
    first = breaker.allow()
    assert first is not None and first.probe
    breaker.record_success(first)
    assert breaker.state is CircuitState.HALF_OPEN
    second = breaker.allow()
    assert second is not None and second.probe
    breaker.record_success(second)
    assert breaker.state is CircuitState.CLOSED  # type: ignore[comparison-overlap]  # record_success changed it


def test_half_open_admits_at_most_max_calls_in_flight_from_many_threads() -> None:
    """Regression: the origin limited successes, not calls in flight; five probes got in."""
    clock = FakeClock()
    manager = StateSyncManager(MemorySyncBackend(clock=clock), clock=clock)
    breakers = [
        CircuitBreaker(
            "p",
            CircuitBreakerConfig(failure_threshold=1, recovery_timeout=5, half_open_max_calls=2),
            manager,
            clock,
        )
        for _ in range(8)
    ]
    fail(breakers[0])
    for b in breakers[1:]:
        b.apply_snapshot(breakers[0].record)
    clock.advance(6)
    barrier = threading.Barrier(len(breakers))
    permits: list[object] = []

    def probe(b: CircuitBreaker) -> None:
        barrier.wait()
        permit = b.allow()
        if permit is not None:
            permits.append(permit)

    threads = [threading.Thread(target=probe, args=(b,)) for b in breakers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(permits) == 2


def test_a_probe_that_never_reports_back_releases_its_lease() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=5, probe_lease_ttl=10)
    fail(breaker)
    clock.advance(6)
    assert breaker.allow() is not None  # the probe that dies
    assert breaker.allow() is None
    clock.advance(10)
    permit = breaker.allow()
    assert permit is not None and permit.probe


def test_trip_opens_for_the_retry_after_and_is_capped() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, max_open_for=100)
    breaker.trip(20)
    assert breaker.state is CircuitState.OPEN
    assert breaker.seconds_until_probe() == pytest.approx(20)
    breaker.trip(5)  # a shorter request does not shorten an open breaker
    assert breaker.seconds_until_probe() == pytest.approx(20)
    breaker.trip(10_000)
    assert breaker.seconds_until_probe() == pytest.approx(100)


def test_reset_closes_and_bumps_the_version() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=1)
    fail(breaker)
    version = breaker.record.version
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.record.version == version + 1


def test_success_while_closed_writes_nothing() -> None:
    policy = Policy.from_config(CircuitBreakerConfig())
    result = transition(BreakerRecord(), Op.SUCCESS, policy, 100, "w")
    assert result.changed is False
    assert result.event is None


def test_admission_compares_times_on_the_store_clock() -> None:
    """A worker whose clock is an hour behind still sees recovery at the store's time."""
    local, store_clock = FakeClock(start=1_000.0), FakeClock(start=1_000.0 + 3600)
    manager = StateSyncManager(MemorySyncBackend(clock=store_clock), clock=local)
    breaker = make_breaker(local, manager, failure_threshold=1, recovery_timeout=10)
    store_now = int(store_clock.now() * 1000)
    opened = BreakerRecord(
        state=CircuitState.OPEN, opened_at=store_now, open_until=store_now + 10_000, version=3
    )
    breaker.apply_snapshot(opened)
    assert admission(breaker.record, breaker.policy, breaker.store_now()) == "skip"
    store_clock.advance(10)
    assert admission(breaker.record, breaker.policy, breaker.store_now()) == "probe"


def test_a_failing_state_change_hook_never_breaks_a_call() -> None:
    clock = FakeClock()
    manager = StateSyncManager(MemorySyncBackend(clock=clock), clock=clock)

    def hook(_: object) -> None:
        raise RuntimeError("listener bug")

    breaker = CircuitBreaker(
        "p", CircuitBreakerConfig(failure_threshold=1), manager, clock, on_change=hook
    )
    fail(breaker)
    assert breaker.state is CircuitState.OPEN


def test_a_success_that_breaks_a_run_one_failure_short_is_reported_at_once() -> None:
    """Counts normally wait for the next periodic report; a success that keeps the fleet's
    breaker from opening on a run does not, or a healthy provider would be opened by
    failures on other workers before the success arrived."""
    clock = FakeClock()
    config = CircuitBreakerConfig(failure_threshold=3, minimum_calls=1000)

    def worker() -> tuple[StateSyncManager, CircuitBreaker]:
        manager = StateSyncManager(
            MemorySyncBackend("hurry", clock=clock),
            mode="snapshot",
            snapshot_max_age=60,
            flush_interval=60,
            clock=clock,
        )
        breaker = CircuitBreaker("p", config, manager, clock)
        manager.attach([breaker])
        return manager, breaker

    (first, failing), (second, healthy) = worker(), worker()
    first.before_request()
    fail(failing, 2)
    clock.advance(0.5)
    second.before_request()  # reads the run: 2 failures in a row, one short
    assert healthy.record.run == 2
    permit = healthy.allow()
    assert permit is not None
    healthy.record_success(permit)
    second.before_request()  # not due for 60 s, but hurried
    fail(failing, 1)
    assert failing.state is CircuitState.CLOSED
    assert failing.record.run == 1


def test_an_ordinary_success_waits_for_the_periodic_report() -> None:
    clock = FakeClock()
    backend = MemorySyncBackend("patient", clock=clock)
    manager = StateSyncManager(
        backend, mode="snapshot", snapshot_max_age=60, flush_interval=60, clock=clock
    )
    breaker = make_breaker(clock, manager, failure_threshold=3)
    manager.before_request()
    permit = breaker.allow()
    assert permit is not None
    breaker.record_success(permit)
    manager.before_request()
    assert backend.load(["p"]).records["p"].buckets == ()  # nothing written yet
    clock.advance(61)
    manager.before_request()
    assert backend.load(["p"]).records["p"].window(int(clock.now() * 1000), 60_000).calls == 1


def test_a_snapshots_age_counts_from_when_its_read_was_sent() -> None:
    """A slow answer may hold the store as it was when the read arrived, any time after it
    was sent: counting the age from the answer would let a view grow older than
    ``snapshot_max_age``."""
    clock = FakeClock()

    class SlowStore(MemorySyncBackend):
        loads = 0

        def load(self, providers: Sequence[str]) -> StoreSnapshot:
            snapshot = super().load(providers)
            self.loads += 1
            clock.advance(0.8)  # the answer arrives 0.8 s after the store was read
            return snapshot

    store = SlowStore("slow", clock=clock)
    manager = StateSyncManager(
        store, mode="snapshot", snapshot_max_age=1.0, flush_interval=60, clock=clock
    )
    make_breaker(clock, manager)
    manager.before_request()
    clock.advance(0.3)  # 1.1 s since the read was sent, 0.3 s since the answer came
    manager.before_request()
    assert store.loads == 2
