"""HTTP events in, HTTP responses out: the whole of the sample handlers' logic.

Powertools' event handler (``APIGatewayHttpResolver``) routes the event and builds the
response; this module holds what is flexiai's own: validating a ``/generate`` body (with a
message saying what is wrong, for a 400) and mapping flexiai's errors onto status codes.
``generate_api()`` and ``breaker_status_api()`` are the resolvers the shipped handlers use.
The body is decoded here, not with the event's ``decoded_body``: that decodes base64
leniently (invalid characters are dropped) and raises on bytes that are not UTF-8, where
the caller needs a 400 that says what is wrong.

Events are API Gateway HTTP API payload 2.0 or Lambda Function URL events; anything else
is a 400. The ``POST /generate`` body::

    {"prompt": "Hello"}                    or  {"messages": [{"role": "user", "content": "Hi"}]}
    optional: "system": str, "temperature": number >= 0, "max_tokens": integer >= 1

Answers (JSON):

===  ==========================================================================================
200  ``{content, provider, model, usage, request_id, attempts, failovers}``
400  the body is malformed (the message says how), or a provider rejected the request
     (``InvalidRequestError``, with the provider's message)
502  every provider failed: ``error.attempts`` lists what happened to each (never a key)
503  every provider's breaker is open; ``Retry-After`` says when the first may be probed
504  the invocation ran out of time before any provider answered
===  ==========================================================================================

Errors look like ``{"error": {"type": "DeadlineExceededError", "message": ...}, "request_id"}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from flexiai._deadline import remaining_time
from flexiai.aws._invocation import current_client
from flexiai.exceptions import (
    AllProvidersFailedError,
    DeadlineExceededError,
    InvalidRequestError,
)

if TYPE_CHECKING:
    from flexiai.client import FlexiAI

__all__ = [
    "BadRequestError",
    "GenerateRequest",
    "breaker_status_api",
    "breaker_status_response",
    "error_response",
    "generate_api",
    "generate_response",
    "json_response",
    "parse_generate_request",
]

_ROLES = ("system", "user", "assistant")
#: API Gateway caps a payload at 10 MB and Lambda at 6 MB; a body past this is refused
#: before it is parsed (a base64 body is checked after decoding).
MAX_BODY_CHARS = 6 * 1024 * 1024
_FIELDS = ("prompt", "messages", "system", "temperature", "max_tokens")


class BadRequestError(ValueError):
    """The event's body is not a valid request; the message is shown to the caller."""


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """A valid ``/generate`` body, the prompt already turned into one user message."""

    messages: list[dict[str, str]]
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


# -- requests --------------------------------------------------------------------------------


def read_json_body(event: Mapping[str, Any]) -> Any:
    """The event's body parsed as JSON (base64-decoded first when ``isBase64Encoded``)."""
    if not isinstance(event, Mapping):
        raise BadRequestError("the event is not an HTTP event (expected a JSON object)")
    body = event.get("body")
    if body is None or body == "":
        raise BadRequestError("body is missing: send a JSON object")
    if not isinstance(body, str):
        raise BadRequestError("body must be a string (an HTTP event's body)")
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequestError("body is not valid base64 (isBase64Encoded is true)") from None
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequestError("body is not UTF-8 text") from None
    if len(body) > MAX_BODY_CHARS:
        raise BadRequestError(f"body is too large (over {MAX_BODY_CHARS} characters)")
    try:
        return json.loads(body)
    except ValueError:
        raise BadRequestError("body is not valid JSON") from None
    except RecursionError:  # json nests by recursion: 100,000 '[' overflow it
        raise BadRequestError("body is nested too deeply") from None


def parse_generate_request(event: Mapping[str, Any]) -> GenerateRequest:
    """Validate a ``/generate`` event; ``BadRequestError`` names the first problem found."""
    data = read_json_body(event)
    if not isinstance(data, dict):
        raise BadRequestError("body must be a JSON object")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        names = ", ".join(ascii(k)[:40] for k in unknown[:5])
        raise BadRequestError(f"body has unknown field(s) {names}; known: {', '.join(_FIELDS)}")
    has_prompt, has_messages = "prompt" in data, "messages" in data
    if has_prompt == has_messages:
        raise BadRequestError(
            "body must contain 'prompt' or 'messages'"
            if not has_prompt
            else "body must contain 'prompt' or 'messages', not both"
        )
    if has_prompt:
        prompt = data["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadRequestError("prompt must be a non-empty string")
        _check_text("prompt", prompt)
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = _messages(data["messages"])
    system = data.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise BadRequestError("system must be a string")
        _check_text("system", system)
    temperature = data.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise BadRequestError("temperature must be a number")
        try:
            temperature = float(temperature)
        except OverflowError:  # an integer past the float range
            temperature = math.inf
        if not math.isfinite(temperature) or temperature < 0:
            raise BadRequestError("temperature must be a finite number >= 0")
    max_tokens = data.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise BadRequestError("max_tokens must be an integer >= 1")
    return GenerateRequest(messages, system, temperature, max_tokens)


def _check_text(where: str, text: str) -> None:
    """JSON's ``\\ud800`` escapes decode to lone surrogates, which no provider can be sent
    (they are not Unicode scalar values, so they have no UTF-8 form)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestError(
            f"{where} is not valid Unicode text (a lone surrogate at position {exc.start})"
        ) from None


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadRequestError("messages must be a non-empty list")
    messages: list[dict[str, str]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise BadRequestError(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = item.get("role"), item.get("content")
        if role not in _ROLES:
            raise BadRequestError(f"messages[{i}].role must be one of {', '.join(_ROLES)}")
        if not isinstance(content, str):
            raise BadRequestError(f"messages[{i}].content must be a string")
        _check_text(f"messages[{i}].content", content)
        extra = sorted(set(item) - {"role", "content"})
        if extra:
            names = ", ".join(ascii(k)[:40] for k in extra[:5])
            raise BadRequestError(f"messages[{i}] has unknown field(s) {names}")
        messages.append({"role": role, "content": content})
    return messages


# -- responses -------------------------------------------------------------------------------


def json_response(
    status: int, body: Any, headers: Mapping[str, str] | None = None
) -> Response[str]:
    """A response with a JSON body, for the resolver to turn into API Gateway's shape."""
    return Response(
        status_code=status,
        body=json.dumps(body, separators=(",", ":")),
        headers={"content-type": "application/json", **(headers or {})},
    )


def bad_request(message: str, request_id: str | None) -> Response[str]:
    return json_response(
        400, {"error": {"type": "BadRequest", "message": message}, "request_id": request_id}
    )


def _request_id(context: Any) -> str | None:
    value = getattr(context, "aws_request_id", None)
    return value if isinstance(value, str) else None


def generate_response(client: FlexiAI, event: Mapping[str, Any], context: Any) -> Response[str]:
    """Answer a ``POST /generate`` event with ``client`` (see the module docstring)."""
    request_id = _request_id(context)
    try:
        request = parse_generate_request(event)
    except BadRequestError as exc:
        return bad_request(str(exc), request_id)
    try:
        answer = client.chat_completion(
            request.messages,
            system=request.system,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
        )
    except (AllProvidersFailedError, DeadlineExceededError, InvalidRequestError) as exc:
        return error_response(exc, client, request_id)
    meta = answer.metadata
    return json_response(
        200,
        {
            "content": answer.content,
            "provider": answer.provider,
            "model": answer.model,
            "usage": answer.usage.model_dump(),
            "request_id": request_id,
            "attempts": meta.get("attempts"),
            "failovers": list(meta.get("failovers", [])),
        },
    )


def error_response(
    exc: AllProvidersFailedError | DeadlineExceededError | InvalidRequestError,
    client: FlexiAI,
    request_id: str | None,
) -> Response[str]:
    """Map the errors a request can end with onto 400, 502, 503 and 504."""
    error: dict[str, Any] = {"type": type(exc).__name__}
    headers: dict[str, str] = {}
    if isinstance(exc, InvalidRequestError):
        status = 400
        error.update(message=exc.message, provider=exc.provider, status_code=exc.status_code)
    elif isinstance(exc, DeadlineExceededError):
        status = 504
        error.update(message=str(exc), remaining_ms=round(exc.remaining * 1000))
    else:
        error["message"] = (
            "every provider's circuit breaker is open"
            if exc.all_circuits_open
            else "every provider failed"
        )
        error["attempts"] = [
            {
                "provider": a.provider,
                "error_type": a.error_type,
                "status_code": a.status_code,
                "message": a.message,
                "skipped": a.skipped,
            }
            for a in exc.attempts
        ]
        if exc.all_circuits_open:
            status = 503
            if exc.retry_after is not None:
                seconds = max(1, math.ceil(exc.retry_after))
                headers["retry-after"] = str(seconds)
                error["retry_after"] = seconds
        elif _ran_out_of_time(exc, client):
            status = 504
            error["message"] = "the invocation ran out of time before any provider answered"
        else:
            status = 502
    return json_response(status, {"error": error, "request_id": request_id}, headers)


def _ran_out_of_time(exc: AllProvidersFailedError, client: FlexiAI) -> bool:
    """True when the deadline, not the providers, ended the request: a provider was skipped
    for lack of time, or too little time is left for any provider's shortest attempt."""
    if any(isinstance(a.error, DeadlineExceededError) for a in exc.attempts):
        return True
    left = remaining_time()
    if left is None:
        return False
    shortest = min(p.shortest_attempt for p in client.config.providers)
    return left < shortest


def breaker_status_response(client: FlexiAI, context: Any) -> Response[str]:
    """Every provider's breaker as the fleet shares it, this worker's id and the store's
    health (a ``PING`` of the shared store, when sync is enabled)."""
    providers = client.get_provider_status()  # reads the store first, when sync is on
    if not client.config.sync.enabled:
        backend: dict[str, Any] = {"enabled": False, "shared": False, "healthy": True}
    else:
        health = client.store_health()
        backend = {
            "enabled": True,
            "name": health.backend,
            "mode": health.mode,
            "shared": health.shared,
            "healthy": health.healthy,
            "degraded": health.degraded,
        }
    return json_response(
        200,
        {
            "worker_id": client.worker_id,
            "backend": backend,
            "providers": {name: status.as_dict() for name, status in providers.items()},
            "request_id": _request_id(context),
        },
    )


# -- the resolvers -----------------------------------------------------------------------------


def _is_http_event(event: Any) -> bool:
    """An HTTP API payload 2.0 or Function URL event: what the resolver can route."""
    if not isinstance(event, Mapping):
        return False
    http = event.get("requestContext", {})
    http = http.get("http") if isinstance(http, Mapping) else None
    return isinstance(http, Mapping) and isinstance(http.get("method"), str)


class _Api(APIGatewayHttpResolver):
    """Powertools' resolver, answering an event it cannot route with a JSON 400 (the
    resolver itself would raise on an event without ``requestContext.http``)."""

    def resolve(self, event: Any, context: Any) -> dict[str, Any]:
        if not _is_http_event(event):
            response = bad_request(
                "the event is not an HTTP event (expected API Gateway HTTP API payload 2.0 "
                "or a Lambda Function URL event)",
                _request_id(context),
            )
            return {
                "statusCode": response.status_code,
                "headers": response.headers,
                "body": response.body,
                "isBase64Encoded": False,
            }
        return super().resolve(event, context)


def _api() -> _Api:
    app = _Api()

    @app.not_found
    def not_found(_: Exception) -> Response[str]:
        http = app.current_event.request_context.http
        return json_response(
            404,
            {
                "error": {"type": "NotFound", "message": f"no route for {http.method} {http.path}"},
                "request_id": _request_id(app.lambda_context),
            },
        )

    return app


def generate_api() -> APIGatewayHttpResolver:
    """``POST`` on any path (the template routes only ``/generate`` to the function; a
    Function URL's path is ``/``) answers with ``current_client()``."""
    app = _api()

    @app.post(".+")
    def generate() -> Response[str]:
        return generate_response(current_client(), app.current_event.raw_event, app.lambda_context)

    return app


def breaker_status_api() -> APIGatewayHttpResolver:
    """``GET`` on any path reports the breakers of ``current_client()``."""
    app = _api()

    @app.get(".+")
    def breaker_status() -> Response[str]:
        return breaker_status_response(current_client(), app.lambda_context)

    return app
