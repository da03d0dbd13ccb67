"""Does ``agenerate`` stall the event loop? 100 concurrent calls, Redis healthy and frozen.

A ticker coroutine sleeps 1 ms at a time and records how late it wakes up: its worst
lateness is the loop's worst stall, the longest time no other coroutine could run. Each
round fires ``--concurrency`` concurrent ``agenerate`` calls against the fake provider
(``flexiai.testing.fake_llm`` in a process of its own, so its threads do not compete with
the loop for the GIL), and the same number of bare ``httpx.AsyncClient`` POSTs of the same
request to the same server, the floor measured in the same run.

* Redis healthy: snapshot mode with ``snapshot_max_age=0``, so every request reads the
  shared breaker (one awaited MGET) before calling the provider: the store's worst case.
* Redis frozen (SIGSTOP): a fresh client, warmed up by one burst while Redis answers (so
  its connection pool is as warm as the bare client's), then Redis is frozen and the round
  fires: the requests share one store read (see ``StateSyncManager.aperform``), which waits
  its socket timeout (0.25 s) on the loop's selector, then the client falls back to local
  breakers. Its p99 latency therefore includes one socket timeout by design; the stall
  must not.

Everything runs twice, with CPython's default collector and after ``gc.freeze()`` (what a
server does once it has started, as gunicorn's and Instagram's write-ups recommend): a full
collection walks every object in the process and stops the loop for as long, 15-35 ms on
this VM, whoever allocated them; the report counts those passes and their longest, for
flexiai and for bare httpx, so a stall is not blamed on the wrong party. For the worst stall
it also says how much CPU the loop's thread used meanwhile: on 2 cores the fake provider and
Redis take their turns too, and the OS may preempt the loop in the middle of a tick, which
shows as a stall the loop's own work did not cause; the first row is that floor, the
ticker alone on an idle loop (on a VM, an idle vCPU can wake a few ms late). Young collections (generations 0 and 1)
are counted too: they walk what a burst keeps alive, so they grow with it. So are the TCP
connections the fake provider accepted in each round: bare httpx sends its whole burst in one
loop iteration, and its pool queues it on the 20 kept-alive connections; requests that take
turns reach the pool spread over iterations, find those connections busy and open new ones
(up to ``max_connections``), which the pool closes once idle. Each costs a connect, the
server a thread, and the collector the connection's objects, which form reference cycles.

A warm-up round of each kind runs first and is reported on its own: lazy imports, the
first connections, the TLS context and pydantic's first validations are one-time costs,
not steady-state stalls. Targets (issue 12): worst stall at most 5 ms, healthy and frozen.

    python bench/async_loop.py [--rounds R] [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from _common import Row, median, percentile, print_rows, row

COMMAND = "python bench/async_loop.py"
STALL_TARGET_MS = 5.0
TICK = 0.001


class _Ticker:
    """How late a 1 ms sleep wakes up, at worst, while it runs; and at worst among the
    ticks that no full collection overlapped (those stall whatever the loop runs)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_on_cpu = 0.0
        self.worst_outside_full_gc = 0.0
        self._full_gc_events = 0  # starts and ends of full collections, so far
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            self._full_gc_events += 1

    async def _run(self) -> None:
        gc.callbacks.append(self._on_gc)
        try:
            while not self._stop:
                before, cpu_before = time.perf_counter(), time.thread_time()
                full_gc_events = self._full_gc_events
                await asyncio.sleep(TICK)
                late = time.perf_counter() - before - TICK
                if late > self.worst:
                    self.worst = late
                    # How much of it this thread ran: the rest the OS gave other processes.
                    self.worst_on_cpu = time.thread_time() - cpu_before
                if full_gc_events == self._full_gc_events:
                    self.worst_outside_full_gc = max(self.worst_outside_full_gc, late)
        finally:
            gc.callbacks.remove(self._on_gc)

    async def __aenter__(self) -> _Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop = True
        assert self._task is not None
        await self._task


class _Collections:
    """The durations (ms) of CPython's collections while it is active: full (generation 2)
    ones stop every thread, the loop included, for as long as they walk the whole heap;
    young ones (generations 0 and 1) for as long as they walk what survived since the last,
    which grows with the objects a burst keeps alive."""

    def __init__(self) -> None:
        self.pauses: list[float] = []  # full collections
        self.young: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = (time.perf_counter() - self._started) * 1000
        (self.pauses if info["generation"] == 2 else self.young).append(pause)

    def __enter__(self) -> _Collections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


class _Connections:
    """TCP connections the fake provider accepted: what a round's requests could not get
    from a pool's kept-alive connections. Read over one connection of its own, opened once."""

    def __init__(self, server_url: str) -> None:
        import httpx

        self._url = f"{server_url}/_control/connections"
        self._client = httpx.Client()
        self._before = self._read()
        self.opened = 0

    def _read(self) -> int:
        return int(self._client.get(self._url).json()["accepted"])

    def __enter__(self) -> _Connections:
        self._before = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        self.opened = self._read() - self._before

    def close(self) -> None:
        self._client.close()


class _Round(NamedTuple):
    stall: float  # the worst, in ms
    on_cpu: float  # how much of it this thread ran, in ms
    stall_outside_full_gc: float  # the worst that no full collection overlapped, in ms
    latencies: list[float]  # each call's, in ms


async def _round(call: Callable[[int], Awaitable[Any]], n: int) -> _Round:
    """The loop's stalls while ``n`` calls run concurrently, and their latencies."""

    async def timed(i: int) -> float:
        started = time.perf_counter()
        await call(i)
        return (time.perf_counter() - started) * 1000

    async with _Ticker() as ticker:
        latencies = await asyncio.gather(*(timed(i) for i in range(n)))
    return _Round(
        ticker.worst * 1000,
        ticker.worst_on_cpu * 1000,
        ticker.worst_outside_full_gc * 1000,
        list(latencies),
    )


def _start_fake_llm() -> tuple[subprocess.Popen[str], str, str]:
    """The process, the server's own URL (its control API) and the provider's base URL."""
    # -W: runpy warns that flexiai.testing already imported the module it runs.
    command = [sys.executable, "-W", "ignore::RuntimeWarning", "-m", "flexiai.testing.fake_llm"]
    process = subprocess.Popen(
        [*command, "--providers", "openai"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdout is not None
    server_url = process.stdout.readline().strip()
    name, _, base_url = process.stdout.readline().strip().partition(" ")
    assert name == "openai", name
    return process, server_url, base_url


def _client(base_url: str, redis_host: str, redis_port: int) -> Any:
    from flexiai import FlexiAI
    from flexiai.models import FlexiAIConfig, ProviderConfig, RetryConfig, SyncConfig

    config = FlexiAIConfig(
        providers=[
            ProviderConfig(
                name="openai", model="gpt-4o-mini", base_url=base_url, api_key="sk-bench"
            )
        ],
        retry=RetryConfig(max_retries=0),
        sync=SyncConfig(
            enabled=True,
            backend="redis",
            mode="snapshot",
            snapshot_max_age=0.0,
            redis_host=redis_host,
            redis_port=redis_port,
            key_prefix=f"bench-async-{os.getpid()}",
            reconnect_backoff=60.0,
        ),
    )
    return FlexiAI(config)


async def _measure(
    args: argparse.Namespace, server_url: str, base_url: str, redis: Any, *, freeze: bool
) -> list[Row]:
    import httpx

    n = args.concurrency
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": "Bearer sk-bench"}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # as HttpPool
    stalls: dict[str, list[float]] = {"flexiai": [], "bare": [], "frozen": [], "bare2": []}
    outside_full_gc: dict[str, list[float]] = {key: [] for key in stalls}
    lats: dict[str, list[float]] = {key: [] for key in stalls}
    collections: dict[str, list[float]] = {key: [] for key in stalls}
    young: dict[str, list[float]] = {key: [] for key in stalls}
    opened: dict[str, list[int]] = {key: [] for key in stalls}
    on_cpus: dict[str, list[float]] = {key: [] for key in stalls}
    warm: dict[str, float] = {}
    host, port = redis.host, redis.port
    connections = _Connections(server_url)

    async def measured(key: str, call: Callable[[int], Awaitable[Any]]) -> None:
        with _Collections() as passes, connections:
            measured_round = await _round(call, n)
        stalls[key].append(measured_round.stall)
        outside_full_gc[key].append(measured_round.stall_outside_full_gc)
        on_cpus[key].append(measured_round.on_cpu)
        lats[key] += measured_round.latencies
        collections[key] += passes.pauses
        young[key] += passes.young
        opened[key].append(connections.opened)

    async with httpx.AsyncClient(limits=limits) as bare:

        async def bare_call(i: int) -> Any:
            response = await bare.post(f"{base_url}/chat/completions", json=body, headers=headers)
            return response.json()

        async with _client(base_url, host, port) as client:

            async def flexiai_call(i: int) -> Any:
                return await client.agenerate("hi")

            warm["bare"] = (await _round(bare_call, n)).stall
            warm["flexiai"] = (await _round(flexiai_call, n)).stall
            if freeze:  # what a server does once it has started (see the docstring)
                gc.collect()
                gc.freeze()
            for _ in range(args.rounds):
                for key, call in (("bare", bare_call), ("flexiai", flexiai_call)):
                    await measured(key, call)

        for index in range(args.rounds + 1):  # the first frozen round is the warm-up
            async with _client(base_url, host, port) as client:

                async def frozen_call(i: int, client: Any = client) -> Any:
                    return await client.agenerate("hi")

                # Warm while Redis answers, as the bare client is: its pool holds as many
                # kept-alive connections as a burst leaves, its store link is up.
                await _round(frozen_call, n)
                redis.freeze()
                try:
                    if index == 0:
                        warm["frozen"] = (await _round(frozen_call, n)).stall
                    else:
                        await measured("frozen", frozen_call)
                finally:
                    redis.thaw()
                assert client.store_health().degraded, "the frozen store was not noticed"
            # The client this bench just dropped is garbage a server does not make (it keeps
            # one client): collected here, not in the middle of the next measured round.
            gc.collect()
            if index == 0:
                await _round(bare_call, n)
            else:
                await measured("bare2", bare_call)
        if freeze:
            gc.unfreeze()
    connections.close()

    gc_setup = "gc.freeze()" if freeze else "default gc"

    def stall_rows(figure: str, key: str, peer: str) -> list[Row]:
        full, peer_full = collections[key], collections[peer]

        def target_row(what: str, of: dict[str, list[float]]) -> Row:
            worst = max(of[key])
            return row(
                "async_loop",
                f"{figure}, {gc_setup}: {what}",
                worst,
                "ms",
                peer="bare httpx",
                peer_value=max(of[peer]),
                target=f"<= {STALL_TARGET_MS:g} ms",
                passed=worst <= STALL_TARGET_MS,
            )

        def on_cpu(of: str) -> float:  # the worst round's worst stall, on this thread's CPU
            return on_cpus[of][stalls[of].index(max(stalls[of]))]

        return [
            target_row(f"worst loop stall (max of {args.rounds} rounds)", stalls),
            target_row("worst loop stall in ticks no full gc pass overlapped", outside_full_gc),
            row(
                "async_loop",
                f"{figure}, {gc_setup}: a round's worst stall, median of {args.rounds}",
                median(stalls[key]),
                "ms",
                peer="bare httpx",
                peer_value=median(stalls[peer]),
            ),
            row(
                "async_loop",
                f"{figure}, {gc_setup}: CPU the loop thread used in the worst tick "
                "(1 ms + the stall)",
                on_cpu(key),
                "ms",
                peer="bare httpx",
                peer_value=on_cpu(peer),
            ),
            row(
                "async_loop",
                f"{figure}, {gc_setup}: full gc passes in those rounds "
                f"({len(full)}; bare httpx {len(peer_full)}), the longest",
                max(full, default=0.0),
                "ms",
                peer="bare httpx",
                peer_value=max(peer_full, default=0.0),
            ),
            row(
                "async_loop",
                f"{figure}, {gc_setup}: young gc passes in those rounds "
                f"({len(young[key])}; bare httpx {len(young[peer])}), the longest",
                max(young[key], default=0.0),
                "ms",
                peer="bare httpx",
                peer_value=max(young[peer], default=0.0),
            ),
            row(
                "async_loop",
                f"{figure}, {gc_setup}: connections opened in a round, median of "
                f"{args.rounds} (bare httpx queues its burst on its kept-alive ones)",
                median(opened[key]),
                "",
                peer="bare httpx",
                peer_value=median(opened[peer]),
            ),
        ]

    def p99_row(figure: str, key: str, peer: str) -> Row:
        return row(
            "async_loop",
            f"{figure}, {gc_setup}: p99 latency, {n} concurrent",
            percentile(lats[key], 99),
            "ms",
            peer="bare httpx",
            peer_value=percentile(lats[peer], 99),
        )

    return [
        *stall_rows("Redis healthy", "flexiai", "bare"),
        p99_row("Redis healthy", "flexiai", "bare"),
        *stall_rows("Redis frozen", "frozen", "bare2"),
        p99_row("Redis frozen", "frozen", "bare2"),
        *(
            row("async_loop", f"{gc_setup}: warm-up round (one-time costs): {name}", value, "ms")
            for name, value in (
                ("bare httpx", warm["bare"]),
                ("Redis healthy", warm["flexiai"]),
                ("Redis frozen", warm["frozen"]),
            )
        ),
    ]


async def _idle_floor(rounds: int) -> list[tuple[float, float]]:
    """(worst lateness, loop CPU in that tick), in ms, of the ticker alone on an idle loop,
    ``rounds`` times 0.5 s: the machine's own wake-up latency. A frozen round idles on the
    loop for most of its 0.25 s socket timeout, so its worst tick can be this one."""
    idle = []
    for _ in range(rounds):
        async with _Ticker() as ticker:
            await asyncio.sleep(0.5)
        idle.append((ticker.worst * 1000, ticker.worst_on_cpu * 1000))
    return idle


def _idle_row(idle: list[tuple[float, float]]) -> Row:
    worst, on_cpu = max(idle)
    return row(
        "async_loop",
        f"floor: a 1 ms ticker alone on an idle loop, worst lateness of {len(idle)} x 0.5 s "
        f"(the loop thread ran {on_cpu:.1f} ms of that tick)",
        worst,
        "ms",
    )


def run(rounds: int = 5, concurrency: int = 100) -> list[Row]:
    """The rows, with a fake LLM server and a redis-server of this run's own."""
    import logging

    from flexiai_dev.servers import start_server

    # The frozen rounds fall back on purpose: their one warning each is not news here.
    logging.getLogger("flexiai").setLevel(logging.ERROR)
    args = argparse.Namespace(rounds=rounds, concurrency=concurrency)
    fake, server_url, base_url = _start_fake_llm()
    try:
        with contextlib.ExitStack() as stack:
            redis = start_server(stack, name="bench-async")
            return [
                _idle_row(asyncio.run(_idle_floor(rounds))),
                *asyncio.run(_measure(args, server_url, base_url, redis, freeze=False)),
                *asyncio.run(_measure(args, server_url, base_url, redis, freeze=True)),
            ]
    finally:
        fake.terminate()
        fake.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    rows = run(args.rounds, args.concurrency)
    print_rows(rows, f"{COMMAND} --rounds {args.rounds} --concurrency {args.concurrency}")


if __name__ == "__main__":
    main()
