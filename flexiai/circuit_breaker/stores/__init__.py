"""Breaker stores. ``RedisSyncBackend`` is imported lazily: it needs the ``redis`` extra."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flexiai.circuit_breaker.stores.base import StoreSnapshot, SyncBackend
from flexiai.circuit_breaker.stores.memory import MemorySyncBackend

if TYPE_CHECKING:
    from flexiai.circuit_breaker.stores.redis import RedisSyncBackend

__all__ = ["MemorySyncBackend", "RedisSyncBackend", "StoreSnapshot", "SyncBackend"]


def __getattr__(name: str) -> Any:
    if name == "RedisSyncBackend":
        from flexiai.circuit_breaker.stores.redis import RedisSyncBackend

        return RedisSyncBackend
    raise AttributeError(name)
