"""Memory across clients: create a ``FlexiAI``, (optionally) make one request, close it;
repeat, and watch the process's RSS (issue 12, item 7: 200 clients grew RSS by 4.4 MB).

A create/close loop should reach a plateau: after the first few hundred clients (caches,
interned strings, allocator arenas filling up), RSS stops growing. Printed per mode: RSS
growth at each checkpoint, relative to after the warm-up, and the slope over the second
half of the run in bytes per client. ``--trace`` adds the largest tracemalloc differences
(Python allocations only; C allocations such as OpenSSL's are not traced).

The providers are a fake LLM server in a child process, so its own bookkeeping is not
counted. Modes: ``build`` (construct and close), ``sync`` (one ``generate``), ``async``
(one ``agenerate`` in a fresh event loop, closed with ``aclose``).

    .venv/bin/python bench/client_memory.py [--clients 1000] [--warmup 20] [--trace]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flexiai import FlexiAI
from flexiai.models import FlexiAIConfig, ProviderConfig

NAMES = ("openai", "anthropic", "gemini")


def rss_bytes() -> int:
    statm = Path("/proc/self/statm").read_text()
    return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")


def start_server() -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flexiai.testing.fake_llm", "--providers", ",".join(NAMES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # the server's own URL
    urls = dict(proc.stdout.readline().split() for _ in NAMES)
    return proc, urls


def one_client(config: FlexiAIConfig, mode: str) -> None:
    client = FlexiAI(config)
    if mode == "sync":
        with client:
            client.generate("hi")
    elif mode == "async":

        async def run() -> None:
            async with client:
                await client.agenerate("hi")

        asyncio.run(run())
    else:
        client.close()


def measure(config: FlexiAIConfig, mode: str, clients: int, warmup: int, trace: bool) -> None:
    for _ in range(warmup):
        one_client(config, mode)
    gc.collect()
    if trace:
        tracemalloc.start(12)
        before = tracemalloc.take_snapshot()
    base = rss_bytes()
    step = max(1, clients // 5)
    half_at = None
    print(f"{mode}: RSS growth after N clients (from after {warmup} warm-up clients)")
    for i in range(1, clients + 1):
        one_client(config, mode)
        if i == clients // 2:
            gc.collect()
            half_at = rss_bytes()
        if i % step == 0:
            gc.collect()
            print(f"  {i:>6} clients  {(rss_bytes() - base) / 1e6:+7.2f} MB")
    assert half_at is not None
    slope = (rss_bytes() - half_at) / (clients - clients // 2)
    print(f"  second half: {slope:+.0f} bytes per client")
    if trace:
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        for stat in after.compare_to(before, "lineno")[:5]:
            print(f"    {stat}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--modes", default="build,sync,async")
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    proc, urls = start_server()
    try:
        config = FlexiAIConfig(
            providers=[
                ProviderConfig(name=n, model="m", api_key="sk-bench", base_url=urls[n])
                for n in NAMES
            ]
        )
        for mode in args.modes.split(","):
            measure(config, mode, args.clients, args.warmup, args.trace)
    finally:
        proc.terminate()
        proc.wait()
    print(
        "command: .venv/bin/python bench/client_memory.py "
        f"--clients {args.clients} --warmup {args.warmup} --modes {args.modes}"
        + (" --trace" if args.trace else "")
    )


if __name__ == "__main__":
    main()
