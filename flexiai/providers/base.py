"""What a provider adapter is: turn a ``ChatRequest`` into one HTTP exchange and back.

HTTP adapters are sans-I/O: ``build_request`` and ``parse_response`` are pure, and
``HttpProvider`` sends the request through the client's shared httpx pool, once for the
sync API and once for the async one. Every transport and status error becomes a typed
``ProviderError`` in exactly one place, ``HttpProvider.classify_error``, which an adapter
may extend (Gemini does).

Every attempt ends by its timeout, whatever the peer does: the exchange runs under
``flexiai._deadline.attempt_deadline`` (sync: every socket operation of the pool is cut to
the time left, see ``_http``; async: a cancel scope), and the body is read in chunks, at most
``MAX_RESPONSE_BYTES`` of it. A body that cannot be used (not JSON, not UTF-8, nested past
the decoder's recursion, too large, the wrong shape, numbers Python cannot hold) is a
``MalformedResponseError``; a request that cannot be encoded (a lone surrogate) is an
``InvalidRequestError`` that is never sent.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, NoReturn

import httpx

from flexiai._deadline import attempt_deadline
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
from flexiai.providers.transport import HttpPool

__all__ = [
    "MAX_RESPONSE_BYTES",
    "ApiKeySource",
    "ChatRequest",
    "HttpProvider",
    "HttpRequestSpec",
    "Provider",
    "error_class_for_status",
    "parse_retry_after",
]

#: The most of a response body an adapter reads (after Content-Encoding is undone): a chat
#: answer is kilobytes; a body past this is refused as malformed, not buffered.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024

#: What reading an unexpected body can raise, in an adapter or in the JSON decoder:
#: ``RecursionError`` for absurd nesting, ``ArithmeticError`` for ``int(Infinity)``.
_UNREADABLE = (
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
    ArithmeticError,
    RecursionError,
)

_NOT_JSON: Any = object()


def _decode_json(raw: bytes) -> Any:
    """The body parsed as JSON (UTF-8, or the UTF-16/32 that RFC 8259 detection allows), or
    ``_NOT_JSON``: undecodable bytes, bad syntax, numbers past Python's digit limit, or
    nesting deeper than the decoder recurses."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        return _NOT_JSON


def _shape_error(exc: BaseException) -> str:
    try:
        detail = str(exc)[:200]
    except Exception:  # an exception whose text cannot be rendered
        detail = ""
    return f"unexpected response shape ({type(exc).__name__}: {detail})"[:300]


#: Returns the provider's API key, resolving a secretsmanager:/ssm: reference on first use.
ApiKeySource = Callable[[], str | None]


# A NamedTuple, not a frozen dataclass: an internal record on the Lambda cold-start path,
# and python3.12 creates a NamedTuple class in ~0.1 ms, a frozen slotted dataclass in ~0.6.
class ChatRequest(NamedTuple):
    messages: list[ChatMessage]
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    options: Mapping[str, Any] = MappingProxyType({})  # read-only: one default for all


class HttpRequestSpec(NamedTuple):
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
            seconds = when.timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    if not math.isfinite(seconds):  # NaN, or "inf"/"1e309": not a wait anyone can honour
        return None
    return max(0.0, seconds)


def error_class_for_status(status: int | None) -> type[ProviderError]:
    """Which failure an HTTP status is: the one statement of it, for every adapter (Bedrock's
    botocore errors carry the same statuses). Unknown statuses are the server's problem."""
    if status == 429:
        return RateLimited
    if status in (401, 403):
        return ProviderAuthError
    if status in (400, 404, 409, 413, 422):
        return InvalidRequestError
    if status == 408:
        return ProviderTimeout
    return ProviderServerError


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
        started = time.perf_counter()
        # The attempt's deadline covers everything below, including resolving the API key;
        # the sync pool's sockets read it before every operation (see ``transport``).
        with attempt_deadline(timeout) as ends_at:
            spec = self.build_request(request)
            http = self._http.sync()
            outgoing = self._outgoing(http, spec, max(0.001, ends_at - time.monotonic()))
            try:
                response = http.send(outgoing, stream=True)
                try:
                    raw = self._read_body(response, response.iter_bytes(), ends_at)
                finally:
                    response.close()
            except httpx.HTTPError as exc:
                self._raise_transport(exc)
        return self._finish(response, raw, started)

    async def acomplete(self, request: ChatRequest, *, timeout: float) -> UnifiedResponse:
        import anyio  # httpx's own dependency; imported here to keep it off the cold start

        from flexiai._loop_turns import take_turn  # asyncio: imported by async callers only

        started = time.perf_counter()
        with attempt_deadline(timeout) as ends_at:
            spec = self.build_request(request)
            http = self._http.async_()
            outgoing = self._outgoing(http, spec, max(0.001, ends_at - time.monotonic()))
            try:
                # A cancel scope ends the exchange at its deadline however the peer paces
                # its bytes: httpx's own timeouts are per read.
                with anyio.fail_after(max(0.0, ends_at - time.monotonic())):
                    response = await http.send(outgoing, stream=True)
                    try:
                        # Reading the body, and handing the connection back to the pool
                        # (which scans every pooled connection), are a burst's costliest
                        # steps: each in its turn.
                        await take_turn()
                        raw = await self._aread_body(response, ends_at)
                        await take_turn()
                    finally:
                        await response.aclose()
            except TimeoutError:
                raise ProviderTimeout(
                    "timed out (the attempt's deadline passed)", provider=self.name
                ) from None
            except httpx.HTTPError as exc:
                self._raise_transport(exc)
        return self._finish(response, raw, started)

    # -- the exchange, shared by both APIs -------------------------------------------------

    def _outgoing(
        self, http: httpx.Client | httpx.AsyncClient, spec: HttpRequestSpec, timeout: float
    ) -> httpx.Request:
        """The request as bytes. What cannot be sent as JSON fails everywhere (a lone
        surrogate in a message, NaN, a value nested deeper than the encoder recurses):
        ``InvalidRequestError``, raised to the caller rather than failed over."""
        try:
            content = json.dumps(
                spec.json, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode("utf-8")
        except (ValueError, TypeError, RecursionError) as exc:
            # UnicodeEncodeError is a ValueError; its text quotes the offending character.
            reason = "a string is not valid Unicode" if isinstance(exc, UnicodeError) else exc
            raise InvalidRequestError(
                f"the request cannot be encoded as JSON ({type(exc).__name__}: {reason})"[:300],
                provider=self.name,
            ) from None
        try:
            return http.build_request(
                spec.method, spec.url, headers=spec.headers, content=content, timeout=timeout
            )
        except (httpx.InvalidURL, ValueError, TypeError) as exc:  # a bad URL or header
            raise ProviderConnectionError(
                self._redact(f"cannot build the HTTP request ({type(exc).__name__})"),
                provider=self.name,
            ) from None

    def _check_length(self, response: httpx.Response) -> None:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise MalformedResponseError(
                f"response body too large ({declared} bytes declared, limit {MAX_RESPONSE_BYTES})",
                provider=self.name,
                status_code=response.status_code,
            )

    def _add_chunk(
        self, parts: list[bytes], size: int, chunk: bytes, response: httpx.Response
    ) -> int:
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise MalformedResponseError(
                f"response body too large (over {MAX_RESPONSE_BYTES} bytes)",
                provider=self.name,
                status_code=response.status_code,
            )
        parts.append(chunk)
        return size

    def _read_body(
        self, response: httpx.Response, chunks: Iterable[bytes], ends_at: float
    ) -> bytes:
        """The (decoded) body, at most ``MAX_RESPONSE_BYTES``, read before ``ends_at``. The
        deadline check between chunks also bounds transports that are not the pool's own."""
        self._check_length(response)
        parts: list[bytes] = []
        size = 0
        for chunk in chunks:
            size = self._add_chunk(parts, size, chunk, response)
            if time.monotonic() > ends_at:
                raise ProviderTimeout(
                    "timed out reading the body (the attempt's deadline passed)",
                    provider=self.name,
                )
        return b"".join(parts)

    async def _aread_body(self, response: httpx.Response, ends_at: float) -> bytes:
        self._check_length(response)
        parts: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size = self._add_chunk(parts, size, chunk, response)
        return b"".join(parts)

    def _redact(self, text: str) -> str:
        """Providers sometimes echo the key they rejected; never let it into an error."""
        key = self._api_key()
        if key and len(key) >= 4 and key in text:
            text = text.replace(key, "[redacted]")
        return text

    def _raise_transport(self, exc: httpx.HTTPError) -> NoReturn:
        if isinstance(exc, httpx.TimeoutException):
            raise ProviderTimeout(f"timed out ({type(exc).__name__})", provider=self.name) from exc
        if isinstance(exc, httpx.DecodingError):  # a Content-Encoding that does not decode
            raise MalformedResponseError(
                "response body does not decode (Content-Encoding)", provider=self.name
            ) from exc
        raise ProviderConnectionError(
            f"transport error ({type(exc).__name__})", provider=self.name
        ) from exc

    def _finish(self, response: httpx.Response, raw: bytes, started: float) -> UnifiedResponse:
        status = response.status_code
        body = _decode_json(raw)
        if status >= 300 or status < 200:
            readable = None if body is _NOT_JSON else body
            try:
                error = self.classify_error(response, readable)
            except _UNREADABLE:  # an error body shaped to trip an adapter's own reading
                error = HttpProvider.classify_error(self, response, None)
            raise error
        if body is _NOT_JSON:
            raise MalformedResponseError(
                "response body is not JSON (or not UTF-8, or nested too deeply)",
                provider=self.name,
                status_code=status,
            )
        try:
            result = self.parse_body(body)
        except ProviderError:
            raise
        except _UNREADABLE as exc:
            raise MalformedResponseError(
                self._redact(_shape_error(exc)),
                provider=self.name,
                status_code=status,
            ) from None
        latency_ms = (time.perf_counter() - started) * 1000
        result.metadata = result.metadata.model_copy(update={"provider_latency_ms": latency_ms})
        return result

    def classify_error(self, response: httpx.Response, body: Any) -> ProviderError:
        status = response.status_code
        message = self._redact(self.error_message(body))
        kind = error_class_for_status(status)
        if kind is RateLimited:
            return RateLimited(
                message,
                provider=self.name,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if kind is ProviderServerError and status < 500:
            message = f"unexpected status: {message}"
        return kind(message, provider=self.name, status_code=status)
