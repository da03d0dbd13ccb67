"""The key is the truth; an event only says when to look (issue 11, findings 1, 5 and the
reset): pub/sub workers re-read the store on every event, so a forged event changes
nothing, a store that lost its keys is adopted, and a reset reaches every worker even when
the key already says CLOSED. Real redis-server, real HTTP, real pub/sub."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from flexiai import FlexiAI
from flexiai.circuit_breaker import BreakerRecord, CircuitState
from flexiai.circuit_breaker.stores.redis import state_key
from flexiai.testing import FakeLLMServer
from flexiai_dev.servers import RedisProcess
from tests.circuit_breaker.conftest import wait_until
from tests.circuit_breaker.test_manager import client_for

pytestmark = pytest.mark.redis_server


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def forged(kind: str, record: BreakerRecord, provider: str = "openai") -> str:
    return json.dumps(
        {
            "v": 2,
            "type": kind,
            "provider": provider,
            "worker_id": "mallory",
            "ts": int(time.time() * 1000),
            "record": record.to_doc(),
        }
    )


def state(client: FlexiAI) -> CircuitState:
    return client.get_provider_status()["openai"].state


def settle(client: FlexiAI, redis_server: RedisProcess) -> None:
    """Publish a harmless marker event and wait until the worker has handled it: events are
    handled in order, so everything published before it has been handled too."""
    manager = client._sync_manager
    assert manager is not None
    before = manager.backend.stats().get("malformed_events", 0)
    with redis_server.client() as r:
        r.publish("flexiai:events", "not an event: a marker")
    wait_until(lambda: manager.backend.stats().get("malformed_events", 0) > before)


def test_a_forged_opened_event_does_not_open_a_healthy_provider(
    redis_server: RedisProcess, fake: FakeLLMServer
) -> None:
    with client_for(redis_server, fake, mode="pubsub") as client:
        assert client.generate("warm up").provider == "openai"
        record = BreakerRecord(
            state=CircuitState.OPEN,
            version=10**15,
            opened_at=int(time.time() * 1000),
            open_until=10**15,
        )
        with redis_server.client() as r:
            r.publish("flexiai:events", forged("OPENED", record))
        settle(client, redis_server)
        for _ in range(5):
            assert client.generate("x").provider == "openai"
        assert state(client) is CircuitState.CLOSED


def test_a_forged_closed_event_during_an_outage_does_not_send_traffic_to_it(
    redis_server: RedisProcess, fake: FakeLLMServer
) -> None:
    with client_for(redis_server, fake, mode="pubsub") as client:
        fake.down("openai")
        client.generate("a")
        client.generate("b")  # failure_threshold=2: open for the fleet
        assert state(client) is CircuitState.OPEN
        calls = fake.count("openai")
        with redis_server.client() as r:
            r.publish("flexiai:events", forged("CLOSED", BreakerRecord(version=10**15)))
        settle(client, redis_server)
        for _ in range(5):
            assert client.generate("x").provider == "anthropic"
        assert fake.count("openai") == calls
        assert state(client) is CircuitState.OPEN


def test_a_store_that_lost_its_keys_is_adopted_by_the_periodic_resync(
    redis_server: RedisProcess, fake: FakeLLMServer
) -> None:
    with client_for(redis_server, fake, mode="pubsub", resync_interval=0.2) as client:
        fake.down("openai")
        client.generate("a")
        client.generate("b")
        assert state(client) is CircuitState.OPEN
        fake.up("openai")
        with redis_server.client() as r:
            r.flushall()  # or a failover to a replica that lost the writes
        wait_until(lambda: state(client) is CircuitState.CLOSED, what="resync")
        assert client.generate("x").provider == "openai"


def test_a_reset_reaches_every_worker_even_when_the_key_already_says_closed(
    redis_server: RedisProcess, fake: FakeLLMServer
) -> None:
    with (
        client_for(redis_server, fake, mode="pubsub", resync_interval=3600) as worker,
        client_for(redis_server, fake, mode="pubsub") as operator,
    ):
        fake.down("openai")
        worker.generate("a")
        worker.generate("b")
        assert worker._sync_manager is not None
        assert worker._sync_manager.health().healthy
        fake.up("openai")
        with redis_server.client() as r:
            r.delete(state_key("flexiai", "openai", False))  # the key says CLOSED now
        assert worker.generate("stale").provider == "anthropic"  # its view is still OPEN
        operator.generate("warm up")
        operator.reset_circuit_breakers("openai")  # nothing to write: announced anyway
        wait_until(lambda: worker.generate("x").provider == "openai", what="the reset")


@pytest.mark.parametrize("mode", ["pubsub", "snapshot"])
def test_the_first_reader_of_garbage_replaces_it(
    redis_server: RedisProcess, fake: FakeLLMServer, mode: str
) -> None:
    key = state_key("flexiai", "anthropic", False)
    with redis_server.client() as r:
        r.set(key, '{"schema": 2, "state": "OPEN", "version": "lots"}')
    with client_for(redis_server, fake, mode=mode, snapshot_max_age=0) as client:
        assert client.generate("x").provider == "openai"
        assert client._sync_manager is not None
        counted = client._sync_manager.backend.stats()["invalid_records"]
        with redis_server.client() as r:
            repaired = BreakerRecord.from_json(r.get(key))
        assert repaired.state is CircuitState.CLOSED
        client.generate("y")
        # Read once as garbage (and replaced), then never again.
        assert client._sync_manager.backend.stats()["invalid_records"] == counted
