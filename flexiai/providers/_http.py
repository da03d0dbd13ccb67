"""One lazily built httpx client pair per FlexiAI client, shared by all its HTTP providers.

Built on first use so that constructing a client opens nothing and imports nothing heavy;
kept alive so warm Lambda invocations and long-lived workers reuse connections.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpPool"]


class HttpPool:
    def __init__(
        self,
        *,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._transport = transport
        self._async_transport = async_transport
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._lock = threading.Lock()

    def sync(self) -> httpx.Client:
        if self._sync is None:
            import httpx

            with self._lock:
                if self._sync is None:
                    self._sync = httpx.Client(
                        transport=self._transport,
                        limits=httpx.Limits(max_keepalive_connections=20, keepalive_expiry=60),
                        headers={"user-agent": "flexiai"},
                    )
        return self._sync

    def async_(self) -> httpx.AsyncClient:
        if self._async is None:
            import httpx

            with self._lock:
                if self._async is None:
                    self._async = httpx.AsyncClient(
                        transport=self._async_transport,
                        limits=httpx.Limits(max_keepalive_connections=20, keepalive_expiry=60),
                        headers={"user-agent": "flexiai"},
                    )
        return self._async

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        self.close()
        if self._async is not None:
            await self._async.aclose()
            self._async = None

    def __repr__(self) -> str:
        return f"HttpPool(sync={self._sync is not None}, async={self._async is not None})"
