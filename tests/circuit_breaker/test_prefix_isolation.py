"""Two apps with different key prefixes on one Redis and one explicit channel (issue 11,
finding 2): each app's events carry its prefix, and the other app drops them unread, so
app B's outage never makes app A skip its healthy provider, nor even read the store again.
Real redis-server, real HTTP, real pub/sub."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis.exceptions

from flexiai import FlexiAI
from flexiai.circuit_breaker import BreakerRecord, CircuitState
from flexiai.testing import FakeLLMServer
from flexiai_dev.servers import RedisProcess
from tests.circuit_breaker.conftest import wait_until
from tests.circuit_breaker.test_manager import client_for

pytestmark = pytest.mark.redis_server

SHARED = "shared:events"


@pytest.fixture
def fake_a() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def fake_b() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


class Monitor:
    """Every command the server runs that names one of ``marker``'s keys (MONITOR), so one
    app's reads can be counted while another app shares the server."""

    def __init__(self, server: RedisProcess, marker: str) -> None:
        self._client = server.client(socket_timeout=0.2)
        self._marker = marker
        self.commands: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Monitor:
        self._monitor: Any = self._client.monitor().__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(redis.exceptions.TimeoutError):  # the poll's timeout
                command = self._monitor.next_command()["command"]
                if self._marker in command:
                    self.commands.append(command.split()[0].upper())

    def count(self, name: str) -> int:
        return self.commands.count(name)


def stats(client: FlexiAI) -> dict[str, int]:
    assert client._sync_manager is not None
    return client._sync_manager.stats()


def state(client: FlexiAI) -> CircuitState:
    return client.get_provider_status()["openai"].state


def test_another_prefixs_opened_event_is_dropped_unread(
    redis_server: RedisProcess, fake_a: FakeLLMServer, fake_b: FakeLLMServer
) -> None:
    # App A never flushes counts during the test, so every command naming its keys is a read.
    quiet = {"resync_interval": 3600, "flush_interval": 60}
    with (
        Monitor(redis_server, "app-a:") as monitor,
        client_for(redis_server, fake_a, key_prefix="app-a", channel=SHARED, **quiet) as app_a,
        client_for(
            redis_server, fake_b, key_prefix="app-b", channel=SHARED, resync_interval=3600
        ) as app_b,
        client_for(
            redis_server, fake_b, key_prefix="app-b", channel=SHARED, resync_interval=3600
        ) as app_b2,
    ):
        assert app_a.generate("warm up").provider == "openai"
        app_b2.generate("warm up")
        # App A's two reads at start: before its first request, and when its subscriber
        # connected.
        wait_until(lambda: monitor.count("MGET") == 2, what="app A's start")
        wait_until(lambda: app_b2.store_health().healthy)

        fake_b.down("openai")
        app_b.generate("a")
        app_b.generate("b")  # failure_threshold=2: FAILURE, then OPENED, on the shared channel
        assert state(app_b) is CircuitState.OPEN

        # App B's other worker hears it on the explicit channel and reads its own key.
        wait_until(lambda: state(app_b2) is CircuitState.OPEN, what="app B's event")
        # App A heard both events and dropped them without a single read.
        wait_until(lambda: stats(app_a)["foreign_events"] >= 2, what="app A to drop them")
        assert monitor.commands == ["MGET", "MGET"]  # nothing since its start
        assert state(app_a) is CircuitState.CLOSED
        for _ in range(5):
            assert app_a.generate("x").provider == "openai"
        assert stats(app_b2)["foreign_events"] == 0


def test_an_event_without_a_prefix_or_with_a_forged_one_is_dropped(
    redis_server: RedisProcess, fake_a: FakeLLMServer
) -> None:
    with client_for(redis_server, fake_a, key_prefix="app-a", channel=SHARED) as app_a:
        assert app_a.generate("warm up").provider == "openai"
        wait_until(lambda: app_a.store_health().healthy)
        opened = BreakerRecord(state=CircuitState.OPEN, version=10**6, open_until=10**13)
        event = {"v": 2, "type": "OPENED", "provider": "openai", "worker_id": "mallory"}
        event.update(ts=1, record=opened.to_doc())
        with redis_server.client() as r:
            r.publish(SHARED, json.dumps(event))  # flexiai before prefixes: dropped too
            r.publish(SHARED, json.dumps({**event, "prefix": "app-b"}))
        wait_until(lambda: stats(app_a)["foreign_events"] == 2, what="both dropped")
        assert stats(app_a)["malformed_events"] == 0
        assert app_a.generate("x").provider == "openai"
