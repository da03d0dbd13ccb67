"""What a breaker costs per request, next to a bare redis-py GET on the same server.

The path measured is what ``FlexiAI`` runs for every request, built from the same parts
(``StateSyncManager`` over ``RedisSyncBackend``, one ``CircuitBreaker`` per provider, three
providers): ``before_request()`` + ``allow()`` + ``record_success()``.

* snapshot mode, refresh due (``snapshot_max_age=0``): one round trip (one ``MGET`` of
  every provider's JSON record; the server's clock comes from a measured offset). Target:
  at most 1.3x a bare GET.
* snapshot mode, a refresh that carries this worker's call counts (one script call that
  adds them to the window and reads every record): at most once per ``flush_interval``
  (1 s by default), never per request. Reported against GET, no target.
* snapshot mode, snapshot fresh (the default 1 s): no round trip.
* pub/sub mode: no round trip (a background subscriber keeps the view current).
* CPU per request without the network (``time.process_time`` over many requests with the
  memory store). Target: at most 50 us.
* the whole client (``FlexiAI.generate`` against an in-process ``httpx.MockTransport``),
  snapshot refresh due minus sync off, paired call by call: the same cost seen by a caller.

Blocks of each are interleaved round by round, so drift hits all of them alike.

    python bench/overhead.py [--iterations N] [--rounds R] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from _common import Row, median, percentile, print_rows, redis_server, row, server_version

if TYPE_CHECKING:
    from redis import Redis

    from flexiai import FlexiAI
    from flexiai.circuit_breaker._sharing import SyncMode

COMMAND = "python bench/overhead.py"
PROVIDERS = ("openai", "anthropic", "gemini")
GET_RATIO_TARGET = 1.3
CPU_TARGET_US = 50.0


def _sync_config(url: str, mode: str, max_age: float, prefix: str) -> Any:
    from flexiai.models import SyncConfig

    return SyncConfig(
        enabled=True,
        redis_url=url,
        mode=mode,
        snapshot_max_age=max_age,
        key_prefix=prefix,
        channel=f"{prefix}:events",
    )


class _Path:
    """One worker's breaker path over a backend, wired as ``FlexiAI`` wires it."""

    def __init__(self, backend: Any, mode: SyncMode, max_age: float, flush: float = 1.0) -> None:
        from flexiai._clock import SystemClock
        from flexiai.circuit_breaker import CircuitBreaker, StateSyncManager
        from flexiai.models import CircuitBreakerConfig

        clock = SystemClock()
        self.manager = StateSyncManager(
            backend,
            mode=mode,
            snapshot_max_age=max_age,
            flush_interval=flush,
            clock=clock,
        )
        self.breakers = [
            CircuitBreaker(name, CircuitBreakerConfig(), self.manager, clock) for name in PROVIDERS
        ]
        self.manager.attach(self.breakers)
        self.first = self.breakers[0]

    def request(self) -> None:
        self.manager.before_request()
        permit = self.first.allow()
        assert permit is not None
        self.first.record_success(permit)

    def fail(self) -> None:
        self.manager.before_request()
        permit = self.first.allow()
        if permit is not None:
            self.first.record_failure(permit, _FAILURE)

    def close(self) -> None:
        self.manager.close()


class _Failure(Exception):
    pass


_FAILURE: BaseException = _Failure()


def _timed(fn: Callable[[], object], n: int, out: list[float]) -> None:
    perf = time.perf_counter_ns
    for _ in range(n):
        start = perf()
        fn()
        out.append((perf() - start) / 1000)


def _paired(off: Any, on: Any, n: int, out: list[float]) -> None:
    """The extra time of ``on.generate`` over ``off.generate``, call by call, back to back."""
    perf = time.perf_counter_ns
    for _ in range(n):
        start = perf()
        off.generate("hi")
        middle = perf()
        on.generate("hi")
        out.append(((perf() - middle) - (middle - start)) / 1000)


def _cpu_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(n, 1000)):
        fn()
    gc.disable()
    try:
        start = time.process_time()
        for _ in range(n):
            fn()
        return (time.process_time() - start) / n * 1e6
    finally:
        gc.enable()


def _client(url: str, mode: str | None, prefix: str) -> FlexiAI:
    import httpx

    from flexiai import FlexiAI
    from flexiai.models import FlexiAIConfig, ProviderConfig, SyncConfig

    body = {
        "id": "x",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    sync = _sync_config(url, mode, 0.0, prefix) if mode else SyncConfig()
    config = FlexiAIConfig(
        providers=[
            ProviderConfig(name=name, model="m", api_key="sk-bench", priority=i + 1)
            for i, name in enumerate(PROVIDERS)
        ],
        sync=sync,
    )
    return FlexiAI(config, transport=transport)


def run(
    iterations: int = 2000, rounds: int = 10, url: str | None = None, pin: bool = False
) -> list[Row]:
    import uuid

    from flexiai.circuit_breaker.stores import connections
    from flexiai.circuit_breaker.stores.memory import MemorySyncBackend
    from flexiai.circuit_breaker.stores.redis import RedisSyncBackend

    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    rows: list[Row] = []
    with redis_server(url, pin_apart=pin) as server_url:
        version = server_version(server_url)
        layouts: tuple[tuple[str, SyncMode, float], ...] = (
            ("due", "snapshot", 0.0),
            ("fresh", "snapshot", 1.0),
            ("pubsub", "pubsub", 1.0),
        )
        paths = {
            name: _Path(RedisSyncBackend(_sync_config(server_url, mode, age, prefix)), mode, age)
            for name, mode, age in layouts
        }
        paths["counted"] = _Path(
            RedisSyncBackend(_sync_config(server_url, "snapshot", 0.0, prefix)),
            "snapshot",
            0.0,
            flush=1e-6,  # every refresh carries the previous request's count
        )
        # The same process-level client the backend uses: only the command differs.
        lease = connections.acquire(_sync_config(server_url, "snapshot", 0.0, prefix))
        # lease.client is typed as the store's RedisClient; it is a whole redis.Redis.
        get_client = cast("Redis", lease.client)
        get_client.set(f"{prefix}:plain", "x" * 64)

        def get() -> None:
            get_client.get(f"{prefix}:plain")

        # The round trip of a refresh alone, without turning the reply into records.
        due_backend = cast(RedisSyncBackend, paths["due"].manager.backend)
        load_keys = [due_backend.key_for(name) for name in PROVIDERS]

        def raw_load() -> None:
            get_client.mget(load_keys)

        clients = {
            "off": _client(server_url, None, prefix),
            "due": _client(server_url, "snapshot", prefix),
        }
        try:
            samples: dict[str, list[float]] = {
                k: [] for k in ("get", "raw", "due", "counted", "fresh", "pubsub", "client")
            }
            for fn in (get, raw_load, *(p.request for p in paths.values())):
                _timed(fn, 200, [])  # warm up: connections, scripts, subscriber
            for c in clients.values():
                # mypy cannot infer a lambda whose parameter has a default (c=c binds the loop value).
                _timed(lambda c=c: c.generate("hi"), 200, [])  # type: ignore[misc]
            for _ in range(rounds):
                _timed(get, iterations, samples["get"])
                _timed(raw_load, iterations, samples["raw"])
                _timed(paths["due"].request, iterations, samples["due"])
                _timed(paths["counted"].request, iterations // 4, samples["counted"])
                _timed(paths["fresh"].request, iterations, samples["fresh"])
                _timed(paths["pubsub"].request, iterations, samples["pubsub"])
                _paired(clients["off"], clients["due"], iterations // 4, samples["client"])
            get_p50 = median(samples["get"])
            due_p50 = median(samples["due"])
            rows.append(
                row(
                    "overhead", f"bare redis-py GET, p50 ({version})", get_p50, "us", target="floor"
                )
            )
            rows.append(
                row("overhead", "bare redis-py GET, p99", percentile(samples["get"], 99), "us")
            )
            ratio = due_p50 / get_p50
            rows.append(
                row(
                    "overhead",
                    "snapshot mode, refresh due (1 round trip), p50",
                    due_p50,
                    "us",
                    peer="GET p50",
                    peer_value=get_p50,
                    target=f"<= {GET_RATIO_TARGET}x GET",
                    passed=ratio <= GET_RATIO_TARGET,
                )
            )
            rows.append(
                row(
                    "overhead",
                    "of which the round trip alone (MGET, no parsing), p50",
                    median(samples["raw"]),
                    "us",
                    peer="GET p50",
                    peer_value=get_p50,
                )
            )
            rows.append(
                row(
                    "overhead",
                    "snapshot mode, refresh carrying counts (1 script call, <= 1/s), p50",
                    median(samples["counted"]),
                    "us",
                    peer="GET p50",
                    peer_value=get_p50,
                )
            )
            rows.append(
                row(
                    "overhead",
                    "snapshot mode, refresh due, p99",
                    percentile(samples["due"], 99),
                    "us",
                    peer="GET p99",
                    peer_value=percentile(samples["get"], 99),
                )
            )
            for key, label in (
                ("fresh", "snapshot mode, snapshot fresh (no round trip)"),
                ("pubsub", "pub/sub mode (no round trip)"),
            ):
                value = median(samples[key])
                rows.append(
                    row(
                        "overhead",
                        f"{label}, p50",
                        value,
                        "us",
                        peer="GET p50",
                        peer_value=get_p50,
                        target="< 1x GET",
                        passed=value < get_p50,
                    )
                )
            extra = median(samples["client"])
            rows.append(
                row(
                    "overhead",
                    "whole client, snapshot refresh due minus sync off, p50",
                    extra,
                    "us",
                    peer="GET p50",
                    peer_value=get_p50,
                )
            )
            stats = paths["due"].manager
            if stats.degraded or stats.fallbacks:
                raise RuntimeError("the store failed during the benchmark; figures are invalid")
        finally:
            for c in clients.values():
                c.close()
            for p in paths.values():
                p.close()
            lease.release()

    # CPU without the network: the same path over the in-process store.
    n = max(20_000, iterations * 25)
    healthy = _Path(MemorySyncBackend(), "pubsub", 1.0)
    refresh = _Path(MemorySyncBackend(), "snapshot", 0.0)
    failing = _Path(MemorySyncBackend(), "pubsub", 1.0)
    try:
        for label, fn in (
            ("CPU per request, healthy path (memory store)", healthy.request),
            ("CPU per request, snapshot refresh every request (memory store)", refresh.request),
            ("CPU per failed request, breaker counting/open (memory store)", failing.fail),
        ):
            us = _cpu_us(fn, n)
            rows.append(
                row(
                    "overhead",
                    label,
                    us,
                    "us",
                    peer="target",
                    peer_value=CPU_TARGET_US,
                    target=f"<= {CPU_TARGET_US:g} us",
                    passed=us <= CPU_TARGET_US,
                )
            )
    finally:
        healthy.close()
        refresh.close()
        failing.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000, help="per block (default 2000)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("--redis-url", help="measure against this server instead of a new one")
    args = parser.parse_args()
    rows = run(args.iterations, args.rounds, args.redis_url)
    print_rows(rows, COMMAND)


if __name__ == "__main__":
    main()
