"""A fleet of real worker processes against a real redis-server (the fixtures') and the fake
LLM server, with a test-side subscriber that records every event on the fleet's channel."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flexiai.circuit_breaker import BreakerRecord
from flexiai.circuit_breaker._wire import SyncEvent, decode_event
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
from flexiai.testing import FakeLLMServer
from flexiai_dev.fleet import FleetSpec
from flexiai_dev.servers import RedisProcess
from tests.support.redis_fixtures import sync_config_for

PROVIDERS = ("openai", "anthropic")
WORKERS = 8


@pytest.fixture
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def fleet_spec(llm: FakeLLMServer, server: RedisProcess | None, **overrides: Any) -> FleetSpec:
    """Eight workers over openai > anthropic, sharing breakers through ``server``."""
    settings: dict[str, Any] = {
        "providers": tuple((name, llm.base_url(name)) for name in PROVIDERS),
        "workers": WORKERS,
        "sync": "pubsub",
        "redis_url": server.url if server is not None else None,
        "duration": 3.0,
        "rate": 10.0,
        "recovery_timeout": 30.0,
    }
    settings.update(overrides)
    return FleetSpec(**settings)


def stored_record(server: RedisProcess, spec: FleetSpec, provider: str) -> BreakerRecord:
    backend = RedisSyncBackend(sync_config_for(server, key_prefix=spec.key_prefix))
    try:
        return backend.load([provider]).records[provider]
    finally:
        backend.close()


class ChannelRecorder:
    """Every event published on the fleet's channel, decoded, in arrival order."""

    def __init__(self, server: RedisProcess, channel: str) -> None:
        self._client = server.client()
        self._pubsub = self._client.pubsub()
        self._pubsub.subscribe(channel)
        # wait for the confirmation: from here on, nothing published is missed
        while self._pubsub.get_message(timeout=1.0) is None:
            pass
        self.events: list[SyncEvent] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            if message is not None and message["type"] == "message":
                self.events.append(decode_event(message["data"]))

    def of(self, provider: str) -> list[SyncEvent]:
        return [e for e in self.events if e.provider == provider]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._pubsub.close()
        self._client.close()


@pytest.fixture
def channel_recorder() -> Iterator[Any]:
    recorders: list[ChannelRecorder] = []

    def make(server: RedisProcess, spec: FleetSpec) -> ChannelRecorder:
        recorder = ChannelRecorder(server, spec.events_channel)
        recorders.append(recorder)
        return recorder

    yield make
    for recorder in recorders:
        recorder.close()
