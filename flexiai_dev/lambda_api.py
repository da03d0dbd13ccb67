"""A local Lambda Runtime API (2018-06-01) for one execution environment.

The runtime process (``awslambdaric``) polls ``GET /2018-06-01/runtime/invocation/next``
for an event, then posts ``.../invocation/<id>/response`` or ``.../invocation/<id>/error``;
a handler that cannot be loaded posts ``/2018-06-01/runtime/init/error``. This server hands
out one event at a time (``invoke``) and lets the caller wait for the runtime's first poll
(the end of the init phase) and for each invocation's outcome, as Lambda's own service does.
stdlib ``http.server`` only: it serves one runtime process on loopback.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Outcome", "PendingEvent", "RuntimeAPI"]

_PREFIX = "/2018-06-01/runtime"
_MAX_BODY = 6 * 1024 * 1024  # Lambda's synchronous payload limit


@dataclass(frozen=True, slots=True)
class PendingEvent:
    request_id: str
    body: bytes
    deadline_ms: int
    function_arn: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the runtime posted: ``kind`` is ``response``, ``error`` or ``init_error``."""

    kind: str
    body: bytes
    error_type: str | None = None
    #: ``time.perf_counter()`` when it arrived.
    at: float = 0.0

    def document(self) -> Any:
        """The body as JSON (an error document for errors)."""
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return {"errorMessage": self.body.decode(errors="replace"), "errorType": "Unknown"}


class RuntimeAPI:
    """The Runtime API on ``127.0.0.1:<free port>``; ``address`` goes in
    ``AWS_LAMBDA_RUNTIME_API``. Use as a context manager, or call ``close()``."""

    def __init__(self) -> None:
        self._events: queue.Queue[PendingEvent | None] = queue.Queue()
        self._outcomes: dict[str, Outcome] = {}
        self._changed = threading.Condition()
        self._init_error: Outcome | None = None
        #: ``time.perf_counter()`` of the first poll for an event (init is over), and of
        #: the moment the current event was handed to the runtime.
        self.first_poll_at: float | None = None
        self.picked_up_at: dict[str, float] = {}
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # the runtime client keeps its connection open
            # Headers and body go out in two writes: without TCP_NODELAY, Nagle holds the
            # body back until the peer's delayed ACK, about 40 ms per request on Linux.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # the runtime's requests are not the user's business

            def do_GET(self) -> None:
                if self.path != f"{_PREFIX}/invocation/next":
                    self._reply(HTTPStatus.NOT_FOUND, b'{"errorType":"NotFound"}')
                    return
                event = api._next_event()
                if event is None:  # closing: the runtime is about to be stopped
                    self._reply(HTTPStatus.GONE, b"{}")
                    return
                self._reply(
                    HTTPStatus.OK,
                    event.body,
                    {
                        "Lambda-Runtime-Aws-Request-Id": event.request_id,
                        "Lambda-Runtime-Deadline-Ms": str(event.deadline_ms),
                        "Lambda-Runtime-Invoked-Function-Arn": event.function_arn,
                        "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-"
                        f"{event.request_id.replace('-', '')[:24]};Sampled=0",
                    },
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, _MAX_BODY + 1))
                error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
                parts = self.path.removeprefix(_PREFIX).strip("/").split("/")
                if parts == ["init", "error"]:
                    api._record(None, Outcome("init_error", body, error_type, time.perf_counter()))
                elif len(parts) == 3 and parts[0] == "invocation" and parts[2] == "response":
                    if len(body) > _MAX_BODY:
                        api._record(parts[1], _too_large(len(body)))
                    else:
                        api._record(parts[1], Outcome("response", body, None, time.perf_counter()))
                elif len(parts) == 3 and parts[0] == "invocation" and parts[2] == "error":
                    api._record(parts[1], Outcome("error", body, error_type, time.perf_counter()))
                else:
                    self._reply(HTTPStatus.NOT_FOUND, b'{"errorType":"NotFound"}')
                    return
                self._reply(HTTPStatus.ACCEPTED, b'{"status":"OK"}')

            def _reply(
                self, status: HTTPStatus, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="lambda-runtime-api", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        port = self._server.server_address[1]
        return f"127.0.0.1:{port}"

    def invoke(self, event: PendingEvent) -> None:
        """Queue ``event`` for the runtime's next poll."""
        self._events.put(event)

    def wait_initialized(self, timeout: float) -> Outcome | None:
        """Block until the runtime polls for its first event (``None``: init is done) or
        reports an init error (returned); raise ``TimeoutError`` after ``timeout`` seconds."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: self.first_poll_at is not None or self._init_error is not None, timeout
            )
        if not done:
            raise TimeoutError
        return self._init_error

    def wait_outcome(self, request_id: str, timeout: float) -> Outcome | None:
        """The outcome of ``request_id`` (or an init error), or ``None`` after ``timeout``."""
        with self._changed:
            self._changed.wait_for(
                lambda: request_id in self._outcomes or self._init_error is not None, timeout
            )
            return self._outcomes.pop(request_id, None) or self._init_error

    def close(self) -> None:
        self._events.put(None)  # releases a poll in progress
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RuntimeAPI:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _next_event(self) -> PendingEvent | None:
        with self._changed:
            if self.first_poll_at is None:
                self.first_poll_at = time.perf_counter()
                self._changed.notify_all()
        event = self._events.get()
        if event is not None:
            with self._changed:
                self.picked_up_at[event.request_id] = time.perf_counter()
                self._changed.notify_all()
        return event

    def _record(self, request_id: str | None, outcome: Outcome) -> None:
        with self._changed:
            if request_id is None:
                self._init_error = outcome
            else:
                self._outcomes[request_id] = outcome
            self._changed.notify_all()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a runtime killed mid-request (a timeout) resets its connection: not news


def _too_large(size: int) -> Outcome:
    message = f"Response payload size ({size} bytes) exceeded maximum allowed payload size"
    body = json.dumps({"errorMessage": message, "errorType": "Function.ResponseSizeTooLarge"})
    return Outcome("error", body.encode(), "Function.ResponseSizeTooLarge", time.perf_counter())
