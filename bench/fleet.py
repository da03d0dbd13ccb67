"""A fleet of worker processes and a dead primary: shared breakers against per-process ones.

Sixteen processes (``flexiai_dev.fleet``) send requests at a fixed rate to
``openai > anthropic`` on the fake LLM server. The primary dies at 0.5 s and comes back
at 2.5 s; the breaker opens after ``failure_threshold`` failures and may probe after 2.5 s,
so no probe is sent while the primary is still down. The same script runs three times:
breakers shared through Redis in pub/sub mode, in snapshot mode, and per process.

* calls wasted on the dead primary: target at most ``failure_threshold`` plus one call in
  flight per worker when shared; per-process breakers need ``workers x failure_threshold``;
* probes at recovery (calls to the primary after it came back, made while the caller's
  breaker was not closed): target exactly one when shared; one per worker otherwise.

    python bench/fleet.py [--workers N] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import uuid

from _common import Row, print_rows, redis_server, row

COMMAND = "python bench/fleet.py"


def run(workers: int = 16, url: str | None = None, duration: float = 4.5) -> list[Row]:
    from flexiai.testing import FakeLLMServer
    from flexiai_dev.fleet import FleetSpec, FleetSummary, Step, run_fleet

    summaries: dict[str, FleetSummary] = {}
    threshold = 5
    with redis_server(url) as server_url, FakeLLMServer() as llm:
        for mode in ("pubsub", "snapshot", "off"):
            llm.reset()
            spec = FleetSpec(
                providers=tuple((name, llm.base_url(name)) for name in ("openai", "anthropic")),
                workers=workers,
                sync=mode,
                redis_url=server_url,
                duration=duration,
                rate=10.0,
                failure_threshold=threshold,
                recovery_timeout=2.5,
                key_prefix=f"bench-fleet-{uuid.uuid4().hex[:6]}",
                script=(Step(0.5, "down", "openai"), Step(2.5, "up", "openai")),
            )
            summaries[mode] = run_fleet(spec, llm).summary()

    local = summaries["off"]
    rows: list[Row] = []
    bound = threshold + workers
    for mode in ("pubsub", "snapshot"):
        shared = summaries[mode]
        rows.append(
            row(
                "fleet",
                f"{workers} workers, calls wasted on the dead primary, shared ({mode})",
                shared.wasted_calls,
                "calls",
                peer="per-process",
                peer_value=local.wasted_calls,
                target=f"<= {bound} (threshold + 1/worker)",
                passed=shared.wasted_calls <= bound,
            )
        )
    rows.append(
        row(
            "fleet",
            f"{workers} workers, calls wasted on the dead primary, per-process",
            local.wasted_calls,
            "calls",
            peer="workers x threshold",
            peer_value=workers * threshold,
        )
    )
    for mode in ("pubsub", "snapshot"):
        shared = summaries[mode]
        rows.append(
            row(
                "fleet",
                f"probes at recovery, shared ({mode})",
                shared.probes_at_recovery,
                "calls",
                peer="per-process",
                peer_value=local.probes_at_recovery,
                target="exactly 1",
                passed=shared.probes_at_recovery == 1,
            )
        )
    for mode in ("pubsub", "snapshot", "off"):
        summary = summaries[mode]
        label = "per-process" if mode == "off" else f"shared ({mode})"
        if summary.failover_time is not None:
            rows.append(
                row(
                    "fleet",
                    f"time until the whole fleet failed over, {label}",
                    summary.failover_time * 1000,
                    "ms",
                    peer="per-process" if mode != "off" else "",
                    peer_value=(local.failover_time or 0) * 1000 if mode != "off" else None,
                )
            )
        rows.append(
            row(
                "fleet",
                f"failed user requests, {label}",
                summary.failed_requests,
                "requests",
                target="0",
                passed=summary.failed_requests == 0,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16, help="worker processes (default 16)")
    parser.add_argument("--redis-url", help="use this server instead of starting one")
    args = parser.parse_args()
    print_rows(run(args.workers, args.redis_url), COMMAND)


if __name__ == "__main__":
    main()
