"""Breaker stores. ``RedisSyncBackend`` is imported lazily: it needs the ``redis`` extra."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flexiai.sync.backends.base import StoreSnapshot, SyncBackend
from flexiai.sync.backends.memory import MemorySyncBackend

if TYPE_CHECKING:
    from flexiai.sync.backends.redis import RedisSyncBackend

__all__ = ["MemorySyncBackend", "RedisSyncBackend", "StoreSnapshot", "SyncBackend"]


def __getattr__(name: str) -> Any:
    if name == "RedisSyncBackend":
        from flexiai.sync.backends.redis import RedisSyncBackend

        return RedisSyncBackend
    raise AttributeError(name)
