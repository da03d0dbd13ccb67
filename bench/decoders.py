"""The worst time to decode a hostile breaker record or event, against a 1 ms budget.

Data read from a shared Redis is untrusted: a record (``BreakerRecord.from_json``) or an
event (``decode_event``) may be anything up to its size cap. Each adversarial input below
(deep nesting, huge and odd numbers, 4 KB strings, escapes, valid documents with a bad
field, the largest valid record) is decoded many times; the figure is the slowest input's
median time, next to a valid record's as the peer, and its ratio to the 1 ms budget decides
the verdict.

    python bench/decoders.py [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable

from _common import Row, median, print_rows, row

COMMAND = "python bench/decoders.py"
BUDGET_US = 1000.0


def _nested(depth: int, body: str = "1") -> str:
    return "[" * depth + body + "]" * depth


def _inputs() -> dict[str, str]:
    from flexiai.circuit_breaker import BreakerRecord
    from flexiai.circuit_breaker._record import MAX_BUCKETS, MAX_TEXT

    largest = BreakerRecord(
        version=2**53 - 1,
        buckets=tuple((2**52, 2**52, 2**52, 2**52) for _ in range(MAX_BUCKETS // 8)),
        updated_by="\\u00fc" * (MAX_TEXT // 8),
    ).to_json()
    record = {
        "nesting 2000 deep": _nested(2000),
        "nesting in a field": '{"schema": 2, "colour": ' + _nested(1000) + "}",
        "4000-digit integer": '{"schema": 2, "run": ' + "9" * 4000 + "}",
        "1e308 deadline": '{"schema": 2, "open_until": 1e308}',
        "0.1 record, 1e308 s": '{"failures": 1, "opened_at": 1e308}',
        "4 KB string": '{"schema": 2, "updated_by": "' + "x" * 4000 + '"}',
        "4 KB of escapes": '{"schema": 2, "updated_by": "' + "\\u00fc" * 680 + '"}',
        "4 KB of small numbers": '{"schema": 2, "x": [' + ",".join(["1"] * 2000) + "]}",
        "64 buckets": '{"schema": 2, "buckets": ' + json.dumps([[1, 2, 3, 4]] * 64) + "}",
        "65 buckets": '{"schema": 2, "buckets": ' + json.dumps([[1, 2, 3, 4]] * 65) + "}",
        "over the size cap": "{" + " " * 5000 + "}",
        "largest valid record": largest,
    }
    inputs = {f"record: {k}": v for k, v in record.items()}
    head = '{"v":2,"prefix":"flexiai","type":"OPENED","provider":"p","worker_id":"w","ts":1,'
    for name, raw in record.items():
        if len(raw) <= 4096:
            inputs[f"event: {name}"] = head + '"record":' + raw + "}"
    inputs["event: nesting in v"] = '{"v": ' + _nested(900) + "}"
    inputs["event: 5 KB provider"] = head.replace('"p"', '"' + "p" * 4900 + '"') + '"record":{}}'
    return inputs


def _decoder(name: str) -> Callable[[str], object]:
    from flexiai.circuit_breaker import BreakerRecord, decode_event

    if name.startswith("record"):
        return BreakerRecord.from_json
    return decode_event


def _time_one(decode: Callable[[str], object], raw: str, repeats: int) -> float:
    """Median microseconds of one decode, over ``repeats`` runs in ten blocks."""
    block = max(1, repeats // 10)
    samples = []
    for _ in range(10):
        start = time.perf_counter()
        for _ in range(block):
            with contextlib.suppress(ValueError):  # MalformedEventError is one
                decode(raw)
        samples.append((time.perf_counter() - start) / block * 1e6)
    return median(samples)


def run(repeats: int = 2000) -> list[Row]:
    from flexiai.circuit_breaker import BreakerRecord

    valid = BreakerRecord(version=7, buckets=((1, 40, 1, 0),)).to_json()
    peer = _time_one(_decoder("record"), valid, repeats)
    times = {name: _time_one(_decoder(name), raw, repeats) for name, raw in _inputs().items()}
    worst = max(times, key=lambda name: times[name])
    rows = [
        row(
            "decoders",
            f"worst hostile input ({worst})",
            times[worst],
            "us",
            peer="1 ms budget",
            peer_value=BUDGET_US,
            target="<= 1.0x budget",
            passed=times[worst] <= BUDGET_US,
        ),
        row("decoders", "a valid record", peer, "us", peer="1 ms budget", peer_value=BUDGET_US),
    ]
    slowest = sorted(times, key=lambda n: -times[n])[:5]
    rows += [
        row("decoders", n, times[n], "us", peer="valid record", peer_value=peer) for n in slowest
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000, help="per input (default 2000)")
    args = parser.parse_args()
    print_rows(run(args.repeats), COMMAND)


if __name__ == "__main__":
    main()
