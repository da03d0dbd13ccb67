"""A Lambda context object for running handlers outside Lambda (``flexiai invoke``, tests).

It has the attributes the Python runtime's context has and that Powertools reads
(``function_name``, ``memory_limit_in_mb``, ``invoked_function_arn``, ``aws_request_id``,
``log_group_name``...), and ``get_remaining_time_in_millis()`` counts down from the function's
timeout from the moment the context is built, as Lambda's does from the start of the
invocation.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["LocalLambdaContext"]

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "123456789012"  # what sam local uses


class LocalLambdaContext:
    """A stand-in for ``awslambdaric``'s context. ``clock`` (monotonic seconds) is for tests."""

    def __init__(
        self,
        function_name: str = "function",
        *,
        timeout: float = 3.0,
        memory_limit_in_mb: int = 128,
        function_version: str = "$LATEST",
        aws_request_id: str | None = None,
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT,
        log_group_name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.function_name = function_name
        self.function_version = function_version
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = aws_request_id or str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self.log_group_name = log_group_name or f"/aws/lambda/{function_name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self.timeout = timeout
        self._clock = clock
        self._deadline = clock() + timeout

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the timeout; 0 once it has passed (Lambda's never goes negative)."""
        return max(0, int((self._deadline - self._clock()) * 1000))

    def __repr__(self) -> str:
        return (
            f"LocalLambdaContext(function_name={self.function_name!r}, "
            f"aws_request_id={self.aws_request_id!r}, "
            f"remaining_ms={self.get_remaining_time_in_millis()})"
        )
