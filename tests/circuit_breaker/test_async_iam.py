"""ElastiCache IAM tokens for the asyncio client: signed off the loop, reused on it.

redis-py's asyncio connections ask ``get_credentials_async``; signing (and with it finding
and refreshing AWS credentials, which may read the metadata service or call STS) runs in a
worker thread, and a token still within its TTL is returned on the loop as it is.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from botocore.credentials import ReadOnlyCredentials

from flexiai.circuit_breaker.stores._iam import ElastiCacheIAMProvider
from flexiai.testing.clock import FakeClock
from tests.circuit_breaker.test_iam import CountingCredentials


class _ThreadNoting(CountingCredentials):
    """Notes the thread each signing ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        self.threads.append(threading.get_ident())
        return super().get_frozen_credentials()


class _CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_tokens_are_signed_in_a_thread_and_reused_on_the_loop() -> None:
    credentials = _ThreadNoting()
    clock = FakeClock()
    iam = ElastiCacheIAMProvider(
        "app-user", "my-cache", "eu-west-1", credentials=credentials, clock=clock, token_ttl=60
    )
    executor = _CountingExecutor(max_workers=1)

    async def scenario() -> tuple[int, list[tuple[str, str]]]:
        asyncio.get_running_loop().set_default_executor(executor)
        loop_thread = threading.get_ident()
        got = [await iam.get_credentials_async() for _ in range(3)]  # one signing, then reuse
        clock.advance(61)  # the token's TTL has passed: signed again
        got.append(await iam.get_credentials_async())
        return loop_thread, got

    try:
        loop_thread, got = asyncio.run(scenario())
    finally:
        executor.shutdown()
    assert credentials.signings == 2 and executor.submitted == 2
    assert loop_thread not in credentials.threads  # never signed on the loop's thread
    assert {user for user, _ in got} == {"app-user"}
    assert got[0] == got[1] == got[2]  # the cached token (the re-signed one may match it)
    assert got[0][1].startswith("my-cache/?Action=connect")
