"""flexiai._per_loop: one resource per event loop, closed on that loop when it ends."""

from __future__ import annotations

import asyncio
import gc
import itertools
import weakref

from flexiai._per_loop import PerLoop


def _counting() -> tuple[PerLoop[int], list[int]]:
    closed: list[int] = []

    async def close(resource: int) -> None:
        await asyncio.sleep(0)  # a real close awaits its sockets
        closed.append(resource)

    return PerLoop(itertools.count().__next__, close), closed


async def _get(per_loop: PerLoop[int]) -> tuple[int, int]:
    return per_loop.get(), per_loop.get()


def test_each_loop_gets_its_own_closed_on_that_loop_when_asyncio_run_ends() -> None:
    per_loop, closed = _counting()

    assert asyncio.run(_get(per_loop)) == (0, 0)  # built once, then reused in that loop
    assert closed == [0]
    assert asyncio.run(_get(per_loop)) == (1, 1)
    assert closed == [0, 1]
    assert len(per_loop) == 0


def test_a_loop_closed_without_shutting_down_is_dropped_not_kept_alive() -> None:
    per_loop, closed = _counting()
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(_get(per_loop)) == (0, 0)
    loop.close()  # no shutdown: nothing could close its resource on it
    ended = weakref.ref(loop)
    del loop

    assert asyncio.run(_get(per_loop)) == (1, 1)
    gc.collect()
    assert ended() is None
    assert closed == [1]


def test_take_hands_the_running_loops_resource_over_and_close_all_closes_the_rest() -> None:
    per_loop, closed = _counting()
    other = asyncio.new_event_loop()
    try:
        assert other.run_until_complete(_get(per_loop)) == (0, 0)

        async def take() -> int | None:
            per_loop.get()
            return per_loop.take()

        assert asyncio.run(take()) == 1
        assert len(per_loop) == 1  # the other loop's
        per_loop.close_all()  # from no loop: runs the close on the (idle) owner loop
        assert 0 in closed and len(per_loop) == 0
    finally:
        other.close()
