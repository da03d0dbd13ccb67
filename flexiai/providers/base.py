"""What a provider adapter is: turn a ``ChatRequest`` into one HTTP exchange and back.

HTTP adapters are sans-I/O: ``build_request`` and ``parse_response`` are pure, and
``HttpProvider`` sends the request through the client's shared httpx pool, once for the
sync API and once for the async one. Every transport and status error becomes a typed
``ProviderError`` in exactly one place, ``HttpProvider.classify_error``, which an adapter
may extend (Gemini does).
"""

from __future__ import annotations

import email.utils
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import httpx

from flexiai.exceptions import (
    InvalidRequestError,
    MalformedResponseError,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeout,
    RateLimited,
)
from flexiai.models import ChatMessage, ProviderConfig, UnifiedResponse
from flexiai.providers._http import HttpPool

__all__ = [
    "ApiKeySource",
    "ChatRequest",
    "HttpProvider",
    "HttpRequestSpec",
    "Provider",
    "parse_retry_after",
]

#: Returns the provider's API key, resolving a secretsmanager:/ssm: reference on first use.
ApiKeySource = Callable[[], str | None]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: list[ChatMessage]
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HttpRequestSpec:
    method: str
    url: str
    headers: dict[str, str]
    json: dict[str, Any]


class Provider(ABC):
    """One configured endpoint. Built on first use of that provider, then reused."""

    def __init__(self, config: ProviderConfig, *, http: HttpPool, api_key: ApiKeySource) -> None:
        self.config = config
        self.name = config.name
        self._http = http
        self._api_key = api_key

    @abstractmethod
    def complete(self, request: ChatRequest, *, timeout: float) -> UnifiedResponse: ...

    @abstractmethod
    async def acomplete(self, request: ChatRequest, *, timeout: float) -> UnifiedResponse: ...

    def close(self) -> None:  # noqa: B027 - optional hook, most adapters own nothing
        """Release anything the adapter owns beyond the shared HTTP pool."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model={self.config.model!r})"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds < 0:  # NaN or negative
        return 0.0 if seconds == seconds else None
    return seconds


class HttpProvider(Provider):
    """An adapter for a JSON-over-HTTP API."""

    @abstractmethod
    def build_request(self, request: ChatRequest) -> HttpRequestSpec: ...

    @abstractmethod
    def parse_body(self, body: Any) -> UnifiedResponse:
        """Map a 2xx JSON body to a response. Raise ``KeyError``/``TypeError``/``ValueError``
        (or ``MalformedResponseError``) on an unexpected shape."""

    def error_message(self, body: Any) -> str:
        """The provider's own error text, short; never echoes request headers."""
        if isinstance(body, dict):
            err = body.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                return str(err["message"])[:300]
            if isinstance(err, str):
                return err[:300]
            if isinstance(body.get("message"), str):
                return str(body["message"])[:300]
        return "no error message"

    def complete(self, request: ChatRequest, *, timeout: float) -> UnifiedResponse:
        spec = self.build_request(request)
        started = time.perf_counter()
        try:
            response = self._http.sync().request(
                spec.method, spec.url, headers=spec.headers, json=spec.json, timeout=timeout
            )
        except httpx.HTTPError as exc:
            self._raise_transport(exc)
        return self._finish(response, started)

    async def acomplete(self, request: ChatRequest, *, timeout: float) -> UnifiedResponse:
        spec = self.build_request(request)
        started = time.perf_counter()
        try:
            response = await self._http.async_().request(
                spec.method, spec.url, headers=spec.headers, json=spec.json, timeout=timeout
            )
        except httpx.HTTPError as exc:
            self._raise_transport(exc)
        return self._finish(response, started)

    def _redact(self, text: str) -> str:
        """Providers sometimes echo the key they rejected; never let it into an error."""
        key = self._api_key()
        if key and len(key) >= 4 and key in text:
            text = text.replace(key, "[redacted]")
        return text

    def _raise_transport(self, exc: httpx.HTTPError) -> NoReturn:
        if isinstance(exc, httpx.TimeoutException):
            raise ProviderTimeout(f"timed out ({type(exc).__name__})", provider=self.name) from exc
        raise ProviderConnectionError(
            f"transport error ({type(exc).__name__})", provider=self.name
        ) from exc

    def _finish(self, response: httpx.Response, started: float) -> UnifiedResponse:
        body: Any
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if response.status_code >= 300 or response.status_code < 200:
            raise self.classify_error(response, body)
        if body is None:
            raise MalformedResponseError(
                "response body is not JSON", provider=self.name, status_code=response.status_code
            )
        try:
            result = self.parse_body(body)
        except MalformedResponseError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedResponseError(
                self._redact(f"unexpected response shape ({type(exc).__name__}: {exc})"[:300]),
                provider=self.name,
                status_code=response.status_code,
            ) from None
        result.metadata.setdefault("provider_latency_ms", (time.perf_counter() - started) * 1000)
        return result

    def classify_error(self, response: httpx.Response, body: Any) -> ProviderError:
        status = response.status_code
        message = self._redact(self.error_message(body))
        if status == 429:
            return RateLimited(
                message,
                provider=self.name,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if status in (401, 403):
            return ProviderAuthError(message, provider=self.name, status_code=status)
        if status in (400, 404, 409, 413, 422):
            return InvalidRequestError(message, provider=self.name, status_code=status)
        if status == 408:
            return ProviderTimeout(message, provider=self.name, status_code=status)
        if status >= 500:
            return ProviderServerError(message, provider=self.name, status_code=status)
        return ProviderServerError(
            f"unexpected status: {message}", provider=self.name, status_code=status
        )
