"""Amazon Bedrock through the Converse API (``bedrock-runtime`` ``converse``), one request
shape for every model family Bedrock hosts.

Bedrock requests are SigV4-signed, so this adapter goes through boto3 rather than the shared
httpx pool; credentials come from the usual AWS chain (environment, profile, instance or
Lambda role) and ``api_key`` is never read. boto3 is imported on first use only: importing
flexiai, or this module, never pays for it.

Deadlines: botocore signs the request, and the adapter sends it. botocore's own timeouts apply
per socket read, so a server that trickles its answer a byte at a time could hold a call open
far past its timeout. The adapter therefore answers botocore's ``before-send`` event (the
documented hook for supplying a response) by sending the signed request through the client's
shared httpx pool under the attempt's deadline, the same way the HTTP adapters do: connect,
TLS, headers and body all end by the attempt's timeout, and the body is capped at
``MAX_RESPONSE_BYTES``. What the deadline does not cover: finding credentials (botocore's
container/instance metadata providers have their own short timeouts) and DNS resolution.
TLS is verified with httpx's defaults (certifi, or ``SSL_CERT_FILE``), not ``AWS_CA_BUNDLE``.
The client makes exactly one attempt (``total_max_attempts=1``): retries and backoff are
flexiai's job.

The async path (``acomplete``) never blocks the event loop. botocore has no asyncio client,
so it uses botocore's own pieces for the Converse operation (``_ConverseSigner``: the
service model's serializer with parameter validation, SigV4, and the response parser) on
the loop, which are CPU-only, and sends the signed request through the shared
``httpx.AsyncClient`` under an anyio cancel scope. What may do I/O runs in a worker thread:
building the botocore client (it reads the service model from disk) and resolving
credentials, once, then refreshing them when botocore says they are due.

Errors are mapped in one place, ``_botocore_errors``, to the same ``ProviderError`` tree as the
HTTP adapters (throttling is ``RateLimited``, a validation error is ``InvalidRequestError``,
...), by error code first and HTTP status second.

``options``: ``region`` (else ``AWS_REGION``, else botocore's own resolution), ``profile``.
Any other option is passed to ``converse`` as-is (``additionalModelRequestFields``,
``guardrailConfig``, ...); ``inferenceConfig`` is merged into the generated one. ``base_url``
becomes the client's ``endpoint_url`` (VPC endpoints, local test servers).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flexiai._deadline import attempt_deadline, remaining_time
from flexiai.exceptions import (
    ConfigError,
    InvalidRequestError,
    MalformedResponseError,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeout,
    RateLimited,
)
from flexiai.models import ProviderConfig, UnifiedResponse, Usage
from flexiai.providers.base import (
    MAX_RESPONSE_BYTES,
    ApiKeySource,
    ChatRequest,
    Provider,
    error_class_for_status,
    parse_retry_after,
)
from flexiai.providers.transport import HttpPool

if TYPE_CHECKING:
    import boto3
    from botocore.awsrequest import AWSPreparedRequest, AWSResponse
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

__all__ = ["BedrockProvider"]

_TRANSPORT_OPTIONS = {"region", "profile", "inferenceConfig"}

#: Bedrock's error codes; an unknown code is classified by its HTTP status like the others.
_BY_CODE: dict[str, type[ProviderError]] = {
    "ThrottlingException": RateLimited,
    "TooManyRequestsException": RateLimited,
    "ServiceQuotaExceededException": RateLimited,
    "AccessDeniedException": ProviderAuthError,
    "UnrecognizedClientException": ProviderAuthError,
    "InvalidSignatureException": ProviderAuthError,
    "ExpiredTokenException": ProviderAuthError,
    "InvalidClientTokenId": ProviderAuthError,
    "MissingAuthenticationTokenException": ProviderAuthError,
    "ValidationException": InvalidRequestError,
    "ResourceNotFoundException": InvalidRequestError,
    "ModelTimeoutException": ProviderTimeout,
    "InternalServerException": ProviderServerError,
    "ServiceUnavailableException": ProviderServerError,
    "ModelNotReadyException": ProviderServerError,
    "ModelErrorException": ProviderServerError,
}


class BedrockProvider(Provider):
    def __init__(self, config: ProviderConfig, *, http: HttpPool, api_key: ApiKeySource) -> None:
        super().__init__(config, http=http, api_key=api_key)
        self._session: boto3.session.Session | None = None
        self._boto: BedrockRuntimeClient | None = None
        self._signer: _ConverseSigner | None = None
        self._lock = threading.Lock()

    # -- sans-I/O halves -------------------------------------------------------------------

    def build_request(self, request: ChatRequest) -> dict[str, Any]:
        """The keyword arguments of ``converse``."""
        opts = {**self.config.options, **request.options}
        system = [request.system] if request.system else []
        system.extend(m.content for m in request.messages if m.role == "system")
        kwargs: dict[str, Any] = {
            "modelId": self.config.model,
            "messages": [
                {"role": m.role, "content": [{"text": m.content}]}
                for m in request.messages
                if m.role != "system"
            ],
        }
        if system:
            kwargs["system"] = [{"text": text} for text in system]
        inference: dict[str, Any] = {}
        if request.max_tokens is not None:
            inference["maxTokens"] = request.max_tokens
        if request.temperature is not None:
            inference["temperature"] = request.temperature
        inference.update(dict(opts.get("inferenceConfig", {})))
        if inference:
            kwargs["inferenceConfig"] = inference
        kwargs.update({k: v for k, v in opts.items() if k not in _TRANSPORT_OPTIONS})
        return kwargs

    def parse_response(self, raw: Mapping[str, Any]) -> UnifiedResponse:
        """Map a ``converse`` result; raises ``MalformedResponseError`` on any other shape."""
        try:
            blocks = raw["output"]["message"]["content"]
            if not isinstance(blocks, list):
                raise TypeError("output.message.content is not a list")
            texts: list[str] = []
            for block in blocks:
                if "text" in block:
                    if not isinstance(block["text"], str):
                        raise TypeError("output.message.content[].text is not a string")
                    texts.append(block["text"])
            usage = raw.get("usage") or {}
            prompt = int(usage.get("inputTokens", 0))
            completion = int(usage.get("outputTokens", 0))
            return UnifiedResponse(
                content="".join(texts),
                model=self.config.model,
                provider=self.name,
                usage=Usage(
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    total_tokens=int(usage.get("totalTokens", prompt + completion)),
                ),
                finish_reason=raw.get("stopReason"),
            )
        except (LookupError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            raise MalformedResponseError(
                f"unexpected response shape ({type(exc).__name__}: {exc})"[:300],
                provider=self.name,
            ) from None

    # -- I/O -------------------------------------------------------------------------------

    def complete(self, request: ChatRequest, *, timeout: float) -> UnifiedResponse:
        kwargs = self.build_request(request)
        _check_encodable(kwargs, self.name)
        started = time.perf_counter()
        with self._botocore_errors():
            client = self._client()  # local work: loading botocore's model, once
        with attempt_deadline(timeout), self._botocore_errors(response=True):
            raw = client.converse(**kwargs)
        result = self.parse_response(raw)
        latency_ms = (time.perf_counter() - started) * 1000
        result.metadata = result.metadata.model_copy(update={"provider_latency_ms": latency_ms})
        return result

    async def acomplete(self, request: ChatRequest, *, timeout: float) -> UnifiedResponse:
        import anyio  # httpx's own dependency; imported here to keep it off the cold start
        import httpx

        kwargs = self.build_request(request)
        _check_encodable(kwargs, self.name)
        started = time.perf_counter()
        with self._botocore_errors():
            # Local work, once, outside the attempt's time, as for the blocking client.
            signer = self._signer
            if signer is None:
                signer = await asyncio.to_thread(self._converse_signer)
        with attempt_deadline(timeout) as ends_at:
            with self._botocore_errors():
                signed = await signer.sign(kwargs)
            http = self._http.async_()
            try:
                # A cancel scope ends the exchange at its deadline however the peer paces
                # its bytes: httpx's own timeouts are per read.
                with anyio.fail_after(max(0.0, ends_at - time.monotonic())):
                    body: Any = signed.body  # bytes: the serializer's JSON
                    outgoing = http.build_request(
                        signed.method,
                        signed.url,
                        headers=list(signed.headers.items()),
                        content=body,
                        timeout=max(0.001, ends_at - time.monotonic()),
                    )
                    response = await http.send(outgoing, stream=True)
                    try:
                        parts: list[bytes] = []
                        size = self._check_declared(response.headers, response.status_code)
                        async for chunk in response.aiter_bytes():
                            size = self._add_chunk(parts, size, chunk, response.status_code)
                    finally:
                        await response.aclose()
            except TimeoutError:
                raise ProviderTimeout(
                    "timed out (the attempt's deadline passed)", provider=self.name
                ) from None
            except httpx.TimeoutException as exc:
                raise ProviderTimeout(
                    f"timed out ({type(exc).__name__})", provider=self.name
                ) from exc
            except httpx.HTTPError as exc:
                raise ProviderConnectionError(
                    f"transport error ({type(exc).__name__})", provider=self.name
                ) from exc
        data = b"".join(parts)
        # httpx decoded any Content-Encoding already: the parser must not see it.
        headers = {k: v for k, v in response.headers.items() if k != "content-encoding"}
        status = response.status_code
        if (unreadable := self._unreadable_error(status, headers, data, decoded=True)) is not None:
            raise unreadable
        with self._botocore_errors(response=True):
            parsed = signer.parse(status, headers, data)
        if status >= 300:
            raise self._from_client_error(parsed)
        result = self.parse_response(parsed)
        latency_ms = (time.perf_counter() - started) * 1000
        result.metadata = result.metadata.model_copy(update={"provider_latency_ms": latency_ms})
        return result

    def _converse_signer(self) -> _ConverseSigner:
        """botocore's Converse pieces and the credentials, made once (in a worker thread
        when called from ``acomplete``: both may read files or the network)."""
        client = self._client()
        with self._lock:
            if self._signer is None:
                assert self._session is not None  # made with the client
                self._signer = _ConverseSigner(client, self._session.get_credentials())
            return self._signer

    def _check_declared(self, headers: Mapping[str, str], status: int) -> int:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise self._too_large(status)
        return 0

    def _add_chunk(self, parts: list[bytes], size: int, chunk: bytes, status: int) -> int:
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise self._too_large(status)
        parts.append(chunk)
        return size

    def _unreadable_error(
        self, status: int, headers: Mapping[str, Any], data: bytes, *, decoded: bool
    ) -> ProviderError | None:
        """botocore's error parser fails on an error body that is not a JSON object, which
        made a 400 or a 429 "malformed" (retried, failed over); the status and the
        error-type header still say what failed, as they do for every other adapter."""
        if status < 300 or (not decoded and "content-encoding" in headers) or _is_object(data):
            return None
        code = str(headers.get("x-amzn-errortype", "")).split(":", 1)[0]
        return self._from_client_error(
            {
                "Error": {"Code": code, "Message": "unreadable error body"},
                "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": dict(headers)},
            }
        )

    def _send(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        """botocore's ``before-send`` hook: send the signed request through the shared httpx
        pool under the attempt's deadline, and hand botocore the response to parse."""
        import httpx
        from botocore.awsrequest import AWSResponse

        body = request.body
        if body is not None and not isinstance(body, bytes | str):
            body = bytes(body) if isinstance(body, bytearray) else body.read()  # file-like
        left = remaining_time()
        http = self._http.sync()
        try:
            outgoing = http.build_request(
                request.method,
                request.url,
                headers=list(request.headers.items()),
                content=body,
                timeout=left if left is not None and left > 0 else 60.0,
            )
            response = http.send(outgoing, stream=True)
            try:
                parts: list[bytes] = []
                size = self._check_declared(response.headers, response.status_code)
                for chunk in response.iter_raw():  # botocore undoes any Content-Encoding
                    size = self._add_chunk(parts, size, chunk, response.status_code)
                    if (now := remaining_time()) is not None and now <= 0:
                        raise ProviderTimeout(
                            "timed out reading the body (the attempt's deadline passed)",
                            provider=self.name,
                        )
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(f"timed out ({type(exc).__name__})", provider=self.name) from exc
        except httpx.HTTPError as exc:
            raise ProviderConnectionError(
                f"transport error ({type(exc).__name__})", provider=self.name
            ) from exc
        headers: Any = dict(response.headers)  # AWSResponse wraps any mapping in HeadersDict
        data = b"".join(parts)
        status = response.status_code
        unreadable = self._unreadable_error(status, response.headers, data, decoded=False)
        if unreadable is not None:
            raise unreadable
        return AWSResponse(request.url, status, headers, _Body(data))

    def _too_large(self, status: int) -> MalformedResponseError:
        return MalformedResponseError(
            f"response body too large (limit {MAX_RESPONSE_BYTES} bytes)",
            provider=self.name,
            status_code=status,
        )

    def close(self) -> None:
        with self._lock:
            client, self._boto = self._boto, None
            self._signer = None
        if client is not None:
            client.close()

    def _client(self) -> BedrockRuntimeClient:
        """The one botocore client: it signs and parses; ``_send`` does the I/O, so its own
        timeouts (which botocore fixes per client) never apply and one client serves every
        attempt timeout."""
        with self._lock:
            # Creating clients from one session is not thread-safe: keep it under the lock.
            if self._boto is None:
                self._boto = self._new_client()
            return self._boto

    def _new_client(self) -> BedrockRuntimeClient:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise self._missing_boto() from exc
        opts = self.config.options
        if self._session is None:
            self._session = boto3.session.Session(profile_name=opts.get("profile"))
        config = Config(
            connect_timeout=60,  # unused: _send sends every request under the deadline
            read_timeout=60,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=20,
            user_agent_extra="flexiai",
        )
        client = self._session.client(
            "bedrock-runtime",
            region_name=opts.get("region") or os.environ.get("AWS_REGION") or None,
            endpoint_url=self.config.base_url,
            config=config,
        )
        hook: Any = self._send  # a before-send handler returns the response to use
        client.meta.events.register("before-send.bedrock-runtime", hook)
        return client

    def _missing_boto(self) -> ConfigError:
        return ConfigError(
            f"provider {self.name!r} is a Bedrock provider: install boto3 "
            "(pip install 'flexiai[aws]')"
        )

    @contextmanager
    def _botocore_errors(self, *, response: bool = False) -> Iterator[None]:
        """Every botocore failure becomes a ``ProviderError``, chained to the original.

        With ``response=True`` (around the call itself) plain ``TypeError``/``AttributeError``
        and the like count as an unreadable response too: botocore's parser raises them when a
        2xx body does not fit the service model (a string where a list belongs).
        """
        try:
            from botocore.exceptions import (
                BotoCoreError,
                ClientError,
                ConnectTimeoutError,
                NoCredentialsError,
                NoRegionError,
                ParamValidationError,
                PartialCredentialsError,
                ReadTimeoutError,
            )
            from botocore.parsers import ResponseParserError
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise self._missing_boto() from exc

        try:
            yield
        except ClientError as exc:
            raise self._from_client_error(exc.response) from exc
        except (ReadTimeoutError, ConnectTimeoutError) as exc:
            raise ProviderTimeout(f"timed out ({type(exc).__name__})", provider=self.name) from exc
        except (NoCredentialsError, PartialCredentialsError, NoRegionError) as exc:
            raise ProviderAuthError(
                f"cannot sign requests ({type(exc).__name__})", provider=self.name
            ) from exc
        except ParamValidationError as exc:
            raise InvalidRequestError(str(exc)[:300], provider=self.name) from exc
        except ResponseParserError as exc:
            raise MalformedResponseError(
                f"unreadable response ({type(exc).__name__})", provider=self.name
            ) from exc
        except BotoCoreError as exc:
            # EndpointConnectionError, ConnectionClosedError and the other transport errors.
            raise ProviderConnectionError(
                f"transport error ({type(exc).__name__})", provider=self.name
            ) from exc
        except (
            AttributeError,
            TypeError,
            LookupError,
            ValueError,
            ArithmeticError,
            RecursionError,  # botocore's JSON parser on a body nested past the recursion limit
        ) as exc:
            if not response:
                raise
            raise MalformedResponseError(
                f"unreadable response ({type(exc).__name__})", provider=self.name
            ) from exc

    def _from_client_error(self, response: Mapping[str, Any]) -> ProviderError:
        error = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        code = str(error.get("Code") or "")
        status = meta.get("HTTPStatusCode")
        status = status if isinstance(status, int) else None
        message = f"{code or 'error'}: {error.get('Message') or 'no error message'}"[:300]
        kind = _BY_CODE.get(code) or error_class_for_status(status)
        if kind is RateLimited:
            headers = meta.get("HTTPHeaders") or {}
            return RateLimited(
                message,
                provider=self.name,
                status_code=status,
                retry_after=parse_retry_after(headers.get("retry-after")),
            )
        return kind(message, provider=self.name, status_code=status)


class _ConverseSigner:
    """The Converse operation as botocore's client does it, minus the sending: serialize
    (with botocore's parameter validation), sign with SigV4, parse. Everything here is
    CPU-only except a credential refresh, which ``sign`` runs in a worker thread."""

    def __init__(self, client: BedrockRuntimeClient, credentials: Any) -> None:
        from botocore.exceptions import NoCredentialsError
        from botocore.parsers import create_parser
        from botocore.serialize import create_serializer

        if credentials is None:
            raise NoCredentialsError()
        meta = client.meta
        protocol = meta.service_model.metadata["protocol"]
        self._operation = meta.service_model.operation_model("Converse")
        self._serializer = create_serializer(protocol, include_validation=True)
        self._parser = create_parser(protocol)
        self._endpoint = meta.endpoint_url
        self._region = meta.region_name
        self._signing_name = meta.service_model.signing_name or "bedrock"
        self._credentials = credentials

    async def sign(self, params: Mapping[str, Any]) -> AWSPreparedRequest:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import create_request_object, prepare_request_dict

        request_dict = self._serializer.serialize_to_request(dict(params), self._operation)
        prepare_request_dict(request_dict, self._endpoint, user_agent="flexiai")
        request = create_request_object(request_dict)
        credentials = self._credentials
        refresh_needed = getattr(credentials, "refresh_needed", None)
        if refresh_needed is not None and refresh_needed():
            frozen = await asyncio.to_thread(credentials.get_frozen_credentials)
        else:
            frozen = credentials.get_frozen_credentials()
        SigV4Auth(frozen, self._signing_name, self._region).add_auth(request)
        prepared: AWSPreparedRequest = request.prepare()
        return prepared

    def parse(self, status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        from botocore.awsrequest import HeadersDict

        response = {"status_code": status, "headers": HeadersDict(headers), "body": body}
        shape: Any = self._operation.output_shape
        parsed: dict[str, Any] = self._parser.parse(response, shape)
        meta = parsed.setdefault("ResponseMetadata", {})
        meta.update(HTTPStatusCode=status, HTTPHeaders=dict(headers))
        return parsed


class _Body:
    """The ``raw`` of a botocore ``AWSResponse``: botocore reads it through ``stream()``."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data

    def read(self, *_: Any, **__: Any) -> bytes:
        data, self._data = self._data, b""
        return data


def _is_object(data: bytes) -> bool:
    """Whether ``data`` is a JSON object, the only error body botocore can parse."""
    try:
        return isinstance(json.loads(data), dict)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the limit
        return False


def _check_encodable(kwargs: dict[str, Any], provider: str) -> None:
    """What botocore could not send as JSON fails everywhere: ``InvalidRequestError``
    (a lone surrogate in a message, NaN, a value nested past the encoder's recursion)."""
    try:
        json.dumps(kwargs, ensure_ascii=False, allow_nan=False, default=_bytes_ok).encode()
    except (ValueError, TypeError, RecursionError) as exc:
        reason = "a string is not valid Unicode" if isinstance(exc, UnicodeError) else exc
        raise InvalidRequestError(
            f"the request cannot be encoded ({type(exc).__name__}: {reason})"[:300],
            provider=provider,
        ) from None


def _bytes_ok(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):  # Converse accepts bytes (images, documents)
        return None
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
