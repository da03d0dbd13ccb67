"""A one-minute soak: two fleets of eight worker processes (pub/sub and snapshot) share one
real redis-server that is frozen, killed and restarted, flushed, poisoned and lied to over
its channel, while the primary provider fails 2 % of its calls and the fallback is healthy.

The faults are ``flexiai_dev.fleet.RedisFaults.soak_actions``; the last stretch of the run
is quiet, so that the fleets can be compared with the store at the end. Assertions are on
what was recorded (every request, every call with the caller's breaker view, every change
of a worker's view, what each worker counted) and on the store itself. Nothing here asserts
how fast anything was: a stall is counted (``ResponseMeta.store_failures``, the store
operations a request waited for and saw fail, each costing at most one socket timeout).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from flexiai.circuit_breaker import CircuitState
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
from flexiai.client import FlexiAI
from flexiai_dev.fleet import FleetResult, FleetSpec, RedisFaults, run_fleets
from flexiai_dev.servers import RedisProcess
from tests.fleet.conftest import PROVIDERS, fleet_spec
from tests.support.redis_fixtures import sync_config_for

pytestmark = [pytest.mark.slow, pytest.mark.redis_server]

PRIMARY = "openai"
DURATION = 60.0


@pytest.fixture
def faults(redis_server: RedisProcess) -> Iterator[list[RedisFaults]]:
    made: list[RedisFaults] = []
    yield made
    for fault in made:
        fault.close()


def soak_specs(llm: Any, server: RedisProcess) -> list[FleetSpec]:
    # Breaker settings as shipped except a 10 s failure window, so the end state reflects
    # the quiet tail; 2 % of the primary's calls fail with a transient 500.
    return [
        fleet_spec(
            llm,
            server,
            sync=mode,
            workers=8,
            duration=DURATION,
            rate=5.0,
            failure_window=10.0,
            recovery_timeout=30.0,
            error_rate=0.02,
            reconnect_backoff=0.5,
        )
        for mode in ("pubsub", "snapshot")
    ]


def store_view(
    server: RedisProcess, spec: FleetSpec
) -> tuple[dict[str, CircuitState], tuple[str, ...]]:
    """Every provider's state in the store, and the providers whose key is not valid."""
    backend = RedisSyncBackend(sync_config_for(server, key_prefix=spec.key_prefix))
    try:
        snapshot = backend.load(PROVIDERS)
    finally:
        backend.close()
    return {p: r.state for p, r in snapshot.records.items()}, snapshot.invalid


def left_closed(result: FleetResult) -> list[Any]:
    return [e for e in result.events if e.provider == PRIMARY and e.new != "CLOSED"]


def test_a_minute_of_store_faults_and_lies_fails_no_request_and_never_opens_the_primary(
    llm: Any, redis_server: RedisProcess, faults: list[RedisFaults]
) -> None:
    fleets = soak_specs(llm, redis_server)
    fault = RedisFaults(redis_server, fleets)
    faults.append(fault)

    results = run_fleets(fleets, llm, actions=fault.soak_actions(DURATION))

    # Every kind of fault was played.
    done = Counter(what.split()[0] for _, what in fault.done)
    assert done == {
        "freeze": 2,
        "thaw": 2,
        "kill": 1,
        "restart": 1,
        "flushall": 2,
        "forge": 4,
        "garbage": 3,
        "poison": len(RedisFaults.poison_kinds()) + 1,
    }
    for spec, result in zip(fleets, results, strict=True):
        mode = spec.sync
        records = result.records
        assert len(records) >= spec.workers * DURATION * spec.rate * 0.5, mode  # it ran
        # The fallback was healthy all along: no user request failed.
        assert result.summary().failed_requests == 0, mode
        # No request waited for more than one failed store operation (one socket timeout).
        per_request = Counter(r.store_failures for r in records)
        assert set(per_request) <= {0, 1}, (mode, per_request)
        # The primary was noisy, and 2 % noise never opened it: no worker's view of it
        # ever left CLOSED, whatever was forged on the channel or poisoned in the key.
        failed_primary = sum(1 for _, c in result.calls(PRIMARY) if not c.ok)
        assert failed_primary >= 10, mode
        assert left_closed(result) == [], mode
        assert all(c.state == "CLOSED" for _, c in result.calls(PRIMARY)), mode
        # The breaker state after the run agrees with the key: every worker's last view is
        # the store's, which is a valid record again (the poison was replaced).
        states, invalid = store_view(redis_server, spec)
        assert invalid == (), mode
        assert states == dict.fromkeys(PROVIDERS, CircuitState.CLOSED), mode
        for index, stats in result.worker_stats.items():
            assert stats["views"] == {p: s.value for p, s in states.items()}, (mode, index)
        with FlexiAI(spec.client_config(spec.workers)) as client:
            status = client.get_provider_status()[PRIMARY]
        assert status["opened_because"] is None
        assert status["window_calls"] >= spec.minimum_calls, mode  # the tail was counted
        assert (status["failure_rate"] or 0.0) < spec.failure_rate_threshold
        # Garbage was noticed and counted, not believed.
        counted = Counter[str]()
        for stats in result.worker_stats.values():
            counted.update(stats["store"])
        assert counted["invalid_records"] >= 1, mode
        if mode == "pubsub":
            # each worker dropped the garbage events (11 kinds, three times)
            assert all(s["store"]["malformed_events"] >= 11 for s in result.worker_stats.values())
    # The frozen server cost someone a timeout: the count does see stalls.
    assert any(r.store_failures for result in results for r in result.records)
