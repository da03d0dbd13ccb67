"""The clock every time-dependent decision reads, so tests can move time by hand."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "epoch_ms"]


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds. Breaker records store wall time so Redis TIME can replace it."""
        ...

    def monotonic(self) -> float:
        """Seconds for measuring durations and deadlines; never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None: ...

    async def asleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        if seconds > 0:
            import asyncio

            await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


def epoch_ms(clock: Clock) -> int:
    """The clock's wall time in whole milliseconds: the unit of every breaker record."""
    return int(clock.now() * 1000)
