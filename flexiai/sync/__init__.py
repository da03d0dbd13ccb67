"""Sharing breaker state between workers: the manager, the backends and the wire events."""

from flexiai.sync.backends import MemorySyncBackend, SyncBackend
from flexiai.sync.events import SyncEvent, decode_event, encode_event
from flexiai.sync.manager import StateSyncManager, generate_worker_id

__all__ = [
    "MemorySyncBackend",
    "StateSyncManager",
    "SyncBackend",
    "SyncEvent",
    "decode_event",
    "encode_event",
    "generate_worker_id",
]
