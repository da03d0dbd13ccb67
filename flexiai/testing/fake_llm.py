"""A fake LLM server on 127.0.0.1 that answers in each provider's real wire format.

Failover code is only as good as its handling of real failures: a mocked client never
times out on a socket, never drops a connection half way and never sends a 529 with a
``Retry-After`` date. This server does all of that over real HTTP, so an application (and
flexiai's own tests) can exercise the adapters, the retries and the circuit breakers
end to end without a network or an API key.

Several fake providers share one server, told apart by the path: ``/p/<name>/...``. The API
is read from the rest of the path, as the adapters build it::

    /p/<name>/v1/chat/completions                    OpenAI chat completion
    /p/<name>/v1/messages                            Anthropic message
    /p/<name>/v1beta/models/<model>:generateContent  Gemini generateContent
    /p/<name>/model/<modelId>/converse               Bedrock Converse (botocore, endpoint_url)

Each request takes the next behaviour of that provider's script (``Reply``, ``Error``,
``Malformed``, ``Drop``, ``Slow``); an empty script falls back to the provider's default,
which echoes ``"<name> says: <last user message>"``.

From another process (worker fleets, demos)::

    python -m flexiai.testing.fake_llm --port 8900 --providers openai,anthropic

prints the URL and then one ``<name> <base_url>`` line per provider, and serves until SIGTERM
or SIGINT. ``POST /_control/<name>/down`` (answer 503 until ``/up``), ``POST
/_control/<name>/up``, ``POST /_control/<name>/noisy?rate=0.02[&status=500&seed=0]``, ``GET
/_control/<name>/count``, ``GET /_control/connections`` and ``POST /_control/reset`` steer
and read it.

A *noisy* provider (``noisy(name, rate)``) is healthy but fails a fraction ``rate`` of its
requests with a transient 5xx, the way real APIs do. Which requests fail is drawn from a
random generator seeded with ``seed`` and the provider's name: the same requests, in the same
order of arrival, get the same answers in every run, and a rate of 1.0 fails them all.

Standard library only, so importing ``flexiai.testing`` stays cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import re
import signal
import socket
import sys
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "Behaviour",
    "Drop",
    "Error",
    "FakeLLMServer",
    "Malformed",
    "RecordedRequest",
    "Reply",
    "Slow",
]

Api: TypeAlias = Literal["openai", "anthropic", "gemini", "bedrock"]
_KINDS: tuple[Api, ...] = ("openai", "anthropic", "gemini", "bedrock")


# -- behaviours ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A successful answer in the API's own shape.

    ``content=None`` echoes ``"<name> says: <last user message>"``; ``usage`` is
    ``(prompt_tokens, completion_tokens)``, by default the word counts; ``finish_reason=None``
    is the API's normal stop reason.
    """

    content: str | None = None
    status: int = 200
    delay: float = 0.0
    usage: tuple[int, int] | None = None
    finish_reason: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Error:
    """An error status with the API's error body.

    ``retry_after`` becomes the ``Retry-After`` header (seconds, or a string such as an HTTP
    date). ``code`` is the API's error type: Anthropic ``error.type``, OpenAI ``error.code``,
    Gemini ``ErrorInfo.reason``, Bedrock's ``x-amzn-ErrorType``; the default fits ``status``.
    ``body`` replaces the whole JSON body.
    """

    status: int = 500
    message: str = "fake server error"
    retry_after: float | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    code: str | None = None
    body: Any = None
    delay: float = 0.0


@dataclass(frozen=True)
class Malformed:
    """A 200 with exactly this body: text that is not JSON, or JSON of any shape you craft."""

    body: str | bytes | Mapping[str, Any] | Sequence[Any] = "not json"
    status: int = 200
    delay: float = 0.0


@dataclass(frozen=True)
class Drop:
    """Read the request, then close the connection without answering."""

    delay: float = 0.0


@dataclass(frozen=True)
class Slow:
    """Wait ``seconds``, then behave like ``then``."""

    seconds: float
    then: Behaviour = field(default_factory=Reply)


Behaviour: TypeAlias = Reply | Error | Malformed | Drop | Slow


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received. ``headers`` keys are lower-case; ``json`` is None if the
    body was not JSON."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    body: bytes


@dataclass
class _Noise:
    """A fraction ``rate`` of requests fail with ``status``, drawn from a seeded generator."""

    rate: float
    status: int
    rng: random.Random

    def fails(self) -> bool:
        return self.rng.random() < self.rate


@dataclass
class _ProviderState:
    script: deque[Behaviour] = field(default_factory=deque)
    default: Behaviour = field(default_factory=Reply)
    requests: list[RecordedRequest] = field(default_factory=list)
    down_status: int | None = None
    noise: _Noise | None = None
    noise_errors: int = 0


# -- the server ------------------------------------------------------------------------------


class FakeLLMServer:
    """Start with ``with FakeLLMServer() as server:`` or ``start()``/``stop()``. Thread-safe."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._providers: dict[str, _ProviderState] = {}
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._accepted = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakeLLMServer:
        if self._httpd is not None or self._stopping.is_set():
            raise RuntimeError("FakeLLMServer can be started once")
        self._httpd = _HTTPServer((self._host, self._port), self)
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-llm-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end slow replies and idle keep-alive connections, join every thread."""
        httpd, self._httpd = self._httpd, None
        self._stopping.set()
        if httpd is None:
            return
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._port == 0:
            raise RuntimeError("FakeLLMServer is not started")
        return f"http://{self._host}:{self._port}"

    def base_url(self, name: str, kind: str | None = None) -> str:
        """What to put in ``ProviderConfig.base_url`` for the provider ``name``.

        ``kind`` defaults from the name as ``ProviderConfig`` infers it (``openai-backup`` is
        openai); OpenAI-kind URLs end in ``/v1`` like the real one.
        """
        if kind is None:
            from flexiai.models import infer_kind  # pydantic: only when a kind is inferred

            kind = infer_kind(name)
        return f"{self.url}/p/{name}" + ("/v1" if kind == "openai" else "")

    # scripting

    def script(self, name: str, behaviours: Iterable[Behaviour]) -> None:
        """Replace ``name``'s queue: each request consumes the next behaviour."""
        with self._lock:
            self._state(name).script = deque(behaviours)

    def set_default(self, name: str, behaviour: Behaviour) -> None:
        """What ``name`` does once its script is empty."""
        with self._lock:
            self._state(name).default = behaviour

    def down(self, name: str, status: int = 503) -> None:
        """Answer every request to ``name`` with ``status`` until ``up``; the script waits."""
        with self._lock:
            self._state(name).down_status = status

    def up(self, name: str) -> None:
        with self._lock:
            self._state(name).down_status = None

    def noisy(self, name: str, rate: float, *, status: int = 500, seed: int = 0) -> None:
        """Make ``name`` fail a fraction ``rate`` (0 to 1) of its requests with ``status`` (a
        transient 5xx by default); 0 makes it quiet again. The failures are drawn from a
        generator seeded with ``seed`` and ``name``, restarted by every call: reproducible.
        ``down`` wins over noise, and noise over the script and the default."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, not {rate!r}")
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), not {status!r}")
        with self._lock:
            self._state(name).noise = (
                # Seeded noise for reproducible runs, not cryptography.
                _Noise(rate, status, random.Random(f"{seed}:{name}"))  # noqa: S311
                if rate > 0
                else None
            )

    def reset(self, name: str | None = None) -> None:
        """Forget scripts, defaults, down flags and recorded requests (of one provider)."""
        with self._lock:
            if name is None:
                self._providers.clear()
            else:
                self._providers.pop(name, None)

    # inspection

    def requests(self, name: str) -> list[RecordedRequest]:
        """Copies of the requests ``name`` received, oldest first."""
        with self._lock:
            return copy.deepcopy(self._state(name).requests)

    def count(self, name: str) -> int:
        with self._lock:
            return len(self._state(name).requests)

    def noise_errors(self, name: str) -> int:
        """Requests to ``name`` that its noise failed, since it was created or reset."""
        with self._lock:
            return self._state(name).noise_errors

    def connections_accepted(self) -> int:
        """TCP connections accepted since the server started (``reset`` keeps the count):
        how many connections clients opened, which keep-alive would have spared."""
        with self._lock:
            return self._accepted

    def pending(self, name: str) -> int:
        """Scripted behaviours not consumed yet."""
        with self._lock:
            return len(self._state(name).script)

    def _state(self, name: str) -> _ProviderState:
        state = self._providers.get(name)
        if state is None:
            state = self._providers[name] = _ProviderState()
        return state

    def __repr__(self) -> str:
        where = self.url if self._port else "not started"
        return f"FakeLLMServer({where}, providers={sorted(self._providers)})"

    # request handling (handler threads)

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length > 0 else b""
        path = urlsplit(handler.path).path
        if path.startswith("/_control/"):
            self._control(handler, path)
            return
        match = re.fullmatch(r"/p/([^/]+)(/.*)?", path)
        if match is None:
            _send_json(handler, 404, {"error": {"message": f"fake server: no route {path}"}})
            return
        name = unquote(match.group(1))
        api, model = _detect_api(match.group(2) or "")
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = RecordedRequest(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            json=body,
            body=raw,
        )
        with self._lock:
            state = self._state(name)
            state.requests.append(record)
            behaviour: Behaviour
            if state.down_status is not None:
                behaviour = Error(state.down_status, f"fake provider {name} is down")
            elif state.noise is not None and state.noise.fails():
                state.noise_errors += 1
                behaviour = Error(state.noise.status, f"fake provider {name}: transient error")
            elif state.script:
                behaviour = state.script.popleft()
            else:
                behaviour = state.default
        if api is None:
            message = f"fake server: {path} is not an API it speaks"
            _send_json(handler, 404, {"error": {"message": message}})
            return
        self._behave(handler, behaviour, api, name, model or _str(body, "model"), body)

    def _behave(
        self, handler: _Handler, behaviour: Behaviour, api: Api, name: str, model: str, body: Any
    ) -> None:
        while isinstance(behaviour, Slow):
            if self._stopping.wait(behaviour.seconds):
                handler.close_connection = True
                return
            behaviour = behaviour.then
        if behaviour.delay > 0 and self._stopping.wait(behaviour.delay):
            handler.close_connection = True
            return
        if isinstance(behaviour, Drop):
            handler.close_connection = True
        elif isinstance(behaviour, Reply):
            _send_json(
                handler,
                behaviour.status,
                _reply_body(api, name, model, body, behaviour),
                behaviour.headers,
            )
        elif isinstance(behaviour, Error):
            headers = dict(behaviour.headers)
            if behaviour.retry_after is not None:
                retry = behaviour.retry_after
                headers["retry-after"] = f"{retry:g}" if isinstance(retry, float | int) else retry
            if api == "bedrock":
                headers.setdefault("x-amzn-errortype", behaviour.code or _bedrock_code(behaviour))
            payload = behaviour.body if behaviour.body is not None else _error_body(api, behaviour)
            _send_json(handler, behaviour.status, payload, headers)
        else:
            raw = behaviour.body
            if isinstance(raw, str):
                data = raw.encode()
            elif isinstance(raw, bytes):
                data = raw
            else:
                data = json.dumps(raw).encode()
            _send(handler, behaviour.status, data, {"content-type": "application/json"})

    def _control(self, handler: _Handler, path: str) -> None:
        parts = [unquote(p) for p in path.split("/")[2:]]
        query = dict(parse_qsl(urlsplit(handler.path).query))
        post = handler.command == "POST"
        if parts == ["reset"] and post:
            self.reset()
            _send_json(handler, 200, {"reset": True})
        elif parts == ["connections"]:
            _send_json(handler, 200, {"accepted": self.connections_accepted()})
        elif parts == ["health"]:
            _send_json(handler, 200, {"ok": True})
        elif len(parts) == 2 and parts[1] == "count":
            name = parts[0]
            counts = {"count": self.count(name), "noise_errors": self.noise_errors(name)}
            _send_json(handler, 200, {"name": name, **counts})
        elif len(parts) == 2 and parts[1] == "noisy" and post:
            try:
                rate = float(query.get("rate", "nan"))
                status = int(query.get("status", "500"))
                seed = int(query.get("seed", "0"))
                self.noisy(parts[0], rate, status=status, seed=seed)
            except ValueError as exc:
                _send_json(handler, 400, {"error": {"message": f"fake server: {exc}"}})
                return
            _send_json(handler, 200, {"name": parts[0], "rate": rate, "status": status})
        elif len(parts) == 2 and parts[1] in ("down", "up") and post:
            if parts[1] == "down":
                self.down(parts[0])
            else:
                self.up(parts[0])
            _send_json(handler, 200, {"name": parts[0], "down": parts[1] == "down"})
        else:
            _send_json(handler, 404, {"error": {"message": f"fake server: no control {path}"}})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs
    timeout = 60  # an idle keep-alive connection holds a thread at most this long
    # Headers and body go out in two writes: with Nagle on, the body waits for the client's
    # delayed ACK and every keep-alive exchange costs about 40 ms instead of under 1 ms.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    do_GET = do_POST
    do_PUT = do_POST
    do_DELETE = do_POST

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Quiet: tests and demos read the counters instead."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads
    allow_reuse_address = True
    # socketserver's default backlog is 5: a fleet of 16 workers connecting at once on a
    # busy machine overflows it, and the kernel refuses calls the test did not mean to fail.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], fake: FakeLLMServer) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.fake._lock:
            self.fake._connections.add(request)
            self.fake._accepted += 1
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.fake._lock:
                self.fake._connections.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # the client went away (it timed out, or a test ended): expected here
        super().handle_error(request, client_address)


# -- wire formats ------------------------------------------------------------------------------


def _detect_api(rest: str) -> tuple[Api | None, str]:
    """The API a path speaks, and the model named in the path (Gemini, Bedrock)."""
    if rest.endswith("/chat/completions"):
        return "openai", ""
    if rest.endswith("/v1/messages"):
        return "anthropic", ""
    gemini = re.search(r"/models/([^/]+):generateContent$", rest)
    if gemini:
        return "gemini", unquote(gemini.group(1))
    bedrock = re.fullmatch(r"/model/([^/]+)/converse", rest)
    if bedrock:
        return "bedrock", unquote(bedrock.group(1))
    return None, ""


def _str(body: Any, key: str) -> str:
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) else ""


def _text_of(content: Any) -> str:
    """Text of a message's content: a string, or a list of ``{"text": ...}`` parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _last_user_text(api: Api, body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    key, content_key = {
        "openai": ("messages", "content"),
        "anthropic": ("messages", "content"),
        "bedrock": ("messages", "content"),
        "gemini": ("contents", "parts"),
    }[api]
    messages = body.get(key)
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role", "user") == "user":
            return _text_of(message.get(content_key))
    return ""


def _reply_body(api: Api, name: str, model: str, request: Any, reply: Reply) -> dict[str, Any]:
    asked = _last_user_text(api, request)
    content = reply.content if reply.content is not None else f"{name} says: {asked}"
    prompt, completion = reply.usage or (len(asked.split()), len(content.split()))
    if api == "openai":
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": reply.finish_reason or "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
    if api == "anthropic":
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": content}],
            "stop_reason": reply.finish_reason or "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion},
        }
    if api == "gemini":
        return {
            "candidates": [
                {
                    "content": {"parts": [{"text": content}], "role": "model"},
                    "finishReason": reply.finish_reason or "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": prompt,
                "candidatesTokenCount": completion,
                "totalTokenCount": prompt + completion,
            },
            "modelVersion": model,
        }
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": content}]}},
        "stopReason": reply.finish_reason or "end_turn",
        "usage": {
            "inputTokens": prompt,
            "outputTokens": completion,
            "totalTokens": prompt + completion,
        },
        "metrics": {"latencyMs": 1},
    }


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_BEDROCK_CODES = {
    400: "ValidationException",
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    503: "ServiceUnavailableException",
}


def _bedrock_code(error: Error) -> str:
    return _BEDROCK_CODES.get(
        error.status,
        "InternalServerException" if error.status >= 500 else "ValidationException",
    )


def _error_body(api: Api, error: Error) -> dict[str, Any]:
    if api == "openai":
        return {
            "error": {
                "message": error.message,
                "type": "server_error" if error.status >= 500 else "invalid_request_error",
                "param": None,
                "code": error.code,
            }
        }
    if api == "anthropic":
        kind = error.code or _ANTHROPIC_TYPES.get(error.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": error.message}}
    if api == "gemini":
        details: list[dict[str, Any]] = []
        if error.code:
            details.append(
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": error.code}
            )
        if isinstance(error.retry_after, float | int):
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{error.retry_after:g}s",
                }
            )
        status = _GOOGLE_STATUS.get(error.status, "INTERNAL" if error.status >= 500 else "UNKNOWN")
        payload: dict[str, Any] = {
            "code": error.status,
            "message": error.message,
            "status": status,
        }
        if details:
            payload["details"] = details
        return {"error": payload}
    return {"message": error.message}


def _send_json(
    handler: BaseHTTPRequestHandler,
    status: int,
    payload: Any,
    headers: Mapping[str, str] | None = None,
) -> None:
    _send(
        handler,
        status,
        json.dumps(payload).encode(),
        {"content-type": "application/json", **(headers or {})},
    )


def _send(
    handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: Mapping[str, str]
) -> None:
    try:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()
    except (ConnectionError, TimeoutError):
        handler.close_connection = True  # the client gave up first (it timed out)


# -- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flexiai.testing.fake_llm",
        description="Serve fake LLM providers until SIGTERM/SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--providers",
        default="",
        help="comma-separated names (name or name=kind) to print base URLs for",
    )
    parser.add_argument(
        "--noisy",
        action="append",
        default=[],
        metavar="NAME=RATE",
        help="fail this fraction (0-1) of NAME's requests with a transient 500 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --noisy failures")
    args = parser.parse_args(argv)
    noisy: list[tuple[str, float]] = []
    for item in args.noisy:
        name, _, rate = item.partition("=")
        try:
            noisy.append((name, float(rate)))
        except ValueError:
            parser.error(f"--noisy {item!r}: expected NAME=RATE, such as openai=0.02")
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with FakeLLMServer(args.host, args.port) as server:
        for name, rate in noisy:
            try:
                server.noisy(name, rate, seed=args.seed)
            except ValueError as exc:
                parser.error(f"--noisy {name}={rate:g}: {exc}")
        print(server.url, flush=True)
        for item in filter(None, (p.strip() for p in args.providers.split(","))):
            name, _, kind = item.partition("=")
            print(f"{name} {server.base_url(name, kind or None)}", flush=True)
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
