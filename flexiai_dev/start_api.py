"""``flexiai start-api``: serve a SAM template's HTTP API routes on localhost, no Docker.

    flexiai start-api [--port 3000] [--host 127.0.0.1] [--env-vars env.json] [--template T]
        [--parameter-overrides ...] [--region R] [--profile P] [--debug]

Each function's ``HttpApi`` events become routes; a request is turned into an API Gateway
HTTP API event (payload format 2.0) and run by that function on the Lambda runtime
(``flexiai_dev.lambda_runtime``), one warm runtime per function, one request at a time
each (as one execution environment). The handler's answer (``statusCode``, ``headers``,
``body``, ``isBase64Encoded``; any other value is JSON with status 200, as API Gateway does)
goes back to the client. Like ``sam local start-api``, without its container; unlike it,
there is no authorizer, CORS or throttling.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from flexiai.cli import CommandError

__all__ = ["ApiServer", "add_arguments", "api_event", "run"]


def add_arguments(parser: argparse.ArgumentParser, command_name: str) -> None:
    from flexiai_dev.invoke import add_template_arguments

    parser.add_argument("-p", "--port", type=int, default=3000, help="default: 3000, as sam")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    add_template_arguments(parser)


@dataclass(frozen=True, slots=True)
class _Endpoint:
    method: str
    path: str
    pattern: re.Pattern[str]
    function: str

    def matches(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("ANY", method):
            return None
        found = self.pattern.fullmatch(path)
        return None if found is None else found.groupdict()


def _compile(path: str) -> re.Pattern[str]:
    if path == "$default":
        return re.compile(r"/.*")
    parts = re.split(r"(\{[^}]+\})", path)
    regex = ""
    for part in parts:
        if part.startswith("{") and part.endswith("+}"):
            regex += f"(?P<{part[1:-2]}>.+)"
        elif part.startswith("{"):
            regex += f"(?P<{part[1:-1]}>[^/]+)"
        else:
            regex += re.escape(part)
    return re.compile(regex)


def api_event(
    method: str,
    raw_path: str,
    headers: dict[str, str],
    body: bytes,
    route_key: str,
    path_parameters: dict[str, str],
    source_ip: str,
) -> dict[str, Any]:
    """An API Gateway HTTP API event, payload format 2.0, as Lambda receives it."""
    url = urlsplit(raw_path)
    now = datetime.now(UTC)
    query: dict[str, str] = {}
    for key, value in parse_qsl(url.query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    text_body: str | None = None
    encoded = False
    if body:
        try:
            text_body = body.decode()
        except UnicodeDecodeError:
            text_body, encoded = base64.b64encode(body).decode(), True
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": url.path,
        "rawQueryString": url.query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": headers.get("host", "localhost"),
            "domainPrefix": "localhost",
            "http": {
                "method": method,
                "path": url.path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = path_parameters
    if text_body is not None:
        event["body"] = text_body
    if "cookie" in headers:
        event["cookies"] = [c.strip() for c in headers["cookie"].split(";")]
    return event


class ApiServer:
    """The routes of ``runtimes`` (logical id -> ``LambdaRuntime``) on ``host:port``."""

    def __init__(self, runtimes: dict[str, Any], host: str = "127.0.0.1", port: int = 0) -> None:
        self._runtimes = runtimes
        self._host = host
        self._locks = {name: threading.Lock() for name in runtimes}
        self.endpoints = [
            _Endpoint(route.method, route.path, _compile(route.path), name)
            for name, runtime in runtimes.items()
            for route in runtime.spec.routes
        ]
        # Literal routes before parameterized ones before $default, as API Gateway matches.
        self.endpoints.sort(key=lambda e: (e.path == "$default", "{" in e.path, -len(e.path)))
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY, Nagle holds the
            # body back until the peer's delayed ACK, about 40 ms per request on Linux.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                print(f"flexiai start-api: {format % args}", file=sys.stderr)

            def _handle(self) -> None:
                server._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

        self._http = ThreadingHTTPServer((host, port), Handler)
        self._http.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._http.server_address[1]}"

    def start(self) -> ApiServer:
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._http.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self._http.shutdown()
        self._http.server_close()
        for runtime in self._runtimes.values():
            runtime.close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        method = request.command
        path = urlsplit(request.path).path
        for endpoint in self.endpoints:
            parameters = endpoint.matches(method, path)
            if parameters is not None:
                break
        else:
            _send(request, 404, {"content-type": "application/json"}, b'{"message":"Not Found"}')
            return
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in request.headers.items()}
        route_key = (
            "$default" if endpoint.path == "$default" else f"{endpoint.method} {endpoint.path}"
        )
        event = api_event(
            method, request.path, headers, body, route_key, parameters, request.client_address[0]
        )
        with self._locks[endpoint.function]:  # one execution environment: one at a time
            invocation = self._runtimes[endpoint.function].invoke(json.dumps(event).encode())
        if invocation.failed:
            message = b'{"message":"Internal Server Error"}'
            _send(request, 500, {"content-type": "application/json"}, message)
            return
        status, response_headers, payload = _http_response(invocation.outcome.document())
        _send(request, status, response_headers, payload)


def _http_response(result: Any) -> tuple[int, dict[str, str], bytes]:
    """Payload format 2.0's reading of a handler's return value."""
    if isinstance(result, dict) and "statusCode" in result:
        headers = {str(k).lower(): str(v) for k, v in (result.get("headers") or {}).items()}
        body = result.get("body") or ""
        data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
        return int(result["statusCode"]), headers, data
    return 200, {"content-type": "application/json"}, json.dumps(result).encode()


def _send(
    request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes
) -> None:
    request.send_response(status)
    for name, value in headers.items():
        if name not in ("content-length", "connection", "transfer-encoding"):
            request.send_header(name, value)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(body)


def build_server(args: argparse.Namespace) -> ApiServer:
    """The server for ``args`` (not started): every function with HttpApi events."""
    from flexiai_dev.cloudformation import function_ids, invocation_environment
    from flexiai_dev.invoke import _region, _shell, _template_path, load_function
    from flexiai_dev.lambda_runtime import (
        LambdaRuntime,
        RuntimeUnavailable,
        find_python,
        layer_directories,
    )

    template = _template_path(args.template)
    python = find_python()
    if python is None:
        raise CommandError("no python3.12 found (PATH, pyenv): start-api runs the Lambda runtime")
    runtimes: dict[str, Any] = {}
    try:
        for logical_id in function_ids(template):
            spec, env_vars = load_function(args, template, logical_id)
            if not spec.routes:
                continue
            variables, notes = invocation_environment(spec, env_vars, shell=_shell(args))
            layers, layer_notes = layer_directories(spec, python)
            for note in [*notes, *layer_notes]:
                print(f"flexiai start-api: {logical_id}: {note}", file=sys.stderr)
            runtimes[logical_id] = LambdaRuntime(
                spec,
                python=python,
                layers=layers,
                variables=variables,
                region=_region(args, variables),
                host_environment=_shell(args),
            )
    except RuntimeUnavailable as exc:
        raise CommandError(str(exc)) from None
    if not runtimes:
        raise CommandError(f"no function in {template} has an HttpApi event")
    return ApiServer(runtimes, args.host, args.port)


def run(args: argparse.Namespace) -> int:
    try:
        server = build_server(args)
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    for endpoint in server.endpoints:
        print(
            f"flexiai start-api: {endpoint.method} {server.url}{endpoint.path}"
            f" -> {endpoint.function}",
            file=sys.stderr,
            flush=True,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
