"""A loopback HTTP server that answers with exact bytes at a chosen pace.

``FakeLLMServer`` speaks well-formed HTTP; this one exists for what a well-behaved server
never does: trickle its status line and headers one byte at a time, trickle a body, lie in
``Content-Length``, stop half-way, or send bytes that are not UTF-8. Each connection gets the
next ``RawReply`` (the last one repeats) and is closed after it. Stopping the server wakes
every trickling thread, so a test never waits for a trickle to finish.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

__all__ = ["RawReply", "RawServer", "json_reply"]


@dataclass(frozen=True)
class RawReply:
    head: bytes
    body: bytes = b""
    #: Seconds between two bytes of the head (status line and headers) / of the body.
    head_interval: float = 0.0
    body_interval: float = 0.0


def json_reply(
    body: Any,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    content_length: int | None = None,
    head_interval: float = 0.0,
    body_interval: float = 0.0,
) -> RawReply:
    """A reply whose body is ``body`` (bytes as-is, anything else as JSON)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    fields = {
        "content-type": "application/json",
        "content-length": str(len(raw) if content_length is None else content_length),
        "connection": "close",
        **(headers or {}),
    }
    head = f"HTTP/1.1 {status} X\r\n".encode() + b"".join(
        f"{k}: {v}\r\n".encode("latin-1") for k, v in fields.items()
    )
    return RawReply(head + b"\r\n", raw, head_interval, body_interval)


class RawServer:
    def __init__(self, *replies: RawReply) -> None:
        if not replies:
            raise ValueError("give at least one reply")
        self._replies = list(replies)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[bytes] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> RawServer:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._acceptor.join()
        for thread in list(self._threads):
            thread.join()
        self._sock.close()

    def answer_with(self, *replies: RawReply) -> None:
        """From now on, answer with ``replies`` (the last one repeats), counting afresh."""
        with self._lock:
            self._replies = list(replies)
            self.requests.clear()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.1)
            request = self._read_request(conn)
            if request is None:
                return
            with self._lock:
                index = len(self.requests)
                self.requests.append(request)
                reply = self._replies[min(index, len(self._replies) - 1)]
            try:
                self._send(conn, reply.head, reply.head_interval)
                self._send(conn, reply.body, reply.body_interval)
            except OSError:
                return  # the client gave up and closed: what the deadline tests want

    def _read_request(self, conn: socket.socket) -> bytes | None:
        data = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if not sep:
                continue
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if len(body) >= length:
                return data
        return None

    def _send(self, conn: socket.socket, data: bytes, interval: float) -> None:
        if interval <= 0:
            conn.sendall(data)
            return
        for i in range(len(data)):
            if self._stop.wait(interval):
                return
            conn.sendall(data[i : i + 1])
