"""Backoff between retries of one provider: exponential with full jitter (AWS's advice for
many clients retrying at once), computed, never slept, so sync and async share it."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["full_jitter_backoff"]


def full_jitter_backoff(
    retry_number: int, *, initial: float, maximum: float, rand: Callable[[], float]
) -> float:
    """Seconds to wait before retry ``retry_number`` (0 for the first retry)."""
    ceiling = min(maximum, initial * (2.0**retry_number))
    return rand() * ceiling
