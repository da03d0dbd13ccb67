"""ElastiCache IAM authentication as a redis-py ``CredentialProvider``.

The password is a SigV4-presigned URL, scheme stripped::

    {cache_name}/?Action=connect&User={user}[&ResourceType=ServerlessCache]&X-Amz-Algorithm=...

signed for the service ``elasticache`` and valid for 900 seconds. redis-py asks the provider
for credentials on every new connection, so the token is cached for ``token_ttl`` seconds
(10 minutes: well inside its 15-minute validity). Tokens are never logged and never appear
in ``repr``. boto3/botocore are imported only when the first token is made.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import urlencode

from redis.credentials import CredentialProvider

__all__ = ["TOKEN_EXPIRES", "ElastiCacheIAMProvider"]

#: Seconds a presigned token stays valid (the most ElastiCache accepts).
TOKEN_EXPIRES = 900
#: Seconds a token is reused before a new one is signed.
DEFAULT_TOKEN_TTL = 600.0


class _WhileSigning(logging.Filter):
    """Drops botocore.auth's DEBUG records (canonical request, signature) made by a thread
    that is signing a token: with them, anyone reading the logs could rebuild it."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self._local, "signing", False)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self._local.signing = True
        try:
            yield
        finally:
            self._local.signing = False


_HIDE_SIGNING = _WhileSigning()
logging.getLogger("botocore.auth").addFilter(_HIDE_SIGNING)


class MonotonicClock(Protocol):
    """The part of ``flexiai._clock.Clock`` the provider reads."""

    def monotonic(self) -> float: ...


class _SystemMonotonic:
    def monotonic(self) -> float:
        return time.monotonic()


class ElastiCacheIAMProvider(CredentialProvider):
    """Returns ``(user, token)`` for ``AUTH``; ``user`` is the ElastiCache user id.

    ``credentials`` is a botocore ``Credentials`` object (refreshable ones are refreshed on
    each signing); by default the standard AWS credential chain is used, resolved on the
    first call. ``clock`` needs only ``monotonic()``.
    """

    def __init__(
        self,
        user: str,
        cache_name: str,
        region: str,
        *,
        serverless: bool = True,
        credentials: Any = None,
        clock: MonotonicClock | None = None,
        token_ttl: float = DEFAULT_TOKEN_TTL,
    ) -> None:
        if not 0 < token_ttl < TOKEN_EXPIRES:
            raise ValueError(f"token_ttl must be between 0 and {TOKEN_EXPIRES} seconds")
        self.user = user
        self.cache_name = cache_name
        self.region = region
        self.serverless = serverless
        self._credentials = credentials
        self._clock: MonotonicClock = clock or _SystemMonotonic()
        self._token_ttl = token_ttl
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_until = 0.0

    def get_credentials(self) -> tuple[str, str]:
        with self._lock:
            now = self._clock.monotonic()
            if self._token is None or now >= self._token_until:
                self._token = self._sign()
                self._token_until = now + self._token_ttl
            return self.user, self._token

    async def get_credentials_async(self) -> tuple[str, str]:
        """For redis-py's asyncio client: a cached token is returned on the loop; making a
        new one (credential resolution may read the instance metadata service, refreshable
        credentials may call STS) runs in a worker thread, so the loop never waits on it."""
        token = self._token
        if token is not None and self._clock.monotonic() < self._token_until:
            return self.user, token
        import asyncio

        return await asyncio.to_thread(self.get_credentials)

    def _sign(self) -> str:
        from botocore.auth import SigV4QueryAuth
        from botocore.awsrequest import AWSRequest

        if self._credentials is None:
            import botocore.session

            self._credentials = botocore.session.get_session().get_credentials()
        if self._credentials is None:
            from redis.exceptions import AuthenticationError

            raise AuthenticationError("no AWS credentials found for ElastiCache IAM auth")
        query = {"Action": "connect", "User": self.user}
        if self.serverless:
            query["ResourceType"] = "ServerlessCache"
        request = AWSRequest(method="GET", url=f"https://{self.cache_name}/?{urlencode(query)}")
        signer = SigV4QueryAuth(
            self._credentials.get_frozen_credentials(),
            "elasticache",
            self.region,
            expires=TOKEN_EXPIRES,
        )
        with _HIDE_SIGNING.active():
            signer.add_auth(request)
        return str(request.url).removeprefix("https://")

    def __repr__(self) -> str:
        return (
            f"ElastiCacheIAMProvider(user={self.user!r}, cache_name={self.cache_name!r}, "
            f"region={self.region!r}, serverless={self.serverless})"
        )
