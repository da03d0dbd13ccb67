"""Every error flexiai raises, rooted in one class so callers can catch at the level they need.

    FlexiAIError
    ├── ConfigError                  bad config or environment variable (also a ValueError)
    ├── SecretResolutionError        an api_key reference (secretsmanager:/ssm:) could not be read
    ├── ProviderError                one provider attempt failed
    │   ├── ProviderTimeout              the attempt ran out of time          retried, counts
    │   ├── ProviderConnectionError      no connection / connection dropped   retried, counts
    │   ├── RateLimited                  HTTP 429, carries retry_after        retried, counts
    │   ├── ProviderServerError          HTTP 5xx                             retried, counts
    │   ├── MalformedResponseError       2xx with a body we cannot read       retried, counts
    │   ├── ProviderAuthError            HTTP 401/403                         next provider, counts
    │   └── InvalidRequestError          HTTP 400/422: fails everywhere       raised to the caller
    ├── CircuitOpenError             a provider was skipped because its breaker is open
    ├── AllProvidersFailedError      every provider failed or was skipped; lists each attempt
    ├── DeadlineExceededError        not enough time left (Lambda) to make another attempt
    └── StateStoreError              the shared store (Redis) failed; never reaches a request

Messages never contain an API key: provider errors carry the provider's message after it
has been passed through ``redact``, and nothing here formats a config object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flexiai.circuit_breaker import BreakerSnapshot

__all__ = [
    "AllProvidersFailedError",
    "AttemptRecord",
    "CircuitOpenError",
    "ConfigError",
    "DeadlineExceededError",
    "FlexiAIError",
    "InvalidRequestError",
    "MalformedResponseError",
    "ProviderAuthError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderServerError",
    "ProviderTimeout",
    "RateLimited",
    "SecretResolutionError",
    "StateStoreError",
]


class FlexiAIError(Exception):
    """Root of every error flexiai raises."""


class ConfigError(FlexiAIError, ValueError):
    """Invalid configuration; the message names the field or the environment variable."""


class SecretResolutionError(FlexiAIError):
    """An ``api_key`` reference could not be resolved. Names the reference, never the value."""

    def __init__(self, reference: str, provider: str, reason: str) -> None:
        self.reference = reference
        self.provider = provider
        self.reason = reason
        super().__init__(
            f"could not resolve api_key reference {reference!r} for provider {provider!r}: {reason}"
        )


class ProviderError(FlexiAIError):
    """One attempt against one provider failed.

    ``retryable`` says whether the same provider may be tried again; ``counts_toward_breaker``
    says whether the failure is evidence that the provider is unhealthy.
    """

    retryable: bool = False
    counts_toward_breaker: bool = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = None,
    ) -> None:
        self.provider = provider
        self.status_code = status_code
        self.message = message
        status = f" (HTTP {status_code})" if status_code is not None else ""
        super().__init__(f"{provider}{status}: {message}")


class ProviderTimeout(ProviderError):
    retryable = True


class ProviderConnectionError(ProviderError):
    retryable = True


class ProviderServerError(ProviderError):
    retryable = True


class MalformedResponseError(ProviderError):
    """The provider answered 2xx with a body that is not the documented shape."""

    retryable = True


class RateLimited(ProviderError):
    """HTTP 429. ``retry_after`` is in seconds when the provider said how long to wait."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, provider=provider, status_code=status_code)


class ProviderAuthError(ProviderError):
    """401/403: this provider will not answer us, but another one may."""

    retryable = False


class InvalidRequestError(ProviderError):
    """400/422: the request itself is wrong, so no other provider would accept it either."""

    retryable = False
    counts_toward_breaker = False


class CircuitOpenError(FlexiAIError):
    """A provider was skipped because its breaker does not admit calls."""

    def __init__(self, snapshot: BreakerSnapshot) -> None:
        self.snapshot = snapshot
        #: The short form an attempt listing shows.
        self.message = f"circuit {snapshot.state.value}"
        super().__init__(f"circuit for {snapshot.provider!r} is {snapshot.state.value}")


class DeadlineExceededError(FlexiAIError):
    """Too little time is left (for example before Lambda's timeout) to make an attempt."""

    def __init__(self, remaining: float, needed: float) -> None:
        self.remaining = remaining
        self.needed = needed
        #: The short form an attempt listing shows.
        self.message = "not enough time left for an attempt"
        super().__init__(
            f"deadline too close: {remaining * 1000:.0f} ms left, "
            f"an attempt needs at least {needed * 1000:.0f} ms"
        )


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """What happened to one provider during one request: the typed error it ended with
    (``ProviderError``, ``SecretResolutionError``, or for a provider never called,
    ``CircuitOpenError`` or ``DeadlineExceededError``). Decide with ``isinstance`` on
    ``error``; ``error_type``, ``message`` and ``status_code`` are for logs and JSON."""

    provider: str
    error: FlexiAIError
    skipped: bool = False

    @property
    def error_type(self) -> str:
        return type(self.error).__name__

    @property
    def message(self) -> str:
        return str(getattr(self.error, "message", self.error))

    @property
    def status_code(self) -> int | None:
        status: int | None = getattr(self.error, "status_code", None)
        return status


class AllProvidersFailedError(FlexiAIError):
    """Every provider failed or was skipped.

    ``retry_after`` is the number of seconds until the earliest open breaker may be probed,
    when every provider was skipped for an open breaker (the basis for an HTTP 503).
    """

    def __init__(self, attempts: list[AttemptRecord], *, retry_after: float | None = None) -> None:
        self.attempts = attempts
        self.retry_after = retry_after
        lines = "; ".join(
            f"{a.provider}: {a.error_type}"
            + (f" HTTP {a.status_code}" if a.status_code is not None else "")
            + f" ({a.message})"
            for a in attempts
        )
        super().__init__(f"all providers failed: {lines}" if attempts else "no provider to try")

    @property
    def all_circuits_open(self) -> bool:
        return bool(self.attempts) and all(
            isinstance(a.error, CircuitOpenError) for a in self.attempts
        )


class StateStoreError(FlexiAIError):
    """The shared breaker store failed. Caught inside flexiai; requests fall back to local state."""
