"""Amazon Bedrock through the Converse API (``bedrock-runtime`` ``converse``), one request
shape for every model family Bedrock hosts.

Bedrock requests are SigV4-signed, so this adapter goes through boto3 rather than the shared
httpx pool; credentials come from the usual AWS chain (environment, profile, instance or
Lambda role) and ``api_key`` is never read. boto3 is imported on first use only: importing
flexiai, or this module, never pays for it.

Timeouts: botocore fixes timeouts per client, while flexiai chooses one per attempt (it shrinks
near a Lambda deadline). The adapter keeps a few clients keyed by the attempt timeout rounded
to 0.1 s (at most ``_MAX_CLIENTS``, least recently used evicted) and gives each
``connect_timeout = read_timeout = timeout``. ``read_timeout`` bounds each socket read, not the
whole exchange, which for one non-streamed JSON answer is the wait for the reply. Every client
makes exactly one attempt (``total_max_attempts=1``): retries and backoff are flexiai's job.

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
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

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
from flexiai.providers._http import HttpPool
from flexiai.providers.base import ApiKeySource, ChatRequest, Provider, parse_retry_after

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

__all__ = ["BedrockProvider"]

_TRANSPORT_OPTIONS = {"region", "profile", "inferenceConfig"}
_MAX_CLIENTS = 8

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
        self._clients: OrderedDict[float, BedrockRuntimeClient] = OrderedDict()
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
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedResponseError(
                f"unexpected response shape ({type(exc).__name__}: {exc})"[:300],
                provider=self.name,
            ) from None

    # -- I/O -------------------------------------------------------------------------------

    def complete(self, request: ChatRequest, *, timeout: float) -> UnifiedResponse:
        kwargs = self.build_request(request)
        started = time.perf_counter()
        with self._botocore_errors():
            client = self._client(timeout)
        with self._botocore_errors(response=True):
            raw = client.converse(**kwargs)
        result = self.parse_response(raw)
        result.metadata.setdefault("provider_latency_ms", (time.perf_counter() - started) * 1000)
        return result

    async def acomplete(self, request: ChatRequest, *, timeout: float) -> UnifiedResponse:
        # boto3 is blocking; its own read/connect timeouts bound how long the thread runs.
        return await asyncio.to_thread(self.complete, request, timeout=timeout)

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()

    def _client(self, timeout: float) -> BedrockRuntimeClient:
        key = max(0.1, round(timeout, 1))
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
            # Creating clients from one session is not thread-safe: keep it under the lock.
            client = self._new_client(key)
            self._clients[key] = client
            evicted = None
            if len(self._clients) > _MAX_CLIENTS:
                evicted = self._clients.popitem(last=False)[1]
        if evicted is not None:
            evicted.close()  # in-flight calls keep their connection; idle ones are closed
        return client

    def _new_client(self, timeout: float) -> BedrockRuntimeClient:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise self._missing_boto() from exc
        opts = self.config.options
        if self._session is None:
            self._session = boto3.session.Session(profile_name=opts.get("profile"))
        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=20,
            user_agent_extra="flexiai",
        )
        return self._session.client(
            "bedrock-runtime",
            region_name=opts.get("region") or os.environ.get("AWS_REGION") or None,
            endpoint_url=self.config.base_url,
            config=config,
        )

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
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
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
        kind = _BY_CODE.get(code) or _kind_for_status(status)
        if kind is RateLimited:
            headers = meta.get("HTTPHeaders") or {}
            return RateLimited(
                message,
                provider=self.name,
                status_code=status,
                retry_after=parse_retry_after(headers.get("retry-after")),
            )
        return kind(message, provider=self.name, status_code=status)


def _kind_for_status(status: int | None) -> type[ProviderError]:
    """The same status rules as ``HttpProvider.classify_error``."""
    if status == 429:
        return RateLimited
    if status in (401, 403):
        return ProviderAuthError
    if status in (400, 404, 409, 413, 422):
        return InvalidRequestError
    if status == 408:
        return ProviderTimeout
    return ProviderServerError
