"""The event subscriber against a real redis-server: delivery, bad messages, reconnection."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import pytest

from flexiai.circuit_breaker._machine import EventType, Op
from flexiai.circuit_breaker._wire import SyncEvent
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
from flexiai_dev.servers import RedisProcess
from tests.circuit_breaker.conftest import policy, wait_until
from tests.support.redis_fixtures import sync_config_for


class Listener:
    """A handler and an on_connect callback that record what they see."""

    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.events: queue.Queue[SyncEvent] = queue.Queue()
        self.connects = 0
        self._fail_on = fail_on or set()

    def handler(self, event: SyncEvent) -> None:
        if event.provider in self._fail_on:
            raise RuntimeError("handler bug")
        self.events.put(event)

    def on_connect(self) -> None:
        self.connects += 1

    def next(self, timeout: float = 5.0) -> SyncEvent:
        return self.events.get(timeout=timeout)


@pytest.fixture
def pair(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> tuple[RedisSyncBackend, Listener, RedisSyncBackend]:
    """(listener backend, subscribed Listener, worker backend) on one server."""
    config = sync_config_for(redis_server)
    listening, worker = make_backend(config), make_backend(config)
    listener = Listener()
    listening.subscribe(listener.handler, listener.on_connect)
    wait_until(lambda: listener.connects == 1, what="first on_connect")
    return listening, listener, worker


def test_every_guide_event_arrives_decoded(
    pair: tuple[RedisSyncBackend, Listener, RedisSyncBackend],
) -> None:
    _, listener, worker = pair
    p = policy(
        failure_threshold=2, success_threshold=2, half_open_max_calls=2, recovery_timeout=0.05
    )
    expected = [worker.transition("openai", op, p, "worker-7") for op in (Op.FAILURE, Op.FAILURE)]
    time.sleep(0.06)
    for op in (Op.ACQUIRE, Op.ACQUIRE, Op.SUCCESS, Op.SUCCESS):
        result = worker.transition("openai", op, p, "worker-7")
        if result.event is not None:
            expected.append(result)
    received = [listener.next() for _ in expected]
    assert [e.type for e in received] == [
        EventType.FAILURE,
        EventType.OPENED,
        EventType.HALF_OPEN,
        EventType.SUCCESS,
        EventType.CLOSED,
    ]
    for event, result in zip(received, expected, strict=True):
        assert event.provider == "openai" and event.worker_id == "worker-7"
        assert event.timestamp == result.now == result.record.updated_at
        assert event.record == result.record
    assert [e.version for e in received] == sorted(e.version for e in received)


def test_subscribe_is_idempotent(pair: tuple[RedisSyncBackend, Listener, RedisSyncBackend]) -> None:
    listening, listener, worker = pair
    listening.subscribe(listener.handler, listener.on_connect)
    worker.transition("openai", Op.FAILURE, policy(), "w")
    listener.next()
    time.sleep(0.05)
    assert listener.events.empty() and listener.connects == 1


def test_malformed_messages_are_dropped_counted_and_logged_once(
    pair: tuple[RedisSyncBackend, Listener, RedisSyncBackend],
    redis_server: RedisProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    listening, listener, worker = pair
    caplog.set_level(logging.WARNING, logger="flexiai.sync.redis")
    junk = [
        b"not json",
        b"\xff\xfe",
        b'{"v": 2}',
        b"[]",
        b'{"v":1,"type":"BOGUS"}',
        b'{"v":1,"type":"OPENED","provider":"x","worker_id":"w","ts":1,"record":{"state":"NO"}}',
    ]
    with redis_server.client() as admin:
        for payload in junk:
            admin.publish("flexiai:events", payload)
    good = worker.transition("openai", Op.FAILURE, policy(), "w")
    assert listener.next().record == good.record  # the subscriber is still alive
    assert listening.stats()["malformed_events"] == len(junk)
    dropped = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(dropped) == 1


def test_a_failing_handler_does_not_stop_the_subscriber(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    config = sync_config_for(redis_server)
    listening, worker = make_backend(config), make_backend(config)
    listener = Listener(fail_on={"broken"})
    listening.subscribe(listener.handler, listener.on_connect)
    wait_until(lambda: listener.connects == 1)
    worker.transition("broken", Op.FAILURE, policy(), "w")
    fine = worker.transition("openai", Op.FAILURE, policy(), "w")
    assert listener.next().record == fine.record
    assert listening.stats()["handler_errors"] == 1


def test_the_subscriber_reconnects_after_a_server_restart(
    pair: tuple[RedisSyncBackend, Listener, RedisSyncBackend], redis_server: RedisProcess
) -> None:
    listening, listener, worker = pair
    assert listening.health_check() is True
    redis_server.kill()
    wait_until(lambda: not listening.health_check(), what="health_check False while down")
    assert listening.health_check() is False
    redis_server.start()  # same port
    wait_until(lambda: listener.connects == 2, timeout=10, what="on_connect after reconnect")
    assert listening.health_check() is True
    assert listening.stats()["reconnects"] == 1
    result = worker.transition("openai", Op.FAILURE, policy(), "w")
    assert listener.next().record == result.record


def test_health_check_is_false_while_the_subscriber_is_disconnected(
    pair: tuple[RedisSyncBackend, Listener, RedisSyncBackend], redis_server: RedisProcess
) -> None:
    listening, listener, _ = pair
    with redis_server.client() as admin:
        admin.client_kill_filter(_type="pubsub")
    # redis-py may reconnect by itself inside get_message; either way on_connect runs again.
    wait_until(lambda: listener.connects == 2, timeout=10, what="resubscribed")
    assert listening.health_check() is True


def test_close_stops_the_subscriber_thread(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    backend = make_backend(sync_config_for(redis_server))
    listener = Listener()
    backend.subscribe(listener.handler, listener.on_connect)
    wait_until(lambda: listener.connects == 1)
    backend.close()
    assert not any(
        t.name == "flexiai-sync-subscriber" and t.is_alive() for t in threading.enumerate()
    )
    with redis_server.client() as admin:
        assert admin.pubsub_numsub("flexiai:events") == [(b"flexiai:events", 0)]
