"""Pub/sub: from one worker opening a breaker to every other worker seeing it.

Listener processes each run a worker's real sync path (``StateSyncManager`` over
``RedisSyncBackend`` in pub/sub mode, one ``CircuitBreaker``) and note when their breaker
changes state. This process plays the worker that opens (TRIP) and closes (RESET) the
breaker through the same atomic transition a worker uses, and measures how long until
every listener has seen each change. The floor, measured in the same run and interleaved
event by event: a raw PUBLISH from this process to as many plain redis-py subscribers in
other processes, and the same with one GET by each subscriber before it notes the message
(a worker re-reads the key before believing an event: that is its floor). Target: p99 at
most 5 ms on loopback.

    python bench/propagation.py [--listeners N] [--events N] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import Row, median, percentile, print_rows, redis_server, row

COMMAND = "python bench/propagation.py"
TARGET_P99_MS = 5.0
PROVIDER = "openai"


# -- listeners (child processes) -------------------------------------------------------------


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _listen_flexiai(url: str, prefix: str) -> None:
    from flexiai._clock import SystemClock
    from flexiai.circuit_breaker import CircuitBreaker, StateSyncManager
    from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
    from flexiai.events import BreakerChanged
    from flexiai.models import CircuitBreakerConfig, SyncConfig

    config = SyncConfig(
        enabled=True, redis_url=url, mode="pubsub", key_prefix=prefix, channel=f"{prefix}:events"
    )
    clock = SystemClock()
    backend = RedisSyncBackend(config)
    manager = StateSyncManager(backend, mode="pubsub", clock=clock)

    def changed(change: BreakerChanged) -> None:
        _emit({"t": time.time(), "v": change.record.version})

    breaker = CircuitBreaker(PROVIDER, CircuitBreakerConfig(), manager, clock, on_change=changed)
    manager.attach([breaker])
    manager.before_request()  # starts the subscriber, as a worker's first request does
    while not backend.health_check():
        time.sleep(0.01)
    _emit({"ready": True})
    sys.stdin.read()  # until the parent closes our stdin
    manager.close()


def _listen_raw(url: str, channel: str, *, read_key: bool = False) -> None:
    """A plain redis-py subscriber; with ``read_key``, one GET after each message before
    noting it: the floor for a worker that must re-read the key before believing."""
    import redis

    client = redis.Redis.from_url(url, protocol=2)
    reader = redis.Redis.from_url(url, protocol=2) if read_key else None
    key = f"{channel}:key"
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    stop = threading.Event()
    # The tuple only sequences the two calls; set()'s None is never used.
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()  # type: ignore[func-returns-value]
    while not stop.is_set():
        message = pubsub.get_message(timeout=0.2)
        if message is None:
            continue
        if message["type"] == "subscribe":
            _emit({"ready": True})
        elif message["type"] == "message":
            if reader is not None:
                reader.get(key)
            _emit({"t": time.time(), "v": int(message["data"])})
    pubsub.close()
    client.close()
    if reader is not None:
        reader.close()


# -- the parent --------------------------------------------------------------------------------


class _Listeners:
    """N listener processes of one kind; ``wait(version)`` returns their receive times."""

    def __init__(self, kind: str, n: int, url: str, name: str) -> None:
        self._seen: dict[int, list[float]] = {}
        self._cond = threading.Condition()
        self._n = n
        self._ready = 0
        self.processes = [
            subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--listen", kind, url, name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(n)
        ]
        for process in self.processes:
            threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            message = json.loads(line)
            with self._cond:
                if message.get("ready"):
                    self._ready += 1
                else:
                    self._seen.setdefault(message["v"], []).append(message["t"])
                self._cond.notify_all()

    def wait_ready(self, timeout: float = 60.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready >= self._n, timeout):
                raise RuntimeError("listeners did not start")

    def wait(self, version: int, timeout: float = 5.0) -> list[float]:
        with self._cond:
            if not self._cond.wait_for(
                lambda: len(self._seen.get(version, ())) >= self._n, timeout
            ):
                raise RuntimeError(f"not every listener saw event {version}")
            return self._seen.pop(version)

    def stop(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in self.processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run(listeners: int = 7, events: int = 300, url: str | None = None) -> list[Row]:
    import redis

    from flexiai.circuit_breaker import Op, Policy
    from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
    from flexiai.models import CircuitBreakerConfig, SyncConfig

    prefix = f"bench-prop-{uuid.uuid4().hex[:6]}"
    raw_channel = f"{prefix}:raw"
    policy = Policy.from_config(CircuitBreakerConfig())
    kinds = ("flexiai", "raw", "raw+get")
    every: dict[str, list[float]] = {k: [] for k in kinds}  # all listeners saw it
    each: dict[str, list[float]] = {k: [] for k in kinds}  # one delivery
    with redis_server(url) as server_url:
        groups = {
            "flexiai": _Listeners("flexiai", listeners, server_url, prefix),
            "raw": _Listeners("raw", listeners, server_url, raw_channel),
            "raw+get": _Listeners("raw+get", listeners, server_url, f"{raw_channel}-get"),
        }
        backend = RedisSyncBackend(
            SyncConfig(
                enabled=True, redis_url=server_url, key_prefix=prefix, channel=f"{prefix}:events"
            )
        )
        publisher = redis.Redis.from_url(server_url, protocol=2)
        try:
            for group in groups.values():
                group.wait_ready()
            for i in range(events + 20):  # the first 20 warm up and are not counted
                sent = time.time()
                publisher.publish(raw_channel, str(i))
                raw = groups["raw"].wait(i)
                sent_get = time.time()
                publisher.publish(f"{raw_channel}-get", str(i))
                raw_get = groups["raw+get"].wait(i)
                op = Op.TRIP if i % 2 == 0 else Op.RESET
                sent_flexiai = time.time()
                result = backend.transition(PROVIDER, op, policy, "opener", open_for=60)
                seen = groups["flexiai"].wait(result.record.version)
                if i >= 20:
                    for kind, start, times in (
                        ("raw", sent, raw),
                        ("raw+get", sent_get, raw_get),
                        ("flexiai", sent_flexiai, seen),
                    ):
                        latencies = [(t - start) * 1000 for t in times]
                        every[kind].append(max(latencies))
                        each[kind].extend(latencies)
                time.sleep(0.002)
        finally:
            backend.close()
            publisher.close()
            for group in groups.values():
                group.stop()

    rows: list[Row] = []
    stats: tuple[tuple[str, Callable[[list[float]], float]], ...] = (
        ("p50", lambda v: median(v)),
        ("p99", lambda v: percentile(v, 99)),
    )
    for label, stat in stats:
        value = stat(every["flexiai"])
        target = f"<= {TARGET_P99_MS:g} ms" if label == "p99" else ""
        for floor_kind, floor_name in (
            ("raw", "raw PUBLISH -> all subscribers"),
            ("raw+get", "raw PUBLISH -> all subscribers, each then one GET"),
        ):
            rows.append(
                row(
                    "propagation",
                    f"breaker opened/closed -> all {listeners} other workers see it, {label}",
                    value,
                    "ms",
                    peer=floor_name,
                    peer_value=stat(every[floor_kind]),
                    target=target,
                    passed=(value <= TARGET_P99_MS) if label == "p99" else None,
                )
            )
    for label, stat in stats:
        for floor_kind, floor_name in (
            ("raw", "raw PUBLISH -> one subscriber"),
            ("raw+get", "raw PUBLISH -> one subscriber, then one GET"),
        ):
            rows.append(
                row(
                    "propagation",
                    f"one delivery to one worker, {label}",
                    stat(each["flexiai"]),
                    "ms",
                    peer=floor_name,
                    peer_value=stat(each[floor_kind]),
                )
            )
    return rows


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--listen":
        kind, url, name = sys.argv[2:]
        if kind == "flexiai":
            _listen_flexiai(url, name)
        else:
            _listen_raw(url, name, read_key=kind == "raw+get")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, default=7, help="other workers (default 7)")
    parser.add_argument("--events", type=int, default=300, help="events measured (default 300)")
    parser.add_argument("--redis-url", help="use this server instead of starting one")
    args = parser.parse_args()
    print_rows(run(args.listeners, args.events, args.redis_url), COMMAND)


if __name__ == "__main__":
    main()
