"""Issue 11's remaining findings as regressions, in both sync modes against a real
redis-server over real HTTP: absurd deadlines (finding 3), a 5 MB record (finding 4), a
FLUSHALL (finding 5) and garbage events (finding 9). Whatever the shared store holds, a
healthy provider is used, garbage is replaced by the first reader and never written back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from flexiai import FlexiAI
from flexiai.circuit_breaker import BreakerRecord, CircuitState
from flexiai.circuit_breaker._record import MAX_RECORD_BYTES
from flexiai.circuit_breaker.stores.redis import state_key
from flexiai.models import CircuitBreakerConfig, FlexiAIConfig, ProviderConfig, RetryConfig
from flexiai.testing import FakeLLMServer
from flexiai_dev.servers import RedisProcess
from tests.circuit_breaker.conftest import wait_until
from tests.circuit_breaker.test_manager import client_for
from tests.support.redis_fixtures import sync_config_for

pytestmark = pytest.mark.redis_server

KEY = state_key("flexiai", "openai", False)
MODES = ["pubsub", "snapshot"]


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def short_client(server: RedisProcess, fake: FakeLLMServer, mode: str) -> FlexiAI:
    """A client whose breaker opens for at most one second, whatever a record says."""
    return FlexiAI(
        FlexiAIConfig(
            providers=[
                ProviderConfig(name=n, api_key="k", model="m", base_url=fake.base_url(n))
                for n in ("openai", "anthropic")
            ],
            sync=sync_config_for(server, mode=mode, snapshot_max_age=0, reconnect_backoff=0.3),
            circuit_breaker=CircuitBreakerConfig(
                failure_threshold=2, recovery_timeout=0.5, max_open_for=1.0
            ),
            retry=RetryConfig(max_retries=0),
        )
    )


def server_ms(server: RedisProcess) -> int:
    with server.client() as r:
        seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def put(server: RedisProcess, value: str | bytes) -> None:
    with server.client() as r:
        r.set(KEY, value)


def stored(server: RedisProcess) -> bytes | None:
    with server.client() as r:
        value: bytes | None = r.get(KEY)
        return value


def stats(client: FlexiAI) -> dict[str, int]:
    assert client._sync_manager is not None
    return client._sync_manager.stats()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("open_until", [2**53 - 1, 10**15], ids=["2**53-1", "10**15"])
def test_a_far_deadline_keeps_a_provider_out_no_longer_than_max_open_for(
    redis_server: RedisProcess, fake: FakeLLMServer, mode: str, open_until: int
) -> None:
    opened_at = server_ms(redis_server) - 2_000  # two max_open_for ago
    record = BreakerRecord(
        state=CircuitState.OPEN, version=3, opened_at=opened_at, open_until=open_until
    )
    put(redis_server, record.to_json())
    with short_client(redis_server, fake, mode) as client:
        assert client.generate("x").provider == "openai"  # the probe, then closed
        assert client.generate("y").provider == "openai"
    assert BreakerRecord.from_json(stored(redis_server) or b"").state is CircuitState.CLOSED


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "raw",
    [
        '{"schema": 2, "state": "OPEN", "opened_at": 1, "open_until": 1e308}',
        '{"schema": 2, "state": "OPEN", "opened_at": -5, "open_until": 99999999999999}',
        '{"failures": 9, "state": "OPEN", "opened_at": 1e308, "open_until": 1e308}',
        '{"schema": 2, "state": "OPEN", "version": 1e308}',
    ],
    ids=["open_until 1e308", "negative time", "0.1 format 1e308", "version 1e308"],
)
def test_an_absurd_value_is_garbage_replaced_by_the_first_reader(
    redis_server: RedisProcess, fake: FakeLLMServer, mode: str, raw: str
) -> None:
    put(redis_server, raw)
    with client_for(redis_server, fake, mode=mode, snapshot_max_age=0) as client:
        assert client.generate("x").provider == "openai"
        assert stats(client)["invalid_records"] > 0
    replaced = BreakerRecord.from_json(stored(redis_server) or b"")
    assert replaced.state is CircuitState.CLOSED
    assert replaced.version < 10  # a fresh record (plus the calls counted since)


@pytest.mark.parametrize("mode", MODES)
def test_a_5_mb_record_is_garbage_replaced_and_never_written_back(
    redis_server: RedisProcess, fake: FakeLLMServer, mode: str
) -> None:
    doc: dict[str, Any] = BreakerRecord(version=4).to_doc()
    doc["padding"] = "x" * 5_000_000  # valid JSON, valid fields, but 5 MB
    put(redis_server, json.dumps(doc))
    with client_for(redis_server, fake, mode=mode, snapshot_max_age=0) as client:
        fake.down("openai")
        client.generate("a")
        client.generate("b")  # failure_threshold=2: opens, written without the padding
        assert client.generate("c").provider == "anthropic"
    value = stored(redis_server)
    assert value is not None and len(value) <= MAX_RECORD_BYTES
    assert BreakerRecord.from_json(value).state is CircuitState.OPEN


@pytest.mark.parametrize("mode", MODES)
def test_after_a_flushall_every_worker_adopts_the_empty_store(
    redis_server: RedisProcess, fake: FakeLLMServer, mode: str
) -> None:
    with client_for(
        redis_server, fake, mode=mode, snapshot_max_age=0, resync_interval=0.2
    ) as client:
        fake.down("openai")
        client.generate("a")
        client.generate("b")
        assert client.get_provider_status()["openai"].state is CircuitState.OPEN
        fake.up("openai")
        with redis_server.client() as r:
            r.flushall()
        wait_until(
            lambda: client.get_provider_status()["openai"].state is CircuitState.CLOSED,
            what="the resync",
        )
        assert client.generate("x").provider == "openai"


GARBAGE_EVENTS: list[bytes] = [
    b"",
    b"not json",
    b"\xff\xfe\xfd",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"v": 2, "prefix": "flexiai", "type": "OPENED"}',
    b'{"v": 99, "prefix": "flexiai", "type": "OPENED", "provider": "openai"}',
    b'{"v": 2, "prefix": "flexiai", "type": "OPENED", "provider": "openai", '
    b'"worker_id": "m", "ts": NaN, "record": {}}',
    b'{"v": 2, "prefix": "flexiai", "type": "OPENED", "provider": "openai", '
    b'"worker_id": "m", "ts": 1, "record": {"state": "MELTED"}}',
    b'{"v": 2, "prefix": "flexiai", "type": "OPENED", "provider": "openai", '
    b'"worker_id": "m", "ts": 1, "record": {"version": ' + b"9" * 5000 + b"}}",
    b"x" * 1_000_000,
]


def test_garbage_events_are_dropped_without_a_read_or_a_change(
    redis_server: RedisProcess, fake: FakeLLMServer
) -> None:
    with client_for(redis_server, fake, mode="pubsub") as client:
        assert client.generate("warm up").provider == "openai"
        wait_until(lambda: client.store_health().healthy)
        before = stats(client)["malformed_events"]
        with redis_server.client() as r:
            for payload in GARBAGE_EVENTS:
                r.publish("flexiai:events", payload)
        wait_until(
            lambda: stats(client)["malformed_events"] == before + len(GARBAGE_EVENTS),
            what="every garbage event to be dropped",
        )
        for _ in range(3):
            assert client.generate("x").provider == "openai"
        assert client.get_provider_status()["openai"].state is CircuitState.CLOSED
        assert stats(client)["handler_errors"] == 0
