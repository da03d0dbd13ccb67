"""How far past its timeout an attempt runs against a server that trickles bytes.

A loopback server sends a valid answer one byte every ``--interval`` seconds, in the head
(status line and headers) or in the body; each adapter calls it with ``--timeout`` (larger
than the interval, so no single read ever times out). Printed: the overrun, elapsed minus
timeout, per case (worst of ``--runs``). Issue 12's target: at most 100 ms.

    .venv/bin/python bench/attempt_deadline.py [--timeout 2] [--interval 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flexiai.exceptions import ProviderTimeout
from flexiai.models import ChatMessage, ProviderConfig
from flexiai.providers import provider_class
from flexiai.providers.base import ChatRequest
from flexiai.providers.transport import HttpPool
from tests.providers.raw_server import RawReply, RawServer, json_reply
from tests.providers.test_deadlines import ANSWERS

REQUEST = ChatRequest(messages=[ChatMessage(role="user", content="hello")])


def one(kind: str, where: str, mode: str, timeout: float, interval: float) -> float:
    reply = json_reply(ANSWERS[kind])
    paced = (
        RawReply(reply.head, reply.body, head_interval=interval)
        if where == "head"
        else RawReply(reply.head, reply.body, body_interval=interval)
    )
    pool = HttpPool()
    with RawServer(paced) as raw:
        config = ProviderConfig(
            name="trickle",
            kind=kind,
            model="anthropic.claude-3-haiku-20240307-v1:0" if kind == "bedrock" else "m",
            base_url=raw.url,
            timeout=timeout,
        )
        provider = provider_class(kind)(config, http=pool, api_key=lambda: "sk-bench")
        if kind == "bedrock":
            provider._client()  # type: ignore[attr-defined]  # build botocore's client first
        if mode == "sync":
            elapsed = timed(lambda: provider.complete(REQUEST, timeout=timeout))
        else:

            async def call() -> float:  # timed inside the loop: not its start and teardown
                started = time.perf_counter()
                try:
                    await provider.acomplete(REQUEST, timeout=timeout)
                except ProviderTimeout:
                    return time.perf_counter() - started
                raise SystemExit(f"{kind} {where} async: answered, the deadline did not hold")

            elapsed = asyncio.run(call())
        provider.close()
    pool.close()
    return float(elapsed) - timeout


def timed(call: Any) -> float:
    started = time.perf_counter()
    try:
        call()
    except ProviderTimeout:
        return time.perf_counter() - started
    raise SystemExit("answered: the deadline did not hold")


def warm_up() -> None:
    """One untimed call per adapter and API against an answering server, so the figures
    are the deadline's and not the first call's lazy imports (httpcore, anyio, botocore)."""
    for kind in ANSWERS:
        with RawServer(json_reply(ANSWERS[kind])) as raw:
            pool = HttpPool()
            config = ProviderConfig(
                name="warm",
                kind=kind,
                model="anthropic.claude-3-haiku-20240307-v1:0" if kind == "bedrock" else "m",
                base_url=raw.url,
            )
            provider = provider_class(kind)(config, http=pool, api_key=lambda: "sk-bench")
            provider.complete(REQUEST, timeout=5)

            async def call(adapter: Any, http: HttpPool) -> None:
                await adapter.acomplete(REQUEST, timeout=5)
                await http.aclose()

            asyncio.run(call(provider, pool))
            provider.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_REGION", "us-east-1")
    warm_up()
    print(f"timeout {args.timeout} s, a byte every {args.interval} s, worst of {args.runs}")
    print(f"{'adapter':<10} {'trickled':<8} {'api':<6} {'overrun':>10}")
    worst = 0.0
    for kind in ("openai", "anthropic", "gemini", "bedrock"):
        for where in ("head", "body"):
            for mode in ("sync", "async"):
                overrun = max(
                    one(kind, where, mode, args.timeout, args.interval) for _ in range(args.runs)
                )
                worst = max(worst, overrun)
                print(f"{kind:<10} {where:<8} {mode:<6} {overrun * 1000:>7.1f} ms")
    verdict = "met" if worst <= 0.1 else "NOT met"
    print(f"worst overrun {worst * 1000:.1f} ms: target <= 100 ms {verdict}")
    print(
        f"command: .venv/bin/python bench/attempt_deadline.py --timeout {args.timeout} "
        f"--interval {args.interval} --runs {args.runs}"
    )


if __name__ == "__main__":
    main()
