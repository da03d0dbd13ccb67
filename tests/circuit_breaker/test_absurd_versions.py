"""Versions stay in [0, 2**53) and may not jump (issue 11, finding 3): a record at
2**53 - 1 keeps working (the next write wraps to 1), and a negative version or one far
ahead of the last this worker read is garbage: read as CLOSED, replaced by the first
reader, logged once and counted. Real redis-server, real HTTP, both sync modes."""

from __future__ import annotations

import json
import logging
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

KEY = state_key("flexiai", "openai", False)
MODES = ["pubsub", "snapshot"]


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def stored(server: RedisProcess) -> BreakerRecord:
    with server.client() as r:
        return BreakerRecord.from_json(r.get(KEY))


def invalid_records(client: FlexiAI) -> int:
    assert client._sync_manager is not None
    return client._sync_manager.stats()["invalid_records"]


def look_again(client: FlexiAI, server: RedisProcess, mode: str) -> None:
    """Make the worker read the key again: an event (pub/sub) or its next request
    (snapshot mode, with snapshot_max_age=0)."""
    if mode == "pubsub":
        event = {"v": 2, "prefix": "flexiai", "type": "OPENED", "provider": "openai"}
        event.update(worker_id="mallory", ts=1, record=BreakerRecord().to_doc())
        before = invalid_records(client)
        with server.client() as r:
            r.publish("flexiai:events", json.dumps(event))
        # Counted when read, and again when replaced.
        wait_until(lambda: invalid_records(client) >= before + 2, what="the worker to look")


@pytest.mark.parametrize("mode", MODES)
def test_the_last_version_in_range_wraps_to_one_on_the_next_write(
    redis_server: RedisProcess, fake: FakeLLMServer, mode: str
) -> None:
    with redis_server.client() as r:
        r.set(KEY, BreakerRecord(version=2**53 - 1).to_json())
    fake.down("openai")
    with client_for(redis_server, fake, mode=mode, snapshot_max_age=0) as client:
        client.generate("a")
        client.generate("b")  # failure_threshold=2: open for the fleet
        assert stored(redis_server).state is CircuitState.OPEN
        assert stored(redis_server).version == 2  # 2**53 - 1, then 1, then 2
        assert invalid_records(client) == 0
    with client_for(redis_server, fake, mode=mode, snapshot_max_age=0) as newcomer:
        calls = fake.count("openai")
        assert newcomer.generate("c").provider == "anthropic"  # the whole fleet skips it
        assert fake.count("openai") == calls


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", [-5, -(2**53), 2**53, 1e308])
def test_a_version_out_of_range_is_garbage_replaced_by_the_first_reader(
    redis_server: RedisProcess, fake: FakeLLMServer, mode: str, version: float
) -> None:
    now = int(time.time() * 1000)
    with redis_server.client() as r:
        r.set(
            KEY,
            json.dumps(
                {"schema": 2, "state": "OPEN", "version": version, "opened_at": now}
                | {"open_until": now + 10**9}
            ),
        )
    with client_for(redis_server, fake, mode=mode, snapshot_max_age=0) as client:
        assert client.generate("x").provider == "openai"
        counted = invalid_records(client)
        assert counted > 0
        for _ in range(3):
            assert client.generate("x").provider == "openai"
        assert invalid_records(client) == counted  # read once as garbage, replaced, never again
        assert stored(redis_server).state is CircuitState.CLOSED


@pytest.mark.parametrize("mode", MODES)
def test_a_version_that_jumps_ahead_is_garbage_replaced_logged_once_and_counted(
    redis_server: RedisProcess,
    fake: FakeLLMServer,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="flexiai.sync")
    with client_for(redis_server, fake, mode=mode, snapshot_max_age=0) as client:
        assert client.generate("warm up").provider == "openai"
        wait_until(lambda: client.store_health().healthy)
        now = int(time.time() * 1000)
        forged = BreakerRecord(
            state=CircuitState.OPEN, version=2**40, opened_at=now, open_until=now + 10**9
        )
        with redis_server.client() as r:
            r.set(KEY, forged.to_json())  # 2**40 ahead of the version it last read
        look_again(client, redis_server, mode)
        assert client.generate("x").provider == "openai"
        counted = invalid_records(client)
        assert counted > 0
        for _ in range(5):
            assert client.generate("x").provider == "openai"
        assert state_of(client) is CircuitState.CLOSED
        assert stored(redis_server).version < 2**32
        assert invalid_records(client) == counted
        warnings = [r for r in caplog.records if "invalid breaker state" in r.getMessage()]
        assert {r.getMessage().split(" for ")[0] for r in warnings} <= {
            "ignored invalid breaker state",
            "overwrote invalid breaker state",
        }
        assert len(warnings) <= 2  # one discovery: what was read, and what was replaced


def state_of(client: FlexiAI) -> CircuitState:
    return client.get_provider_status()["openai"].state
