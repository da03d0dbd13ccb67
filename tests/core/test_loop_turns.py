"""Concurrent async steps take turns on the event loop (flexiai._loop_turns).

Asserted by what other coroutines saw, never by how long anything took: each step of a
burst does at least a slice's worth of CPU work (measured by the clock the slice is
measured by), so however fast or loaded the machine, a slice holds a bounded number of
steps and the loop must get back to its other work in between.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from flexiai._loop_turns import SLICE_SECONDS, take_turn, take_turn_after


def _busy(seconds: float) -> None:
    """CPU work that holds the loop for ``seconds`` (as a request's CPU-bound step does)."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def _beside_a_bystander(requests: list[Coroutine[Any, Any, None]], log: list[str]) -> None:
    """Run ``requests`` concurrently while a bystander coroutine logs each time it gets the
    loop: what lands in ``log`` between two bystander entries ran in one loop iteration."""

    async def bystander(stop: asyncio.Event) -> None:
        while not stop.is_set():
            log.append("bystander")
            await asyncio.sleep(0)

    async def scenario() -> None:
        stop = asyncio.Event()
        watching = asyncio.create_task(bystander(stop))
        await asyncio.sleep(0)
        await asyncio.gather(*requests)
        stop.set()
        await watching

    asyncio.run(scenario())


def test_a_lone_step_goes_on_without_yielding_to_the_loop() -> None:
    async def scenario() -> bool:
        ran = asyncio.Event()
        asyncio.get_running_loop().call_soon(ran.set)
        await take_turn()
        return ran.is_set()  # a yield would have let the callback run

    assert asyncio.run(scenario()) is False


def test_a_burst_of_steps_lets_other_coroutines_run_in_between() -> None:
    log: list[str] = []

    async def request() -> None:
        await take_turn()
        _busy(SLICE_SECONDS)
        log.append("step")

    _beside_a_bystander([request() for _ in range(40)], log)
    steps_at = [i for i, entry in enumerate(log) if entry == "step"]
    assert len(steps_at) == 40
    between = log[steps_at[0] : steps_at[-1]]
    # Without turns, all 40 steps would run back to back in one loop iteration.
    assert between.count("bystander") >= 10
    # Each slice holds a slice's worth of steps, plus the one that overran it.
    longest_run = max(
        len(run) for run in "".join("s" if e == "step" else "|" for e in between).split("|")
    )
    assert longest_run <= 3


def test_steps_that_wait_run_first_come_first_served() -> None:
    order: list[int] = []

    async def request(i: int) -> None:
        await take_turn()
        _busy(SLICE_SECONDS / 2)
        order.append(i)

    async def scenario() -> None:
        await asyncio.gather(*(request(i) for i in range(30)))

    asyncio.run(scenario())
    assert order == list(range(30))


def test_a_step_cancelled_while_it_waits_does_not_hold_up_the_queue() -> None:
    done: list[int] = []

    async def request(i: int) -> None:
        await take_turn()
        _busy(SLICE_SECONDS)
        done.append(i)

    async def scenario() -> None:
        tasks = [asyncio.create_task(request(i)) for i in range(20)]
        await asyncio.sleep(0)  # all have started: the first ran, the rest are queued
        for task in tasks[5:10]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        cancelled = [r for r in results if isinstance(r, asyncio.CancelledError)]
        assert len(cancelled) == 5

    asyncio.run(scenario())
    assert sorted(done) == [*range(5), *range(10, 20)]


def test_the_waiters_of_one_future_take_turns_when_it_completes() -> None:
    log: list[str] = []

    async def waiter(shared: asyncio.Future[str]) -> str:
        await take_turn_after(shared)
        _busy(SLICE_SECONDS)
        log.append("waiter")
        return shared.result()

    async def bystander(stop: asyncio.Event) -> None:
        while not stop.is_set():
            log.append("bystander")
            await asyncio.sleep(0)

    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        shared: asyncio.Future[str] = loop.create_future()
        waiting = [asyncio.create_task(waiter(shared)) for _ in range(30)]
        await asyncio.sleep(0)
        assert log == []  # nobody ran before the future completed
        stop = asyncio.Event()
        watching = asyncio.create_task(bystander(stop))
        shared.set_result("answer")
        results = await asyncio.gather(*waiting)
        stop.set()
        await watching
        return results

    assert asyncio.run(scenario()) == ["answer"] * 30
    first, last = log.index("waiter"), len(log) - 1 - log[::-1].index("waiter")
    assert log[first:last].count("bystander") >= 5


def test_an_exception_reaches_every_waiter_of_a_failed_future() -> None:
    async def waiter(shared: asyncio.Future[str]) -> str:
        await take_turn_after(shared)
        return shared.result()

    async def scenario() -> list[object]:
        shared: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiting = [asyncio.create_task(waiter(shared)) for _ in range(10)]
        await asyncio.sleep(0)
        shared.set_exception(ConnectionError("store frozen"))
        return await asyncio.gather(*waiting, return_exceptions=True)

    results = asyncio.run(scenario())
    assert len(results) == 10
    assert all(isinstance(r, ConnectionError) for r in results)


def test_each_event_loop_has_turns_of_its_own() -> None:
    # A loop that ended with steps still queued must not hold up the next one.
    async def burst(cancel_some: bool) -> int:
        async def request() -> None:
            await take_turn()
            _busy(SLICE_SECONDS)

        tasks = [asyncio.create_task(request()) for _ in range(10)]
        await asyncio.sleep(0)
        if cancel_some:
            for task in tasks[3:]:
                task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return sum(r is None for r in results)

    assert asyncio.run(burst(cancel_some=True)) == 3
    assert asyncio.run(burst(cancel_some=False)) == 10


def test_work_a_step_started_counts_against_the_iterations_it_lands_in() -> None:
    # A step's own turn ends at its first suspension; like httpcore taking a lock before
    # it sends, the rest of what it started runs an iteration later, outside any turn.
    # The batches must shrink so that this late work does not pile up in one iteration.
    log: list[str] = []

    async def request() -> None:
        await take_turn()
        await asyncio.sleep(0)  # the lock's checkpoint
        _busy(SLICE_SECONDS)
        log.append("late")

    _beside_a_bystander([request() for _ in range(60)], log)
    runs = "".join("l" if entry == "late" else "|" for entry in log).split("|")
    assert sum(len(run) for run in runs) == 60
    # Sized by the gated part alone (nearly free), the batch would grow to 64 at once.
    assert max(len(run) for run in runs) <= 12
