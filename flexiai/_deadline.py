"""How much time the current request has left, carried in a context variable.

The Lambda middleware sets it from ``context.get_remaining_time_in_millis()`` minus a safety
margin; anyone can set it with ``flexiai.deadline(seconds)``. The client caps each attempt's
timeout by it and skips providers that could not answer in the time left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["attempt_deadline", "deadline", "remaining_time"]

RemainingFn = Callable[[], float]

_REMAINING: ContextVar[RemainingFn | None] = ContextVar("flexiai_deadline", default=None)


@contextmanager
def deadline(budget: float | RemainingFn) -> Iterator[None]:
    """Limit every flexiai call inside the block.

    ``budget`` is seconds from now, or a function returning the seconds left (so a Lambda
    context can be read live rather than copied once).
    """
    if callable(budget):
        remaining = budget
    else:
        ends_at = time.monotonic() + float(budget)

        def remaining() -> float:
            return ends_at - time.monotonic()

    token = _REMAINING.set(remaining)
    try:
        yield
    finally:
        _REMAINING.reset(token)


def remaining_time() -> float | None:
    """Seconds left in the current deadline, or None when no deadline is set."""
    fn = _REMAINING.get()
    return None if fn is None else fn()


@contextmanager
def attempt_deadline(timeout: float) -> Iterator[float]:
    """Limit the block to ``timeout`` seconds, or less if the enclosing deadline ends first.

    Yields the ``time.monotonic()`` instant the block must end by. Inside, ``remaining_time``
    counts down to it, so whatever reads it (a provider's sockets, a secret lookup) stops in
    time; the enclosing deadline is back in force after the block.
    """
    now = time.monotonic()
    ends_at = now + max(0.0, timeout)
    outer = remaining_time()
    if outer is not None:
        ends_at = min(ends_at, now + outer)

    def remaining() -> float:
        return ends_at - time.monotonic()

    token = _REMAINING.set(remaining)
    try:
        yield ends_at
    finally:
        _REMAINING.reset(token)
