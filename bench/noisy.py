"""A noisy-but-healthy primary: does the fleet's breaker keep it, and drop it once it dies?

Warm fleets of worker processes (``flexiai_dev.fleet``; 8 and 16 by default) send
requests at a fixed rate (19 per second each: about 150 per second for 8 workers) to
``primary > secondary`` on the fake LLM server. Each fleet plays one script, phase after
phase: healthy, then the primary fails 2 %, 20 %, 50 % and 100 % of its calls with a
transient 500 (seeded: the same calls fail in every run), each phase followed by a quiet
gap long enough for any open breaker to probe and close. A failed call fails over to the
secondary (no retries), so with no breaker at all the primary answers ``1 - error rate``
of the requests. The same script runs for four variants, each against its own
redis-server:

* flexiai, breakers shared through Redis, pub/sub mode;
* flexiai, shared, snapshot mode (``snapshot_max_age`` 1 s, the default);
* flexiai, per-process breakers (sync off);
* the peer: pybreaker with its Redis storage (``CircuitRedisStorage``), ``fail_max`` =
  ``failure_threshold``, ``reset_timeout`` = ``recovery_timeout``.

Per variant, fleet size and error rate it reports the primary's share of the answers; the
time from the phase's first failure until the whole fleet skips the primary (every
worker's view of its breaker left CLOSED); at 100 % the calls wasted on the dead primary;
the probes sent at recovery (calls to the primary in the quiet gap made while the caller's
breaker was not closed); and, on the healthy fleet, the Redis commands each worker sends
per second (``MONITOR``; ``INFO commandstats`` after ``CONFIG RESETSTAT`` also counts the
commands a script runs, shown apart). For the shared variants it also shows why the breaker
opened (its OPENED events), and, each time the run rule opened it, how many failures in a
row the fleet's calls really had then. Each figure is set against pybreaker's in the same
run (pybreaker's own against the ideal). Targets: at 2 % the primary's share is at least
97 %; at 50 % and 100 % the breaker opens; at 100 % at most ``failure_threshold`` + workers
calls are wasted; a healthy fleet sends at most one command per worker per second.

    python bench/noisy.py [--workers 8,16] [--variants pubsub,snapshot,off,pybreaker] [--quick]

``--quick`` is a smoke run (2 workers per variant, short phases, every variant at once):
its figures only show that everything runs.
"""

from __future__ import annotations

import argparse
import contextlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from _common import CommandCounter, Row, print_rows, row

if TYPE_CHECKING:
    from flexiai_dev.fleet import FleetResult, FleetSpec, PhaseSummary

COMMAND = "python bench/noisy.py"
ERROR_RATES = (0.02, 0.2, 0.5, 1.0)
VARIANTS = ("pubsub", "snapshot", "off", "pybreaker")
LABELS = {
    "pubsub": "flexiai pub/sub",
    "snapshot": "flexiai snapshot",
    "off": "flexiai per-process",
    "pybreaker": "pybreaker + Redis",
}
PEER = "pybreaker"
FAILURE_THRESHOLD = 5
SHARE_TARGET = 0.97  # at 2 % errors
COMMANDS_TARGET = 1.0  # per worker per second, healthy fleet
SHARED = ("pubsub", "snapshot")


@dataclass(frozen=True)
class Timing:
    """How long each phase lasts (seconds), and the breaker timings that fit them."""

    healthy: float
    noisy: dict[float, float]
    gap: float
    rate: float = 19.0
    recovery_timeout: float = 2.0
    failure_window: float = 5.0
    snapshot_max_age: float = 1.0
    workers: tuple[int, ...] = (8, 16)
    parallel: bool = False


#: 50 %: a failure_window and a second, the time the rate rule takes at worst (the window
#: still holds the quiet gap's successes when the phase starts).
FULL = Timing(healthy=6.0, noisy={0.02: 6.0, 0.2: 5.0, 0.5: 6.0, 1.0: 1.0}, gap=3.5)
QUICK = Timing(
    healthy=1.2,
    noisy={0.02: 1.0, 0.2: 0.8, 0.5: 0.8, 1.0: 0.5},
    gap=1.6,
    rate=10.0,
    recovery_timeout=1.0,
    failure_window=2.0,
    snapshot_max_age=0.5,
    workers=(2,),
    parallel=True,
)


@dataclass(frozen=True)
class Phase:
    error_rate: float
    start: float
    end: float
    until: float  # the quiet gap after it, where probes at recovery are counted


def schedule(timing: Timing) -> tuple[list[Phase], float]:
    """The phases after the healthy start, and the run's duration."""
    phases = []
    at = timing.healthy
    for error_rate in ERROR_RATES:
        end = at + timing.noisy[error_rate]
        phases.append(Phase(error_rate, at, end, end + timing.gap))
        at = end + timing.gap
    return phases, at


@dataclass
class Outcome:
    variant: str
    workers: int
    result: FleetResult
    commands: dict[str, Any] = field(default_factory=dict)
    phases: dict[float, PhaseSummary] = field(default_factory=dict)
    #: why the shared breaker opened in each phase (flexiai's OPENED events)
    reasons: dict[float, list[str]] = field(default_factory=dict)
    #: each time the run rule opened it: the failures in a row the fleet really had then
    real_runs: dict[float, list[int]] = field(default_factory=dict)


class _Opened:
    """Every OPENED event on a shared fleet's channel: when (server clock) and why."""

    def __init__(self, url: str, channel: str) -> None:
        import threading

        import redis

        self.seen: list[tuple[float, str]] = []
        self._client: Any = cast(Any, redis.Redis.from_url(url, protocol=2))
        self._pubsub = self._client.pubsub()
        self._pubsub.subscribe(channel)
        while self._pubsub.get_message(timeout=1.0) is None:  # subscribed from here on
            pass
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="opened-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from flexiai.circuit_breaker import EventType, decode_event

        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            if message is None or message["type"] != "message":
                continue
            event = decode_event(message["data"])
            if event.type is EventType.OPENED:
                reason = event.record.opened_because.value or "?"
                self.seen.append((event.timestamp / 1000, reason))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._pubsub.close()
        self._client.close()


def _spec(
    variant: str, workers: int, timing: Timing, llm: Any, redis_url: str, tag: str
) -> FleetSpec:
    from flexiai_dev.fleet import FleetSpec, Step

    phases, duration = schedule(timing)
    primary, secondary = f"openai-{tag}", f"anthropic-{tag}"
    script: list[Step] = []
    for phase in phases:
        script.append(Step(phase.start, "noisy", primary, phase.error_rate))
        script.append(Step(phase.end, "noisy", primary, 0.0))
    return FleetSpec(
        providers=((primary, llm.base_url(primary)), (secondary, llm.base_url(secondary))),
        workers=workers,
        sync="off" if variant == "off" else ("snapshot" if variant == "snapshot" else "pubsub"),
        breaker="pybreaker" if variant == "pybreaker" else "flexiai",
        redis_url=redis_url,
        duration=duration,
        rate=timing.rate,
        script=tuple(script),
        failure_threshold=FAILURE_THRESHOLD,
        failure_window=timing.failure_window,
        failure_rate_threshold=50.0,
        minimum_calls=20,
        recovery_timeout=timing.recovery_timeout,
        probe_lease_ttl=max(1.0, timing.recovery_timeout),
        snapshot_max_age=timing.snapshot_max_age,
        max_retries=0,
        key_prefix=f"bench-noisy-{tag}-{uuid.uuid4().hex[:6]}",
        error_seed=7,
    )


@contextlib.contextmanager
def _servers(count: int) -> Iterator[list[str]]:
    """``count`` throwaway redis-servers: each variant's commands are counted on its own."""
    import shutil

    from flexiai_dev.servers import LocalRedis

    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(LocalRedis(shutil.which("redis-server"))).url for _ in range(count)
        ]


def measure(
    workers: Sequence[int] = FULL.workers,
    variants: Sequence[str] = VARIANTS,
    timing: Timing = FULL,
) -> list[Outcome]:
    """Run every (fleet size, variant): one after the other, or all at once with
    ``timing.parallel``."""
    from flexiai.testing import FakeLLMServer
    from flexiai_dev.fleet import Fleet

    runs = [(n, v) for n in workers for v in variants]
    phases, _ = schedule(timing)
    # the healthy fleet's commands: from 1 s in (warm) to the first noisy phase
    window = (min(1.0, timing.healthy / 2), timing.healthy)
    outcomes: list[Outcome] = []
    with _servers(len(runs)) as urls, FakeLLMServer() as llm:
        fleets: list[tuple[Fleet, CommandCounter, tuple[int, str]]] = []
        logs: list[_Opened | None] = []
        with contextlib.ExitStack() as stack:
            for i, ((n, variant), url) in enumerate(zip(runs, urls, strict=True)):
                spec = _spec(variant, n, timing, llm, url, f"{variant[:2]}{n}x{i}")
                counter = CommandCounter(url)
                stack.callback(counter.close)
                log = _Opened(url, spec.events_channel) if variant in SHARED else None
                if log is not None:
                    stack.callback(log.close)
                logs.append(log)
                fleets.append((Fleet(spec, llm), counter, (n, variant)))
            results = _play(fleets, window, stack, parallel=timing.parallel)
        for (_, _, (n, variant)), (result, commands), log in zip(
            fleets, results, logs, strict=True
        ):
            outcome = Outcome(variant, n, result, commands)
            for phase in phases:
                outcome.phases[phase.error_rate] = result.phase(
                    phase.start, phase.end, until=phase.until
                )
                if log is None:
                    continue
                seen = [
                    (at - result.started_at, reason)
                    for at, reason in log.seen
                    if phase.start <= at - result.started_at < phase.until
                ]
                outcome.reasons[phase.error_rate] = [reason for _, reason in seen]
                outcome.real_runs[phase.error_rate] = [
                    real_run(result, at) for at, reason in seen if reason == "consecutive_failures"
                ]
            outcomes.append(outcome)
    return outcomes


def real_run(result: FleetResult, at: float) -> int:
    """The failures in a row, fleet-wide, that end with the last failed call to the primary
    started before ``at`` (calls in start order; a call takes milliseconds): what the run
    rule should have seen when it opened the breaker at ``at``. Generous to the rule: the
    calls started after that failure are left out."""
    calls = [c for _, c in result.calls(result.spec.primary) if c.t < at]
    while calls and calls[-1].ok:
        calls.pop()
    run = 0
    for call in reversed(calls):
        if call.ok:
            break
        run += 1
    return run


def _play(
    fleets: list[tuple[Any, CommandCounter, tuple[int, str]]],
    window: tuple[float, float],
    stack: contextlib.ExitStack,
    *,
    parallel: bool,
) -> list[tuple[FleetResult, dict[str, Any]]]:
    import threading

    out: list[tuple[FleetResult, dict[str, Any]] | None] = [None] * len(fleets)
    errors: list[BaseException] = []

    def play(index: int) -> None:
        fleet, counter, _ = fleets[index]
        commands: dict[str, Any] = {}

        def stop() -> None:
            commands.update(counter.stop())

        try:
            result = fleet.run(actions=[(window[0], counter.start), (window[1], stop)])
            out[index] = (result, commands)
        except BaseException as exc:  # raised again below, from the caller's thread
            errors.append(exc)

    if parallel:
        for fleet, _, _ in fleets:
            stack.enter_context(fleet)
        threads = [
            threading.Thread(target=play, args=(i,), daemon=True) for i in range(len(fleets))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for index, (fleet, _, _) in enumerate(fleets):
            with fleet:  # one fleet at a time: the others are not started yet
                play(index)
            if errors:
                break
    if errors:
        raise errors[0]
    return [item for item in out if item is not None]


# -- the rows ---------------------------------------------------------------------------------


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def rows(outcomes: Sequence[Outcome]) -> list[Row]:
    by = {(o.workers, o.variant): o for o in outcomes}
    out: list[Row] = []
    for o in outcomes:
        peer = by.get((o.workers, PEER)) if o.variant != PEER else None
        label = f"{o.workers} workers, {LABELS[o.variant]}"
        for error_rate, phase in o.phases.items():
            out += _phase_rows(label, o, error_rate, phase, peer)
        out += _command_rows(label, o, peer)
    return out


def _phase_rows(
    label: str, o: Outcome, error_rate: float, phase: PhaseSummary, peer: Outcome | None
) -> list[Row]:
    errors = f"{error_rate * 100:g} % errors"
    peer_phase = peer.phases.get(error_rate) if peer is not None else None
    peer_name = "pybreaker" if peer is not None else ""
    out: list[Row] = []

    share = _pct(phase.primary_share)
    if share is not None:
        if peer_phase is not None:
            peer_share, name = _pct(peer_phase.primary_share), peer_name
        else:
            peer_share, name = round(100 * (1 - error_rate), 2), "no breaker"
        target, passed = "", None
        if error_rate == 0.02:
            target, passed = f">= {SHARE_TARGET * 100:g} %", share >= SHARE_TARGET * 100
        out.append(
            row(
                "noisy",
                f"{label}, {errors}: primary's share of answers",
                share,
                "%",
                peer=name,
                peer_value=peer_share or None,
                target=target,
                passed=passed,
            )
        )

    skips = phase.fleet_skips_after
    target, passed = "", None
    if error_rate >= 0.5:
        target, passed = "opens", skips is not None
    elif error_rate == 0.02:
        target, passed = "never opens", not phase.opened
    peer_skips = peer_phase.fleet_skips_after if peer_phase is not None else None
    out.append(
        row(
            "noisy",
            f"{label}, {errors}: first failure until the whole fleet skips the primary",
            skips * 1000
            if skips is not None
            else ("opened, not by all" if phase.opened else "never"),
            "ms",
            peer=peer_name if peer_phase is not None else "",
            peer_value=peer_skips * 1000 if peer_skips else None,
            ratio=(skips / peer_skips) if skips is not None and peer_skips else None,
            target=target,
            passed=passed,
        )
    )

    if error_rate == 1.0:
        bound = FAILURE_THRESHOLD + o.workers
        out.append(
            row(
                "noisy",
                f"{label}, {errors}: calls wasted on the dead primary",
                phase.wasted_calls,
                "calls",
                peer=peer_name if peer_phase is not None else "threshold + workers",
                peer_value=peer_phase.wasted_calls if peer_phase is not None else bound,
                target=f"<= {bound} (threshold + workers)" if o.variant in SHARED else "",
                passed=phase.wasted_calls <= bound if o.variant in SHARED else None,
            )
        )
    reasons = o.reasons.get(error_rate)
    if reasons:
        out.append(
            row(
                "noisy",
                f"{label}, {errors}: why the shared breaker opened",
                ", ".join(f"{r} x{reasons.count(r)}" for r in sorted(set(reasons))),
                "",
            )
        )
    runs = o.real_runs.get(error_rate)
    if runs:
        out.append(
            row(
                "noisy",
                f"{label}, {errors}: real failures in a row when the run rule opened it "
                f"(fewest of {len(runs)})",
                min(runs),
                "calls",
                peer="failure_threshold",
                peer_value=FAILURE_THRESHOLD,
                target=f">= {FAILURE_THRESHOLD}",
                passed=min(runs) >= FAILURE_THRESHOLD,
            )
        )
    if phase.opened:
        peer_opened = peer_phase is not None and peer_phase.opened
        out.append(
            row(
                "noisy",
                f"{label}, {errors}: probes at recovery",
                phase.probes_after,
                "calls",
                peer=peer_name if peer_opened else "",
                peer_value=peer_phase.probes_after if peer_opened and peer_phase else None,
            )
        )
    return out


def _command_rows(label: str, o: Outcome, peer: Outcome | None) -> list[Row]:
    commands = o.commands
    seconds = float(commands.get("seconds") or 0.0)
    if not seconds:
        return []

    def per_worker(outcome: Outcome | None, key: str) -> float | None:
        if outcome is None or not outcome.commands.get("seconds"):
            return None
        value = outcome.commands[key] / outcome.workers / outcome.commands["seconds"]
        return round(float(value), 3)

    sent = per_worker(o, "sent")
    executed = per_worker(o, "executed")
    assert sent is not None
    assert executed is not None
    checked = o.variant in SHARED
    # a worker that flushes once a second may flush at both edges of the window
    allowed = COMMANDS_TARGET * (1 + 1 / seconds)
    by_command = ", ".join(f"{k} {v}" for k, v in sorted(commands["sent_by_command"].items()))
    return [
        row(
            "noisy",
            f"{label}, healthy: Redis commands sent per worker per second ({by_command or 'none'})",
            sent,
            "cmd/s",
            peer="pybreaker" if peer is not None else "",
            peer_value=per_worker(peer, "sent") or None,
            target=f"<= {COMMANDS_TARGET:g} (+1 per worker at the window's edges)"
            if checked
            else "",
            passed=sent <= allowed if checked else None,
        ),
        row(
            "noisy",
            f"{label}, healthy: Redis commands executed per worker per second, incl. inside scripts",
            executed,
            "cmd/s",
            peer="pybreaker" if peer is not None else "",
            peer_value=per_worker(peer, "executed") or None,
        ),
    ]


_SHORT = {
    "consecutive_failures": "run",
    "failure_rate": "rate",
    "slow_calls": "slow",
    "probe_failed": "probe",
    "retry_after": "429",
}


def matrix(outcomes: Sequence[Outcome]) -> str:
    """A compact view: the primary's share, and whether the breaker opened, per error rate."""
    head = ["variant", *(f"{r * 100:g} %" for r in ERROR_RATES)]
    lines = [head]
    for o in outcomes:
        cells = [f"{o.workers} x {LABELS[o.variant]}"]
        for error_rate in ERROR_RATES:
            phase = o.phases.get(error_rate)
            if phase is None:
                cells.append("-")
                continue
            share = "-" if phase.primary_share is None else f"{100 * phase.primary_share:.1f} %"
            why = sorted({_SHORT.get(r, r) for r in o.reasons.get(error_rate, [])})
            opened = f" (opened: {'+'.join(why)})" if why else " (opened)"
            cells.append(f"{share}{opened if phase.opened else ''}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "primary's share of answers (opened: the breaker left CLOSED; why, for shared "
        "breakers: run = failure_threshold failures in a row, rate = failure rate)"
    ]
    text += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(text)


def run(
    workers: Sequence[int] | None = None,
    variants: Sequence[str] = VARIANTS,
    *,
    quick: bool = False,
) -> list[Row]:
    timing = QUICK if quick else FULL
    outcomes = measure(workers or timing.workers, variants, timing)
    return rows(outcomes)


def command_line(workers: Sequence[int] | None, variants: Sequence[str], quick: bool) -> str:
    parts = [COMMAND]
    if workers is not None:
        parts.append("--workers " + ",".join(map(str, workers)))
    if tuple(variants) != VARIANTS:
        parts.append("--variants " + ",".join(variants))
    if quick:
        parts.append("--quick")
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", help="fleet sizes, comma-separated (default 8,16)")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, of {','.join(VARIANTS)} (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: tiny fleets, short phases"
    )
    args = parser.parse_args(argv)
    workers = [int(n) for n in args.workers.split(",")] if args.workers else None
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        parser.error(f"--variants: unknown {', '.join(unknown) or '(none given)'}")
    if workers is not None and (not workers or min(workers) < 1 or max(workers) > 64):
        parser.error("--workers: sizes between 1 and 64")
    timing = QUICK if args.quick else FULL
    outcomes = measure(workers or timing.workers, variants, timing)
    print(matrix(outcomes))
    print()
    print_rows(rows(outcomes), command_line(workers, variants, args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
