"""``flexiai status``, ``flexiai reset`` and ``flexiai watch``: the fleet's breakers, from Redis.

    flexiai status [--json]          every provider's shared record, with its TTL
    flexiai reset [PROVIDER]         close breakers for the whole fleet (atomic RESET: the
                                     version bumps and a CLOSED event reaches every worker);
                                     --timeout (10 s) bounds the whole command: past it, it
                                     says what was and was not reset and exits 2
    flexiai watch [--count N]        stream breaker events until Ctrl-C (or N, or --timeout)

Connection settings come from the same ``FLEXIAI_SYNC_*`` variables (and
``FLEXIAI_CONFIG_FILE``) the library reads, through ``flexiai.config.load_config``; flags
override them. Providers are the state keys found by SCAN plus any configured with
``FLEXIAI_PROVIDER_<N>_NAME``. Every store problem is one line on stderr and exit status 2.
redis and rich are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flexiai.cli import CommandError

if TYPE_CHECKING:
    from flexiai.circuit_breaker import BreakerRecord, WindowCounts
    from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
    from flexiai.models import FlexiAIConfig, SyncConfig

__all__ = ["add_arguments", "run"]

#: load_config() insists on a provider; the operator commands need none of their own.
_PLACEHOLDER_PROVIDER = {
    "FLEXIAI_PROVIDER_1_NAME": "operator-placeholder",
    "FLEXIAI_PROVIDER_1_KIND": "openai",
    "FLEXIAI_PROVIDER_1_MODEL": "none",
    "FLEXIAI_PROVIDER_1_BASE_URL": "http://127.0.0.1",
}
#: An operator can wait longer for an answer than a request path can.
_DEFAULT_TIMEOUT = 2.0
#: How long ``flexiai reset`` may take in all, connecting included.
_RESET_TIMEOUT = 10.0


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    store = parser.add_argument_group("store (defaults from FLEXIAI_SYNC_* variables)")
    store.add_argument("--redis-url", help="redis://, rediss://, valkey:// or unix:// URL")
    store.add_argument("--key-prefix", help="state key prefix (FLEXIAI_SYNC_KEY_PREFIX)")
    store.add_argument("--channel", help="event channel (FLEXIAI_SYNC_CHANNEL)")
    store.add_argument(
        "--cluster", action="store_true", default=None, help="Redis Cluster (hash-tagged keys)"
    )
    store.add_argument(
        "--socket-timeout",
        type=_positive,
        metavar="SECONDS",
        help=f"socket timeout (default: the configured one, at least {_DEFAULT_TIMEOUT:g} s)",
    )
    if command == "status":
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    elif command == "reset":
        parser.add_argument("provider", nargs="?", help="one provider (default: every one)")
        parser.add_argument(
            "--timeout",
            type=_positive,
            default=_RESET_TIMEOUT,
            metavar="SECONDS",
            help="give up after SECONDS in all, connecting included, saying what was and "
            f"was not reset (default {_RESET_TIMEOUT:g})",
        )
    elif command == "watch":
        parser.add_argument("--json", action="store_true", help="one JSON document per event")
        parser.add_argument(
            "--count", type=int, metavar="N", help="stop after N events (malformed ones count)"
        )
        parser.add_argument(
            "--timeout", type=_positive, metavar="SECONDS", help="stop after SECONDS"
        )


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def run(args: argparse.Namespace) -> int:
    import logging

    commands = {"status": _status, "reset": _reset, "watch": _watch}
    command = commands.get(args.command)
    if command is None:
        raise CommandError(f"unknown command {args.command!r}")
    # The commands report invalid records and store errors themselves, once, on one line:
    # keep the library's warnings about them from reaching stderr a second time.
    quiet = logging.NullHandler()
    logger = logging.getLogger("flexiai")
    logger.addHandler(quiet)
    try:
        return command(args)
    finally:
        logger.removeHandler(quiet)


# -- settings ------------------------------------------------------------------------------------


def _environment_config() -> tuple[FlexiAIConfig, bool]:
    """The ``FLEXIAI_*`` configuration, and whether it names providers (the operator's
    commands need none: a placeholder fills in)."""
    from flexiai._constants import CONFIG_FILE_VARIABLE
    from flexiai.config import PROVIDER_VARIABLE, load_config
    from flexiai.exceptions import ConfigError

    env = dict(os.environ)
    configured = bool(env.get(CONFIG_FILE_VARIABLE)) or any(
        PROVIDER_VARIABLE.match(name) for name in env
    )
    if not configured:
        env.update(_PLACEHOLDER_PROVIDER)
    try:
        return load_config(env), configured
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def _settings(
    args: argparse.Namespace, *, budget: float | None = None
) -> tuple[SyncConfig, list[str]]:
    """The ``SyncConfig`` to use (environment, then flags) and the configured providers.
    ``budget``: no socket wait may be longer than the whole command may take."""
    from pydantic import ValidationError

    from flexiai.models import SyncConfig

    config, configured = _environment_config()
    overrides: dict[str, Any] = {"enabled": True, "backend": "redis"}
    flags = {
        "redis_url": ("--redis-url", getattr(args, "redis_url", None)),
        "key_prefix": ("--key-prefix", getattr(args, "key_prefix", None)),
        "channel": ("--channel", getattr(args, "channel", None)),
        "redis_cluster": ("--cluster", getattr(args, "cluster", None)),
    }
    overrides.update({name: value for name, (_, value) in flags.items() if value is not None})
    timeout = getattr(args, "socket_timeout", None) or max(
        _DEFAULT_TIMEOUT, config.sync.redis_socket_timeout
    )
    if budget is not None:
        timeout = min(timeout, budget)
    overrides.update(redis_socket_timeout=timeout, redis_socket_connect_timeout=timeout)
    try:
        base = config.sync.model_dump()
        if base["channel"] == f"{base['key_prefix']}:events":
            base["channel"] = ""  # derived: follow a --key-prefix given here
        sync = SyncConfig.model_validate({**base, **overrides})
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        where = flags[field][0] if field in flags else f"FLEXIAI_SYNC_{field.upper()}"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise CommandError(f"{where}: {message}") from None
    if sync.redis_url is not None:
        from urllib.parse import urlsplit

        try:
            urlsplit(sync.redis_url.get_secret_value()).port  # noqa: B018 - validates the port
        except ValueError as exc:
            source = "--redis-url" if flags["redis_url"][1] else "FLEXIAI_SYNC_REDIS_URL"
            raise CommandError(f"{source}: {exc}") from None
    names = [p.name for p in config.providers] if configured else []
    return sync, names


@contextlib.contextmanager
def _store(sync: SyncConfig) -> Iterator[RedisSyncBackend]:
    """The backend, with every failure of the store turned into a one-line CommandError."""
    from redis.exceptions import RedisClusterException, RedisError

    from flexiai.circuit_breaker.stores import connections
    from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
    from flexiai.exceptions import ConfigError, StateStoreError

    where = connections.describe(sync)
    try:
        backend = RedisSyncBackend(sync)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    try:
        yield backend
    except StateStoreError as exc:
        cause = exc.__cause__
        if cause is None:
            raise CommandError(_one_line(str(exc))) from None
        raise CommandError(f"{where}: {type(cause).__name__}: {_one_line(str(cause))}") from None
    except (RedisError, RedisClusterException, OSError) as exc:
        raise CommandError(f"{where}: {type(exc).__name__}: {_one_line(str(exc))}") from None
    except (ConfigError, ValueError) as exc:  # a URL redis-py cannot parse, say
        raise CommandError(f"{where}: {_one_line(str(exc))}") from None
    finally:
        backend.close()


@contextlib.contextmanager
def _client(sync: SyncConfig) -> Iterator[Any]:
    """The process's redis-py client for ``sync`` (the one the backend uses, too)."""
    from flexiai.circuit_breaker.stores import connections

    lease = connections.acquire(sync)
    try:
        yield lease.client
    finally:
        lease.release()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _providers(backend: RedisSyncBackend, configured: list[str]) -> list[str]:
    return sorted(set(backend.list_providers()) | set(configured))


# -- status --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusRow:
    """One provider's stored breaker. Times are epoch seconds on the server's clock."""

    provider: str
    record: BreakerRecord | None  # None: the key holds something unreadable
    window: WindowCounts  # the failure window that ends now
    stored: bool
    ttl_ms: int | None  # None: no key; -1: no expiry

    def as_dict(self, now: float) -> dict[str, Any]:
        data: dict[str, Any] = {"provider": self.provider, "stored": self.stored}
        record = self.record
        if record is None:
            data.update(state="invalid", invalid=True)
        else:
            fields: dict[str, Any] = {
                "state": record.state.value,
                "window_calls": self.window.calls,
                "window_failures": self.window.failures,
                "window_slow_calls": self.window.slow,
                "failure_rate": self.window.failure_rate,
                "consecutive_failures": record.run,
                "opened_because": record.opened_because.value or None,
                "opened_at": _seconds(record.opened_at),
                "open_until": _seconds(record.open_until),
                "probes_in_flight": record.probes_in_flight,
                "probe_lease_until": _seconds(record.probe_lease_until),
                "successes": record.successes,
                "version": record.version,
                "schema": record.schema,
                "updated_by": record.updated_by or None,
                "updated_at": _seconds(record.updated_at),
            }
            data.update(fields, invalid=False)
        data["ttl_ms"] = self.ttl_ms
        data["server_time"] = now
        return data


def _seconds(ms: int) -> float | None:
    return ms / 1000 if ms else None


def read_status(
    sync: SyncConfig, backend: RedisSyncBackend, configured: list[str], *, window_ms: int
) -> tuple[list[StatusRow], float]:
    """Every provider's record, its window's counts and TTL, and the server's clock."""
    providers = _providers(backend, configured)
    if not providers:
        return [], time.time()
    snapshot = backend.load(providers)
    keys = _keys(sync, backend, providers)
    rows = []
    for name in providers:
        ttl, kind = keys[name]
        # MGET reads a key of another type as absent; status shows it as the garbage it is.
        garbage = name in snapshot.invalid or kind not in ("string", "none")
        record = snapshot.records[name]
        rows.append(
            StatusRow(
                provider=name,
                record=None if garbage else record,
                window=record.window(snapshot.now, window_ms),
                stored=ttl is not None,
                ttl_ms=ttl,
            )
        )
    return rows, snapshot.now / 1000


def _keys(
    sync: SyncConfig, backend: RedisSyncBackend, providers: list[str]
) -> dict[str, tuple[int | None, str]]:
    """Each provider's key: its PTTL (None: no key) and its TYPE."""
    with _client(sync) as client:
        pipe = client.pipeline(transaction=False)
        for name in providers:
            pipe.pttl(backend.key_for(name))
            pipe.type(backend.key_for(name))
        replies = pipe.execute()
    out: dict[str, tuple[int | None, str]] = {}
    for index, name in enumerate(providers):
        ttl, kind = int(replies[2 * index]), replies[2 * index + 1]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        out[name] = (None if ttl == -2 else ttl, kind)
    return out


def _window_ms() -> int:
    """The failure window the fleet is configured with (``FLEXIAI_CIRCUIT_BREAKER_*``)."""
    from flexiai.circuit_breaker import Policy

    config, _ = _environment_config()
    return Policy.from_config(config.circuit_breaker).failure_window


def _status(args: argparse.Namespace) -> int:
    sync, configured = _settings(args)
    with _store(sync) as backend:
        rows, now = read_status(sync, backend, configured, window_ms=_window_ms())
        where = backend.describe()
    if args.json:
        print(json.dumps([row.as_dict(now) for row in rows], indent=2))
        return 0
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        raise CommandError(
            "the status table needs rich: pip install 'flexiai[cli]' (or use --json)"
        ) from None
    # Not a terminal (a pipe, a log): never squeeze the table into 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 160)
    if not rows:
        console.print(f"no breaker state under prefix {sync.key_prefix!r} on {where}")
        return 0
    table = Table(title=f"flexiai breakers on {where} (prefix {sync.key_prefix!r})")
    for column in (
        "provider",
        "state",
        "calls",
        "failures",
        "failure rate",
        "in a row",
        "opened",
        "may probe",
        "probes",
        "version",
        "last changed by",
        "ttl",
    ):
        table.add_column(
            column,
            justify="left"
            if column in ("provider", "state", "opened", "last changed by")
            else "right",
        )
    colours = {"CLOSED": "green", "OPEN": "red", "HALF_OPEN": "yellow"}
    for row in rows:
        record = row.record
        if record is None:
            table.add_row(
                row.provider,
                "[bold magenta]invalid[/]",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                _ttl(row.ttl_ms),
            )
            continue
        state = record.state.value
        changed = record.updated_by or "-"
        if record.updated_at:
            changed += f" ({_ago(now - record.updated_at / 1000)})"
        opened = "-"
        if record.opened_at:
            opened = _ago(now - record.opened_at / 1000)
            if record.opened_because:
                opened += f", {record.opened_because.value.replace('_', ' ')}"
        rate = row.window.failure_rate
        table.add_row(
            row.provider,
            f"[{colours[state]}]{state}[/]",
            str(row.window.calls),
            str(row.window.failures),
            "-" if rate is None else f"{rate:.1f}%",
            str(record.run),
            opened,
            _probe_time(record, now),
            str(record.probes_in_flight),
            str(record.version),
            changed,
            _ttl(row.ttl_ms),
        )
    console.print(table)
    return 0


def _ago(seconds: float) -> str:
    return f"{_duration(max(0.0, seconds))} ago"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _probe_time(record: BreakerRecord, now: float) -> str:
    state = record.state.value
    lease_until, open_until = record.probe_lease_until / 1000, record.open_until / 1000
    if state == "CLOSED":
        return "-"
    if state == "HALF_OPEN":
        if lease_until > now:
            return f"probing (lease {_duration(lease_until - now)} left)"
        return "now (lease expired)"
    return "now" if now >= open_until else f"in {_duration(open_until - now)}"


def _ttl(ttl_ms: int | None) -> str:
    if ttl_ms is None:
        return "- (no key)"
    if ttl_ms < 0:
        return "no expiry"
    return _duration(ttl_ms / 1000)


# -- reset ---------------------------------------------------------------------------------------


def _operator_id() -> str:
    return f"operator@{socket.gethostname()[:40]}-{os.getpid()}"


class _ResetProgress:
    """What ``flexiai reset`` has done so far, for the one line it ends with when the store
    fails or does not answer in time. Once the command gave up (``abandon``), the worker
    thread, possibly still waiting on a frozen server, prints nothing more."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self.listed = False
        self.providers: list[str] | None = None  # what is to be reset, once known
        self.done: list[str] = []
        self.current: str | None = None

    def sending(self, provider: str) -> None:
        with self._lock:
            self.current = provider

    def sent(self, provider: str) -> None:
        with self._lock:
            self.current = None
            self.done.append(provider)

    def say(self, line: str) -> None:
        with self._lock:
            if not self._abandoned:
                print(line, flush=True)

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True

    def summary(self) -> str:
        with self._lock:
            if self.providers is None:
                return "nothing was reset"
            pending = [p for p in self.providers if p not in self.done and p != self.current]
            parts = [f"reset: {', '.join(self.done) or 'none'}"]
            if pending:
                parts.append(f"not reset: {', '.join(pending)}")
            if self.current is not None:
                parts.append(f"unknown whether {self.current} was reset (its reset was sent)")
            return "; ".join(parts)


def _reset(args: argparse.Namespace) -> int:
    """Run the reset in a thread and wait at most ``--timeout`` for it: a frozen or
    overloaded server cannot keep the operator waiting, and the answer says what was done."""
    sync, configured = _settings(args, budget=args.timeout)
    progress = _ResetProgress()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["code"] = _reset_all(args, sync, configured, progress)
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=work, name="flexiai-reset", daemon=True)
    thread.start()
    thread.join(args.timeout)
    if thread.is_alive():
        progress.abandon()
        raise CommandError(
            f"the store did not answer within {args.timeout:g}s; {progress.summary()}"
        )
    error = outcome.get("error")
    if isinstance(error, CommandError) and (progress.providers or not progress.listed):
        raise CommandError(f"{error}; {progress.summary()}") from None
    if error is not None:
        raise error
    code: int = outcome["code"]
    return code


def _reset_all(
    args: argparse.Namespace,
    sync: SyncConfig,
    configured: list[str],
    progress: _ResetProgress,
) -> int:
    from flexiai.circuit_breaker import Op, Policy
    from flexiai.models import CircuitBreakerConfig

    policy = Policy.from_config(CircuitBreakerConfig())  # RESET ignores every setting
    worker = _operator_id()
    with _store(sync) as backend:
        known = _providers(backend, configured)
        progress.listed = True
        if args.provider and args.provider not in known:
            # A typo must not look like success ("already CLOSED, nothing to change").
            listed = (
                ", ".join(known)
                if known
                else f"none (no breaker state under prefix {sync.key_prefix!r} on "
                f"{backend.describe()}, and no FLEXIAI_PROVIDER_<N>_NAME configured)"
            )
            raise CommandError(f"unknown provider {args.provider!r}; known providers: {listed}")
        providers = [args.provider] if args.provider else known
        if not providers:
            progress.say(
                f"nothing to reset: no breaker state under prefix {sync.key_prefix!r} "
                f"on {backend.describe()}"
            )
            return 0
        progress.providers = providers
        before = backend.load(providers)
        for name in providers:
            record = before.records[name]
            old = record.state.value
            if record.run:
                old += f" with {record.run} failure{'s' * (record.run > 1)} in a row"
            invalid_before = backend.stats()["invalid_records"]
            progress.sending(name)
            result = backend.transition(name, Op.RESET, policy, worker)
            progress.sent(name)
            # Garbage the load saw, or a key of another type that only the script sees.
            if name in before.invalid or backend.stats()["invalid_records"] > invalid_before:
                old = "invalid state"
            version = result.record.version
            if old == "CLOSED":
                progress.say(
                    f"{name}: already CLOSED"
                    + (
                        f" (version {version})"
                        if result.changed
                        else ", nothing to change; every worker told to read it again"
                    )
                )
            else:
                progress.say(f"{name}: {old} -> CLOSED for the whole fleet (version {version})")
    return 0


# -- watch ---------------------------------------------------------------------------------------


def format_event(payload: Any, *, as_json: bool) -> str:
    """One line for one message on the channel; a malformed message is shown, not raised."""
    from flexiai.circuit_breaker import decode_event

    try:
        event = decode_event(payload)
    except Exception as exc:  # MalformedEventError, or bytes that are not even text
        raw = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
        raw = raw if len(raw) <= 200 else raw[:200] + "..."
        if as_json:
            return json.dumps({"malformed": True, "error": str(exc), "raw": raw})
        return f"{time.strftime('%H:%M:%S')}  malformed event ({exc}): {raw!r}"
    record = event.record
    if as_json:
        return json.dumps(
            {
                "malformed": False,
                "type": event.type.value,
                "prefix": event.prefix,
                "provider": event.provider,
                "worker_id": event.worker_id,
                "ts": event.timestamp,
                "version": event.version,
                "record": record.to_doc(),
            }
        )
    open_for = max(0, record.open_until - event.timestamp) / 1000
    lease_for = max(0, record.probe_lease_until - event.timestamp) / 1000
    detail = {
        "OPENED": f"open until +{_duration(open_for)}"
        + (f" ({record.opened_because.value.replace('_', ' ')})" if record.opened_because else ""),
        "HALF_OPEN": f"probe lease until +{_duration(lease_for)}",
        "FAILURE": f"in a row={record.run}",
        "SUCCESS": f"successes={record.successes}",
        "CLOSED": "",
    }[event.type.value]
    stamp = time.strftime("%H:%M:%S", time.localtime(event.timestamp // 1000))
    millis = event.timestamp % 1000
    return (
        f"{stamp}.{millis:03d}  {event.type.value:<9} {event.provider}  "
        f"v{event.version}  by {event.worker_id}  {detail}"
    ).rstrip()


def _watch(args: argparse.Namespace) -> int:
    sync, _ = _settings(args)
    if args.count is not None and args.count < 1:
        raise CommandError("--count must be at least 1")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    seen = 0
    with _store(sync) as backend, _client(sync) as client:
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(sync.channel)
            while deadline is None or time.monotonic() < deadline:
                wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                message = pubsub.get_message(timeout=max(0.0, wait))
                if message is None:
                    continue
                kind = message.get("type")
                kind = kind.decode() if isinstance(kind, bytes) else kind
                if kind == "subscribe":
                    print(
                        f"watching {sync.channel!r} on {backend.describe()} (Ctrl-C to stop)",
                        file=sys.stderr,
                        flush=True,
                    )
                elif kind == "message":
                    print(format_event(message.get("data"), as_json=args.json), flush=True)
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        break
        finally:
            pubsub.close()
    return 0
