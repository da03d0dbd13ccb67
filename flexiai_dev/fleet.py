"""A fleet of worker processes driven through a scripted provider outage, and its numbers.

Each worker is a separate process (``python -m flexiai_dev.fleet worker SPEC INDEX``)
that builds its own ``FlexiAI`` (sync through Redis in ``pubsub`` or ``snapshot`` mode, or
``off``: per-process breakers, for comparison) and sends requests at a fixed rate. Every
HTTP call it makes is recorded by a wrapping transport, with the worker's view of that
provider's breaker at the moment of the call, and every record goes back to the parent as
one JSON line on the worker's stdout. The parent flips fake providers down and up at
scripted times (through ``FakeLLMServer`` itself or its HTTP control API) and turns the
records into the figures that say whether sharing breakers worked::

    with FakeLLMServer() as llm, LocalRedis() as redis:
        spec = outage_spec([(n, llm.base_url(n)) for n in ("openai", "anthropic")],
                           redis_url=redis.url, workers=8, duration=6.0)
        result = run_fleet(spec, llm)
        print(result.summary())   # wasted calls, failover time, probes, failbacks ...

Definitions (``FleetSummary``), with ``down``/``up`` the script's outage of the primary:

* **wasted calls**: calls to the primary that failed;
* **failover time**: from ``down`` to the last call made to the primary, during the
  outage, by a worker whose breaker view was CLOSED (after it, the whole fleet is on the
  secondary; probes excluded, they are counted apart);
* **probes at recovery**: calls to the primary after ``up`` made while the caller's view of
  its breaker was not CLOSED (one per fleet when shared, one per worker when not);
* **failback time**: from ``up`` until every worker has had a successful primary call;
* **failed requests**: user requests that raised.

A provider can also be *noisy*: healthy, but failing a seeded fraction of its calls with a
transient 5xx (``FleetSpec.error_rate`` from the start, ``Step(at, "noisy", name, rate)``
during the run). ``FleetResult.phase(start, end)`` gives the figures of such a stretch
(``PhaseSummary``: the primary's share of answers, waste, time until the whole fleet skips
it, probes at recovery). ``breaker="pybreaker"`` runs the same fleet with pybreaker and its
Redis storage instead of flexiai's breakers, as the peer to compare with; ``run_fleets``
plays several fleets at once (a pub/sub one and a snapshot one, say). ``RedisFaults`` does
to the Redis they share what an outage, a careless neighbour or an attacker would (freeze,
kill and restart, FLUSHALL, poisoned keys, forged and garbage events), as ``actions`` of a
run; each request's record says how many store operations it waited for and saw fail.

Everything is bounded: workers stop at the end of the run, after ``max_requests``, when
their stdin closes (the parent died) or when told to; the parent kills what is left and
removes its temporary directory in ``close()``, at exit and on SIGTERM.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import httpx

    from flexiai.models import FlexiAIConfig

__all__ = [
    "Breaker",
    "BreakerEvent",
    "Call",
    "Controller",
    "Fleet",
    "FleetError",
    "FleetResult",
    "FleetSpec",
    "FleetSummary",
    "HttpController",
    "PhaseSummary",
    "RedisFaults",
    "RedisServer",
    "RequestRecord",
    "Step",
    "SyncMode",
    "outage_spec",
    "run_fleet",
    "run_fleets",
]

SyncMode = Literal["pubsub", "snapshot", "off"]
Breaker = Literal["flexiai", "pybreaker"]
_CLOSED = "CLOSED"


class FleetError(RuntimeError):
    """A worker or a server could not be started, or the fleet broke its own rules."""


# -- the specification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """At ``at`` seconds after the fleet starts, take ``provider`` ``down``, bring it ``up``,
    or make it ``noisy``: healthy, but failing a fraction ``rate`` of its calls with a
    transient 5xx (0 makes it quiet again)."""

    at: float
    action: Literal["down", "up", "noisy"]
    provider: str
    rate: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"a step's rate must be between 0 and 1, not {self.rate!r}")


@dataclass(frozen=True)
class FleetSpec:
    """Everything a worker needs: sent to each one as a JSON file.

    ``providers`` are ``(name, base_url)`` in priority order; the first is the primary.
    ``rates``/``offsets`` override ``rate`` (requests per second per worker) and the default
    phase (workers evenly spread over one interval) per worker index.

    ``error_rate`` makes the primary noisy from the start (a fraction of its calls fail with
    ``error_status``, drawn from a generator seeded with ``error_seed``); ``noisy`` steps
    change it during the run. The breaker fields are ``CircuitBreakerConfig``'s and
    ``flush_interval`` is ``SyncConfig``'s.

    Each worker warms up with one request before the run (imports, connections); with
    ``warm_up=False`` it only reads the shared state once, so that every call the store
    counts is one of the run's.

    ``breaker="pybreaker"`` runs the peer instead of flexiai's breakers: pybreaker with its
    Redis storage at ``redis_url`` (``failure_threshold`` is its ``fail_max``,
    ``recovery_timeout`` its ``reset_timeout``) in front of one flexiai client per provider
    whose own breaker never counts a failure, so that only the breaking differs.
    """

    providers: tuple[tuple[str, str], ...]
    workers: int = 8
    sync: SyncMode = "pubsub"
    redis_url: str | None = None
    duration: float = 10.0
    rate: float = 10.0
    rates: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()
    script: tuple[Step, ...] = ()
    failure_threshold: int = 5
    failure_window: float = 60.0
    recovery_timeout: float = 2.0
    probe_lease_ttl: float = 5.0
    max_retries: int = 0
    call_timeout: float = 2.0
    snapshot_max_age: float = 0.25
    reconnect_backoff: float = 0.5
    redis_socket_timeout: float = 0.1
    state_ttl: int = 300
    key_prefix: str = field(default_factory=lambda: f"fleet-{uuid.uuid4().hex[:8]}")
    channel: str | None = None
    worker_prefix: str = "w"
    max_requests: int = 100_000
    error_rate: float = 0.0
    error_status: int = 500
    error_seed: int = 0
    failure_rate_threshold: float = 50.0
    minimum_calls: int = 20
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float = 50.0
    flush_interval: float = 1.0
    breaker: Breaker = "flexiai"
    warm_up: bool = True

    def __post_init__(self) -> None:
        if not self.providers:
            raise ValueError("a fleet needs at least one provider")
        if self.workers < 1 or self.duration <= 0 or self.rate <= 0:
            raise ValueError("workers, duration and rate must be positive")
        if self.sync != "off" and not self.redis_url:
            raise ValueError(f"sync={self.sync!r} needs redis_url")
        if self.breaker == "pybreaker" and not self.redis_url:
            raise ValueError("breaker='pybreaker' needs redis_url (its Redis storage)")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        if self.rates and len(self.rates) != self.workers:
            raise ValueError("rates needs one entry per worker")
        if self.offsets and len(self.offsets) != self.workers:
            raise ValueError("offsets needs one entry per worker")

    @property
    def primary(self) -> str:
        return self.providers[0][0]

    @property
    def variant(self) -> str:
        """What shares the breakers: ``pubsub``, ``snapshot``, ``off`` or ``pybreaker``."""
        return "pybreaker" if self.breaker == "pybreaker" else self.sync

    @property
    def events_channel(self) -> str:
        return self.channel or f"{self.key_prefix}:events"

    def worker_id(self, index: int) -> str:
        return f"{self.worker_prefix}{index}"

    def rate_of(self, index: int) -> float:
        return self.rates[index] if self.rates else self.rate

    def offset_of(self, index: int) -> float:
        if self.offsets:
            return self.offsets[index]
        return (index / self.workers) / self.rate_of(index)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FleetSpec:
        data = json.loads(text)
        data["providers"] = tuple(tuple(p) for p in data["providers"])
        data["script"] = tuple(Step(**s) for s in data["script"])
        data["rates"] = tuple(data["rates"])
        data["offsets"] = tuple(data["offsets"])
        return cls(**data)

    def client_config(self, index: int, *, only: str | None = None) -> FlexiAIConfig:
        """The ``FlexiAIConfig`` worker ``index`` runs with. ``only``: the pybreaker peer's
        client for that one provider, with sync off and a breaker that counts nothing."""
        from pydantic import SecretStr

        from flexiai.models import (
            CircuitBreakerConfig,
            FlexiAIConfig,
            ProviderConfig,
            RetryConfig,
            SyncConfig,
        )

        sync = SyncConfig(
            enabled=self.sync != "off" and only is None,
            backend="redis",
            mode="pubsub" if self.sync == "off" else self.sync,
            redis_url=None if self.redis_url is None else SecretStr(self.redis_url),
            worker_id=self.worker_id(index),
            key_prefix=self.key_prefix,
            channel=self.events_channel,
            state_ttl=self.state_ttl,
            snapshot_max_age=self.snapshot_max_age,
            reconnect_backoff=self.reconnect_backoff,
            redis_socket_timeout=self.redis_socket_timeout,
            redis_socket_connect_timeout=self.redis_socket_timeout,
            flush_interval=self.flush_interval,
        )
        breaker: dict[str, Any] = {
            "failure_threshold": self.failure_threshold,
            "failure_window": self.failure_window,
            "recovery_timeout": self.recovery_timeout,
            "probe_lease_ttl": self.probe_lease_ttl,
            "failure_rate_threshold": self.failure_rate_threshold,
            "minimum_calls": self.minimum_calls,
            "slow_call_duration": self.slow_call_duration,
            "slow_call_rate_threshold": self.slow_call_rate_threshold,
        }
        if only is not None:
            breaker = {"failure_on": _counts_nothing}
        return FlexiAIConfig(
            providers=[
                ProviderConfig(
                    name=name,
                    model="fleet-model",
                    base_url=url,
                    api_key=SecretStr("sk-fleet-test"),
                    priority=i + 1,
                    timeout=self.call_timeout,
                    min_timeout=min(0.05, self.call_timeout),
                )
                for i, (name, url) in enumerate(self.providers)
                if only is None or name == only
            ],
            sync=sync,
            circuit_breaker=CircuitBreakerConfig(**breaker),
            retry=RetryConfig(max_retries=self.max_retries, initial_backoff=0.01, max_backoff=0.05),
        )


def _counts_nothing(exc: BaseException) -> bool:
    """The pybreaker peer's own flexiai breakers: pybreaker alone decides."""
    return False


def outage_spec(
    providers: Sequence[tuple[str, str]],
    *,
    duration: float,
    down_at: float = 0.2,
    up_at: float = 0.55,
    **overrides: Any,
) -> FleetSpec:
    """A spec whose primary is down from ``down_at`` to ``up_at`` (fractions of
    ``duration``), with breaker timings and a request rate scaled so that even a run of a
    few seconds shows the whole story: failover, a probe that fails while the primary is
    still down, one probe at recovery and failback. ``overrides`` replace any field."""
    outage = (up_at - down_at) * duration
    values: dict[str, Any] = {
        "providers": tuple((n, u) for n, u in providers),
        "duration": duration,
        # per-process breakers need failure_threshold requests per worker to open: let that
        # take about a sixth of the outage, so both ways of working finish failing over.
        "rate": max(4.0, min(40.0, 6 * 5 / outage)),
        "recovery_timeout": max(0.3, round(outage / 3, 2)),
        "probe_lease_ttl": max(1.0, duration / 4),
        "script": (
            Step(round(down_at * duration, 3), "down", providers[0][0]),
            Step(round(up_at * duration, 3), "up", providers[0][0]),
        ),
    }
    values.update(overrides)
    return FleetSpec(**values)


# -- records and figures --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP call to a provider: when it started (seconds after the fleet's start), its
    status (None: no answer), and the caller's view of that provider's breaker then."""

    provider: str
    t: float
    status: int | None
    state: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class RequestRecord:
    worker: int
    t0: float
    t1: float
    ok: bool
    provider: str | None
    calls: tuple[Call, ...]
    error: str | None = None
    #: shared-store operations that failed while the request waited (``ResponseMeta``)
    store_failures: int = 0


@dataclass(frozen=True, slots=True)
class BreakerEvent:
    """A worker's view of a breaker changed (``remote``: another worker said so)."""

    worker: int
    t: float
    provider: str
    old: str
    new: str
    remote: bool


@dataclass(frozen=True)
class FleetSummary:
    mode: str
    workers: int
    requests: int
    failed_requests: int
    wasted_calls: int
    failover_time: float | None
    outage_probes: int
    probes_at_recovery: int
    failback_time: float | None
    primary_calls: int
    calls_by_provider: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PhaseSummary:
    """How the fleet treated the primary during one stretch of a run, ``[start, end)``
    (seconds after the start), typically while it was noisy or dead:

    * ``primary_share``: of the user requests started in the stretch and answered, the
      fraction the primary answered (None if none was answered);
    * ``wasted_calls``: calls to the primary that failed;
    * ``opened``: some worker's view of the primary's breaker left CLOSED;
    * ``fleet_skips_after``: from the stretch's first failed call to the primary until the
      last worker's view of its breaker left CLOSED, that is until the whole fleet skips it
      (None if some worker never stopped calling it);
    * ``probes_after``: calls to the primary in ``[end, until)`` made while the caller's view
      was not CLOSED: the probes at recovery, once the primary is healthy again.
    """

    start: float
    end: float
    requests: int
    answered: int
    primary_share: float | None
    primary_calls: int
    wasted_calls: int
    opened: bool
    first_failure: float | None
    fleet_skips_after: float | None
    probes_after: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FleetResult:
    spec: FleetSpec
    records: list[RequestRecord]
    events: list[BreakerEvent]
    #: the fake server's request count per provider when each script step ran
    step_counts: list[dict[str, int]]
    #: what each worker reported when it stopped (fallbacks, reconnects, final views)
    worker_stats: dict[int, dict[str, Any]]
    started_at: float

    def _window(self, provider: str) -> tuple[float | None, float | None]:
        down = next(
            (s.at for s in self.spec.script if s.provider == provider and s.action == "down"), None
        )
        up = next(
            (
                s.at
                for s in self.spec.script
                if s.provider == provider and s.action == "up" and (down is None or s.at >= down)
            ),
            None,
        )
        return down, up

    def calls(self, provider: str | None = None) -> list[tuple[int, Call]]:
        """Every call as ``(worker, call)``, in start order, optionally of one provider."""
        out = [
            (r.worker, c)
            for r in self.records
            for c in r.calls
            if provider is None or c.provider == provider
        ]
        out.sort(key=lambda wc: wc[1].t)
        return out

    def phase(
        self,
        start: float,
        end: float,
        *,
        until: float | None = None,
        primary: str | None = None,
    ) -> PhaseSummary:
        """The figures of ``[start, end)`` (see ``PhaseSummary``); probes are counted in
        ``[end, until)``, by default until the end of the run."""
        primary = primary or self.spec.primary
        until = self.spec.duration if until is None else until
        requests = [r for r in self.records if start <= r.t0 < end]
        answered = [r for r in requests if r.ok]
        calls = [(w, c) for w, c in self.calls(primary) if start <= c.t < end]
        failures = [c.t for _, c in calls if not c.ok]
        # each worker's view of the primary when the stretch starts, then when it left CLOSED
        views = dict.fromkeys(range(self.spec.workers), _CLOSED)
        left: dict[int, float] = {}
        for event in self.events:
            if event.provider != primary or event.t >= end:
                continue
            if event.t < start:
                views[event.worker] = event.new
            elif event.new != _CLOSED and event.worker not in left:
                left[event.worker] = event.t
        for worker, view in views.items():
            if view != _CLOSED:
                left[worker] = start
        first = min(failures) if failures else None
        skips: float | None = None
        if first is not None and len(left) == self.spec.workers:
            skips = max(0.0, max(left.values()) - first)
        probes = sum(1 for _, c in self.calls(primary) if end <= c.t < until and c.state != _CLOSED)
        return PhaseSummary(
            start=start,
            end=end,
            requests=len(requests),
            answered=len(answered),
            primary_share=(
                sum(1 for r in answered if r.provider == primary) / len(answered)
                if answered
                else None
            ),
            primary_calls=len(calls),
            wasted_calls=len(failures),
            opened=bool(left),
            first_failure=first,
            fleet_skips_after=skips,
            probes_after=probes,
        )

    def summary(self, primary: str | None = None) -> FleetSummary:
        primary = primary or self.spec.primary
        down, up = self._window(primary)
        primary_calls = self.calls(primary)
        wasted = sum(1 for _, c in primary_calls if not c.ok)

        failover: float | None = None
        outage_probes = 0
        if down is not None:
            end = up if up is not None else math.inf
            during = [c for _, c in primary_calls if down <= c.t < end]
            closed = [c.t for c in during if c.state == _CLOSED]
            failover = max(0.0, max(closed) - down) if closed else 0.0
            outage_probes = sum(1 for c in during if c.state != _CLOSED)

        probes = 0
        failback: float | None = None
        if up is not None:
            probes = sum(1 for _, c in primary_calls if c.t >= up and c.state != _CLOSED)
            first_ok: dict[int, float] = {}
            for worker, c in primary_calls:
                if c.t >= up and c.ok and worker not in first_ok:
                    first_ok[worker] = c.t
            if len(first_ok) == self.spec.workers:
                failback = max(first_ok.values()) - up

        by_provider: dict[str, int] = {name: 0 for name, _ in self.spec.providers}
        for _, c in self.calls():
            by_provider[c.provider] = by_provider.get(c.provider, 0) + 1
        return FleetSummary(
            mode=self.spec.variant,
            workers=self.spec.workers,
            requests=len(self.records),
            failed_requests=sum(1 for r in self.records if not r.ok),
            wasted_calls=wasted,
            failover_time=failover,
            outage_probes=outage_probes,
            probes_at_recovery=probes,
            failback_time=failback,
            primary_calls=len(primary_calls),
            calls_by_provider=by_provider,
        )


# -- controlling the fake providers ---------------------------------------------------------------


class Controller(Protocol):
    """What the scenario driver needs from the fake providers: ``FakeLLMServer`` is one."""

    def down(self, name: str) -> None: ...

    def up(self, name: str) -> None: ...

    def noisy(self, name: str, rate: float, *, status: int = 500, seed: int = 0) -> None: ...

    def count(self, name: str) -> int: ...


class HttpController:
    """A ``FakeLLMServer`` in another process, steered through its HTTP control API."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        import httpx

        self._client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def down(self, name: str) -> None:
        self._client.post(f"/_control/{name}/down").raise_for_status()

    def up(self, name: str) -> None:
        self._client.post(f"/_control/{name}/up").raise_for_status()

    def noisy(self, name: str, rate: float, *, status: int = 500, seed: int = 0) -> None:
        params = {"rate": repr(rate), "status": str(status), "seed": str(seed)}
        self._client.post(f"/_control/{name}/noisy", params=params).raise_for_status()

    def count(self, name: str) -> int:
        response = self._client.get(f"/_control/{name}/count")
        response.raise_for_status()
        return int(response.json()["count"])

    def close(self) -> None:
        self._client.close()


# -- faults of the shared store -------------------------------------------------------------------


class RedisServer(Protocol):
    """What ``RedisFaults`` needs of a server: ``flexiai_dev.servers.RedisProcess`` is one."""

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...

    def kill(self) -> None: ...

    def start(self) -> object: ...

    def client(self, **options: Any) -> Any: ...


#: Records that parse as JSON but must be refused (issue 11, findings 3 and 4): each would
#: keep a provider out, or cost the server time, if it were believed.
_ABSURD_RECORDS: dict[str, dict[str, Any]] = {
    "open-until-1e308": {"state": "OPEN", "version": 7, "open_until": 1e308},
    "negative-version": {"state": "OPEN", "version": -5, "open_until": 2**52},
    "negative-time": {"state": "OPEN", "version": 8, "opened_at": -1, "open_until": -1},
    "version-not-int": {"state": "OPEN", "version": "9", "open_until": 2**52},
    "unknown-state": {"state": "EXPLODED", "version": 10},
    "bucket-garbage": {"state": "CLOSED", "version": 11, "buckets": [[1, "x", None]]},
}
#: Values that are not a record at all.
_GARBAGE_RECORDS: dict[str, bytes] = {
    "not-json": b"\xff\xfe{{ not json",
    "json-array": b"[1, 2, 3]",
    "json-string": b'"OPEN"',
    "nan": b'{"schema":2,"state":"OPEN","version":NaN,"open_until":Infinity}',
    "deep": b"[" * 50_000,
    "empty": b"",
}
#: A big record (finding 4): a valid record with a huge extra field.
_BIG_RECORD_BYTES = 5 * 1024 * 1024


class RedisFaults:
    """Faults of one Redis that fleets share, to play during ``Fleet.run`` (or
    ``run_fleets``) as ``actions``: each method does one fault now, and ``soak_actions``
    spreads every kind over a run. What was done is kept in ``done``, as ``(time, what)``.

    * ``freeze``/``thaw``: SIGSTOP and SIGCONT (a server that accepts but never answers);
    * ``kill``/``restart``: SIGKILL, then a new, empty server on the same port;
    * ``flushall``: the store loses every key (a failover that lost writes, a restore);
    * ``poison``: garbage, absurd or huge values in the fleets' state keys, and a key of
      another type;
    * ``forge``: well-formed events that lie (OPENED far into the future with a huge
      version, CLOSED) and ``garbage_events``: payloads that are not events at all.

    ``specs`` are the fleets whose keys and channels are attacked. None of this needs the
    fleet's cooperation: it is what a careless neighbour or an attacker on the same Redis
    can do.
    """

    def __init__(self, server: RedisServer, specs: Sequence[FleetSpec]) -> None:
        if not specs:
            raise ValueError("RedisFaults needs the specs of the fleets it attacks")
        self.server = server
        self.specs = tuple(specs)
        self.done: list[tuple[float, str]] = []
        self._admin: Any = None

    # -- one fault each ---------------------------------------------------------------

    def freeze(self) -> None:
        self.server.freeze()
        self._note("freeze")

    def thaw(self) -> None:
        self.server.thaw()
        self._note("thaw")

    def kill(self) -> None:
        self._close_admin()
        self.server.kill()
        self._note("kill")

    def restart(self) -> None:
        """Start the killed server again: same port, no data (nothing was persisted)."""
        self.server.start()
        self._note("restart")

    def flushall(self) -> None:
        self._client().flushall()
        self._note("flushall")

    def poison(self, kind: str) -> None:
        """Write one kind of bad value (``poison_kinds()``) into every provider's key."""
        client = self._client()
        for key in self._keys():
            if kind == "wrong-type":
                client.delete(key)
                client.hset(key, "state", "OPEN")
            elif kind == "big":
                doc = {
                    "schema": 2,
                    "state": "CLOSED",
                    "version": 12,
                    "pad": "x" * _BIG_RECORD_BYTES,
                }
                client.set(key, json.dumps(doc))
            elif kind in _GARBAGE_RECORDS:
                client.set(key, _GARBAGE_RECORDS[kind])
            else:
                client.set(key, json.dumps({"schema": 2, **_ABSURD_RECORDS[kind]}))
        self._note(f"poison {kind}")

    @staticmethod
    def poison_kinds() -> list[str]:
        return [*_GARBAGE_RECORDS, *_ABSURD_RECORDS, "wrong-type", "big"]

    def forge(self, state: Literal["OPEN", "CLOSED"], *, copies: int = 3) -> None:
        """Publish well-formed events that lie about every provider: OPENED for a day with
        a version no real record will reach soon, or CLOSED with one just as high."""
        from flexiai.circuit_breaker import BreakerRecord, CircuitState, EventType, OpenReason
        from flexiai.circuit_breaker._wire import SyncEvent, encode_event

        now = int(time.time() * 1000)
        if state == "OPEN":
            record = BreakerRecord(
                state=CircuitState.OPEN,
                version=10**15,
                opened_at=now,
                open_until=now + 86_400_000,
                opened_because=OpenReason.CONSECUTIVE_FAILURES,
                updated_by="forger",
                updated_at=now,
            )
            kind = EventType.OPENED
        else:
            record = BreakerRecord(version=10**15 + 1, updated_by="forger", updated_at=now)
            kind = EventType.CLOSED
        client = self._client()
        for spec in self.specs:
            for name, _ in spec.providers:
                # with the fleet's own prefix: the strongest lie, which costs a read
                event = SyncEvent(kind, name, "forger", now, record, prefix=spec.key_prefix)
                for _ in range(copies):
                    client.publish(spec.events_channel, encode_event(event))
        self._note(f"forge {state}")

    def garbage_events(self) -> None:
        """Publish payloads that are not events (finding 9): each must be dropped at once."""
        payloads: list[bytes] = [
            b"",
            b"\xff\xfe\x00garbage",
            b"[" * 50_000,
            b"x" * 1_000_000,
            b"[1,2,3]",
            b'{"v":1,"type":"OPENED"}',
            b'{"v":2,"type":"OPENED","provider":"openai","worker_id":"x","ts":1,"record":[]}',
            b'{"v":2,"type":"BOOM","provider":"openai","worker_id":"x","ts":1,"record":{}}',
            b'{"v":2,"type":"OPENED","provider":"openai","worker_id":"x","ts":-1,"record":{}}',
            b'{"v":2,"type":"OPENED","provider":{"a":1},"worker_id":"x","ts":1,"record":{}}',
            json.dumps({"v": 2, "n": 1e308, "deep": [[[[[[[[[[1]]]]]]]]]]}).encode(),
        ]
        client = self._client()
        for spec in self.specs:
            for payload in payloads:
                client.publish(spec.events_channel, payload)
        self._note("garbage events")

    # -- a whole soak -----------------------------------------------------------------

    def soak_actions(
        self, duration: float, *, quiet_tail: float = 8.0
    ) -> list[tuple[float, Action]]:
        """Every fault above, spread over ``[1 s, duration - quiet_tail)``: freezes of a
        second and a half, a kill with the server back a second and a half later, FLUSHALLs,
        every kind of poison, forged and garbage events, some of them close together. The
        tail is quiet, so that the fleets can be checked against the store at the end."""
        busy = duration - quiet_tail
        if busy < 10.0:
            raise ValueError("a soak needs at least 10 s of faults before its quiet tail")

        def t(fraction: float) -> float:
            return round(1.0 + fraction * (busy - 1.0), 3)

        # The server is unreachable during these: nothing else can be done to it then.
        windows = [(t(0.15), 1.5, self.freeze, self.thaw)]
        windows += [(t(0.40), 1.5, self.kill, self.restart)]
        windows += [(t(0.65), 1.5, self.freeze, self.thaw)]
        others: list[tuple[float, Action]] = [
            (t(0.08), functools.partial(self.forge, "OPEN")),
            (t(0.10), self.garbage_events),
            (t(0.30), self.flushall),
            (t(0.32), functools.partial(self.forge, "OPEN")),
            (t(0.55), functools.partial(self.forge, "CLOSED")),
            (t(0.56), self.garbage_events),
            (t(0.80), self.flushall),
            (t(0.85), functools.partial(self.forge, "OPEN")),
            (t(0.86), self.garbage_events),
            (t(0.95), functools.partial(self.poison, "big")),
        ]
        poisons = self.poison_kinds()
        others += [  # a poison every so often, over the whole run
            (t((i + 0.5) / len(poisons)), functools.partial(self.poison, kind))
            for i, kind in enumerate(poisons)
        ]
        plan: list[tuple[float, Action]] = []
        for start, seconds, begin, end in windows:
            plan += [(start, begin), (round(start + seconds, 3), end)]
        for when, action in others:
            for start, seconds, _, _ in windows:
                if start - 0.2 <= when <= start + seconds + 0.2:
                    when = round(start + seconds + 0.3, 3)
            plan.append((when, action))
        plan.sort(key=lambda step: step[0])
        return plan

    # -- internals --------------------------------------------------------------------

    def _keys(self) -> list[str]:
        from flexiai.circuit_breaker.stores.redis import state_key

        return [
            state_key(spec.key_prefix, name, False)
            for spec in self.specs
            for name, _ in spec.providers
        ]

    def _client(self) -> Any:
        if self._admin is None:
            self._admin = self.server.client(socket_timeout=10)
        return self._admin

    def _close_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()

    def _note(self, what: str) -> None:
        self.done.append((time.time(), what))

    def close(self) -> None:
        """Thaw the server if a fault left it frozen, and drop the admin connection."""
        with contextlib.suppress(Exception):
            self.server.thaw()
        self._close_admin()


# -- local servers --------------------------------------------------------------------------------


# -- cleanup of everything this process started ---------------------------------------------------


class _Cleanup:
    """Fleets and servers still running: stopped at exit and on SIGTERM."""

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._lock = threading.Lock()
        self._installed = False

    def add(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)
            if not self._installed:
                self._installed = True
                atexit.register(self.run)
                if threading.current_thread() is threading.main_thread() and (
                    signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
                ):
                    signal.signal(signal.SIGTERM, _terminate)

    def discard(self, item: Any) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._items.remove(item)

    def run(self) -> None:
        with self._lock:
            items = list(reversed(self._items))
        for item in items:
            with contextlib.suppress(Exception):
                item.stop()


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: unwind like Ctrl-C does, so ``finally`` blocks and context managers run."""
    raise SystemExit(128 + signum)


_CLEANUP = _Cleanup()


# -- the parent's side ----------------------------------------------------------------------------


Action = Callable[[], object]


class Fleet:
    """``start()`` the workers (they warm up and wait), ``run()`` the scenario once,
    ``stop()``. Use as a context manager; ``stop()`` is idempotent and never raises."""

    def __init__(self, spec: FleetSpec, controller: Controller | None = None) -> None:
        if (spec.script or spec.error_rate) and controller is None:
            raise ValueError("a scripted fleet needs a controller (the fake LLM server)")
        self.spec = spec
        self.controller = controller
        self.dir: str | None = None
        self.processes: list[subprocess.Popen[str]] = []
        self._lines: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._ran = False
        #: wall-clock time the scenario started (every record's times are relative to it)
        self.t0: float | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def start(self, ready_timeout: float = 60.0) -> Fleet:
        self.dir = tempfile.mkdtemp(prefix="flexiai-fleet-")
        _CLEANUP.add(self)
        spec_path = Path(self.dir, "spec.json")
        spec_path.write_text(self.spec.to_json())
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for index in range(self.spec.workers):
            err = Path(self.dir, f"worker-{index}.log").open("w")  # noqa: SIM115 - the child owns it
            try:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "flexiai_dev.fleet",
                        "worker",
                        str(spec_path),
                        str(index),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                    bufsize=1,
                    env=env,
                    start_new_session=True,  # Ctrl-C reaches the parent only, which stops us
                )
            finally:
                err.close()
            self.processes.append(process)
            reader = threading.Thread(
                target=self._read, args=(index, process), name=f"fleet-reader-{index}", daemon=True
            )
            reader.start()
            self._readers.append(reader)
        ready: set[int] = set()
        deadline = time.monotonic() + ready_timeout
        while len(ready) < self.spec.workers:
            index, message = self._next(deadline)
            if message is None:
                raise FleetError(f"worker {index} exited before it was ready: {self._log(index)}")
            if message.get("k") == "ready":
                ready.add(index)
            elif message.get("k") == "error":
                raise FleetError(f"worker {index}: {message.get('msg')}")
        return self

    def run(
        self,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        actions: Sequence[tuple[float, Action]] = (),
    ) -> FleetResult:
        """Play the scenario once. ``on_message`` sees every record as it arrives (relative
        times); ``actions`` are extra ``(at, callable)`` steps run by the driver (a Redis
        outage, say). Returns when every worker is done."""
        if self._ran:
            raise FleetError("a Fleet runs once; start another")
        self._ran = True
        spec = self.spec
        if spec.error_rate and self.controller is not None:
            self.controller.noisy(
                spec.primary, spec.error_rate, status=spec.error_status, seed=spec.error_seed
            )
        t0 = self.t0 = time.time() + 0.2
        t_end = t0 + spec.duration
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(f"go {t0!r} {t_end!r}\n")
            process.stdin.flush()

        steps: list[tuple[float, int, Action]] = []
        step_counts: list[dict[str, int]] = []
        for i, step in enumerate(spec.script):
            steps.append((step.at, i, self._step_action(step, i, step_counts)))
        for j, (at, fn) in enumerate(actions):
            steps.append((at, len(spec.script) + j, fn))
        steps.sort(key=lambda s: (s[0], s[1]))

        records: list[RequestRecord] = []
        events: list[BreakerEvent] = []
        stats: dict[int, dict[str, Any]] = {}
        finished: set[int] = set()
        hard_deadline = time.monotonic() + spec.duration + 0.2 + max(15.0, spec.call_timeout * 4)
        while len(finished) < spec.workers:
            if time.monotonic() > hard_deadline:
                missing = sorted(set(range(spec.workers)) - finished)
                raise FleetError(f"workers {missing} did not finish")
            now_rel = time.time() - t0
            while steps and steps[0][0] <= now_rel:
                steps.pop(0)[2]()
            wait = 0.05 if not steps else min(0.05, max(0.0, steps[0][0] - now_rel))
            try:
                index, message = self._lines.get(timeout=wait)
            except queue.Empty:
                continue
            if message is None:
                if index not in finished:
                    finished.add(index)
                    if index not in stats:
                        raise FleetError(f"worker {index} died: {self._log(index)}")
                continue
            kind = message.get("k")
            if kind == "req":
                record = _request_record(index, message, t0)
                records.append(record)
            elif kind == "brk":
                events.append(
                    BreakerEvent(
                        index,
                        message["t"] - t0,
                        message["p"],
                        message["old"],
                        message["new"],
                        message["remote"],
                    )
                )
            elif kind == "done":
                stats[index] = message
                finished.add(index)
            elif kind == "error":
                raise FleetError(f"worker {index}: {message.get('msg')}")
            if on_message is not None:
                on_message({**message, "w": index, "rel": _relative(message, t0)})
        while steps:  # a step scheduled after the last request still runs (restores servers)
            steps.pop(0)[2]()
        records.sort(key=lambda r: r.t0)
        events.sort(key=lambda e: e.t)
        return FleetResult(spec, records, events, step_counts, stats, t0)

    def _step_action(self, step: Step, index: int, counts: list[dict[str, int]]) -> Action:
        controller = self.controller
        assert controller is not None
        names = [name for name, _ in self.spec.providers]
        spec = self.spec

        def act() -> None:
            counts.append({name: controller.count(name) for name in names})
            if step.action == "down":
                controller.down(step.provider)
            elif step.action == "up":
                controller.up(step.provider)
            else:  # each noisy step draws its own reproducible sequence
                seed = spec.error_seed + index + 1
                controller.noisy(step.provider, step.rate, status=spec.error_status, seed=seed)

        return act

    def _read(self, index: int, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        try:
            for line in process.stdout:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    self._lines.put((index, json.loads(line)))
                except ValueError:
                    continue
        except (OSError, ValueError):  # closed under us by stop()
            pass
        finally:
            self._lines.put((index, None))

    def _next(self, deadline: float) -> tuple[int, dict[str, Any] | None]:
        try:
            return self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise FleetError("workers did not become ready in time") from None

    def _log(self, index: int) -> str:
        if self.dir is None:
            return "no log"
        with contextlib.suppress(OSError):
            text = Path(self.dir, f"worker-{index}.log").read_text(errors="replace").strip()
            return text.splitlines()[-1] if text else "no output"
        return "no log"

    def stop(self) -> None:
        """Stop every worker (stdin closed, then SIGTERM, then SIGKILL) and remove the
        temporary directory."""
        for process in self.processes:
            with contextlib.suppress(OSError, ValueError):
                if process.stdin is not None:
                    process.stdin.close()
        deadline = time.monotonic() + 3.0
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    process.terminate()
        for process in self.processes:
            try:
                process.wait(1.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    process.kill()
                process.wait()
        for reader in self._readers:
            reader.join(timeout=2.0)
        for process in self.processes:
            with contextlib.suppress(OSError, ValueError):
                if process.stdout is not None:
                    process.stdout.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        _CLEANUP.discard(self)

    def __enter__(self) -> Fleet:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_fleet(
    spec: FleetSpec,
    controller: Controller | None = None,
    *,
    on_message: Callable[[dict[str, Any]], None] | None = None,
    actions: Sequence[tuple[float, Action]] = (),
    on_ready: Callable[[Fleet], None] | None = None,
) -> FleetResult:
    """Start a fleet, run its scenario once and stop it, whatever happens."""
    with Fleet(spec, controller) as fleet:
        if on_ready is not None:
            on_ready(fleet)
        return fleet.run(on_message=on_message, actions=actions)


def run_fleets(
    specs: Sequence[FleetSpec],
    controller: Controller | None = None,
    *,
    on_ready: Callable[[Sequence[Fleet]], None] | None = None,
    actions: Sequence[tuple[float, Action]] = (),
) -> list[FleetResult]:
    """Several fleets at once (say a pub/sub one and a snapshot one, each under its own key
    prefix, against the same providers): each is started and warmed up in turn, then all
    play their scenarios together, each driven from its own thread. ``actions`` (faults of
    a store they share, say) are run once, by the first fleet's driver, in the caller's
    thread. Every fleet is
    stopped, whatever happens; the first error raised by any of them is raised."""
    with contextlib.ExitStack() as stack:
        fleets = [stack.enter_context(Fleet(spec, controller)) for spec in specs]
        if on_ready is not None:
            on_ready(fleets)
        results: list[FleetResult | None] = [None] * len(fleets)
        errors: list[BaseException] = []

        def play(index: int) -> None:
            try:
                results[index] = fleets[index].run(actions=actions if index == 0 else ())
            except BaseException as exc:  # raised again from the caller's thread
                errors.append(exc)

        # The first fleet is driven from the caller's thread, so that a server one of the
        # actions (re)starts outlives the run: servers die with the thread that started them.
        threads = [
            threading.Thread(target=play, args=(i,), name=f"fleet-driver-{i}", daemon=True)
            for i in range(1, len(fleets))
        ]
        for thread in threads:
            thread.start()
        play(0)
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return [result for result in results if result is not None]


def _relative(message: dict[str, Any], t0: float) -> float | None:
    for key in ("t1", "t"):
        if key in message:
            return float(message[key]) - t0
    return None


def _request_record(index: int, message: dict[str, Any], t0: float) -> RequestRecord:
    return RequestRecord(
        worker=index,
        t0=message["t0"] - t0,
        t1=message["t1"] - t0,
        ok=message["ok"],
        provider=message.get("p"),
        calls=tuple(Call(p, t - t0, s, st) for p, t, s, st in message["calls"]),
        error=message.get("err"),
        store_failures=message.get("sf", 0),
    )


# -- the worker's side ----------------------------------------------------------------------------


class _Recorder:
    """The worker's output: one JSON document per line, from any thread."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._lock = threading.Lock()

    def emit(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":"))
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


def _recording_transport(views: dict[str, str], calls: list[list[Any]]) -> httpx.BaseTransport:
    """An httpx transport that notes each call's provider (``/p/<name>/`` on the fake
    server), start time, status and the caller's breaker view before passing it on."""
    import httpx

    class RecordingTransport(httpx.BaseTransport):
        def __init__(self) -> None:
            self._inner = httpx.HTTPTransport()

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            parts = request.url.path.split("/")
            provider = parts[2] if len(parts) > 2 and parts[1] == "p" else request.url.host
            entry: list[Any] = [provider, time.time(), None, views.get(provider, _CLOSED)]
            calls.append(entry)
            response = self._inner.handle_request(request)
            entry[2] = response.status_code
            return response

        def close(self) -> None:
            self._inner.close()

    return RecordingTransport()


class _PeerClient:
    """The peer: pybreaker (one breaker per provider, state in Redis through
    ``CircuitRedisStorage``) in front of one flexiai client per provider whose own breaker
    counts nothing. Same HTTP, same adapters, same failover order: only the breaker differs."""

    _STATES = {"closed": "CLOSED", "open": "OPEN", "half-open": "HALF_OPEN"}

    def __init__(
        self,
        spec: FleetSpec,
        index: int,
        views: dict[str, str],
        calls: list[list[Any]],
        on_change: Callable[[str, str, str], None],
    ) -> None:
        import pybreaker
        import redis

        from flexiai.client import FlexiAI
        from flexiai.exceptions import InvalidRequestError

        assert spec.redis_url is not None
        self.worker_id = spec.worker_id(index)
        self._redis = redis.Redis.from_url(
            spec.redis_url,
            socket_timeout=spec.redis_socket_timeout,
            socket_connect_timeout=spec.redis_socket_timeout,
        )
        states = self._STATES

        class Listener(pybreaker.CircuitBreakerListener):
            def state_change(
                self,
                cb: pybreaker.CircuitBreaker,
                old: pybreaker.CircuitBreakerState | None,
                new: pybreaker.CircuitBreakerState,
            ) -> None:
                name = cb.name or ""
                before = states.get(old.name, "CLOSED") if old is not None else "CLOSED"
                views[name] = states.get(new.name, new.name)
                on_change(name, before, views[name])

        self._chain: list[tuple[str, Any, pybreaker.CircuitBreaker]] = []
        for name, _ in spec.providers:
            storage = pybreaker.CircuitRedisStorage(
                pybreaker.STATE_CLOSED, self._redis, namespace=f"{spec.key_prefix}:{name}"
            )
            breaker = pybreaker.CircuitBreaker(
                fail_max=spec.failure_threshold,
                reset_timeout=spec.recovery_timeout,
                success_threshold=1,
                exclude=[InvalidRequestError],
                listeners=[Listener()],
                state_storage=storage,
                name=name,
            )
            views[name] = states.get(breaker.current_state, "CLOSED")
            client = FlexiAI(
                spec.client_config(index, only=name),
                transport=_recording_transport(views, calls),
            )
            self._chain.append((name, client, breaker))

    def generate(self, prompt: str) -> Any:
        import pybreaker

        from flexiai.exceptions import FlexiAIError

        for _, client, breaker in self._chain:
            try:
                return breaker.call(client.generate, prompt)
            except (pybreaker.CircuitBreakerError, FlexiAIError):
                continue  # open (skipped), or failed: the next provider
        raise FlexiAIError("every provider failed or was skipped (pybreaker)")

    def close(self) -> None:
        for _, client, _ in self._chain:
            client.close()
        self._redis.close()


def _worker(spec_path: str, index: int) -> int:
    from flexiai.client import FlexiAI
    from flexiai.events import BreakerChanged, ClientEvent
    from flexiai.exceptions import FlexiAIError

    out = _Recorder(sys.stdout)
    spec = FleetSpec.from_json(Path(spec_path).read_text())
    names = [name for name, _ in spec.providers]
    views = dict.fromkeys(names, _CLOSED)
    calls: list[list[Any]] = []

    def changed(provider: str, old: str, new: str, *, remote: bool = False) -> None:
        out.emit(
            {"k": "brk", "t": time.time(), "p": provider, "old": old, "new": new, "remote": remote}
        )

    def listen(event: ClientEvent) -> None:
        if isinstance(event, BreakerChanged):
            views[event.provider] = event.new.value
            changed(event.provider, event.old.value, event.new.value, remote=event.remote)

    client: Any
    if spec.breaker == "pybreaker":
        client = _PeerClient(spec, index, views, calls, changed)
    else:
        client = FlexiAI(spec.client_config(index), transport=_recording_transport(views, calls))
        client.add_listener(listen)
    try:
        if spec.warm_up:
            # Warm up: imports, HTTP connections, the Redis connection and the subscriber.
            with contextlib.suppress(FlexiAIError):
                client.generate("warm up")
        elif isinstance(client, FlexiAI) and spec.sync != "off":
            client.refresh_breakers()  # connects, and counts no call
        calls.clear()
        out.emit({"k": "ready", "pid": os.getpid(), "worker_id": client.worker_id})
        go = sys.stdin.readline().split()
        if len(go) != 3 or go[0] != "go":
            return 0  # the parent went away (EOF) or gave up
        t0, t_end = float(go[1]), float(go[2])
        stop = threading.Event()

        def watch_stdin() -> None:
            for line in sys.stdin:
                if line.strip() == "stop":
                    break
            stop.set()  # EOF: the parent died or stopped us

        threading.Thread(target=watch_stdin, name="fleet-stdin", daemon=True).start()
        interval = 1.0 / spec.rate_of(index)
        first = t0 + spec.offset_of(index)
        k = 0
        sent = 0
        while not stop.is_set() and sent < spec.max_requests:
            due = first + k * interval
            if due >= t_end:
                break
            delay = due - time.time()
            if delay > 0 and stop.wait(delay):
                break
            calls.clear()
            started = time.time()
            provider: str | None = None
            error: str | None = None
            store_failures = 0
            try:
                response = client.generate(f"request {sent} from worker {index}")
                provider = response.provider
                store_failures = response.metadata.store_failures
            except FlexiAIError as exc:
                error = type(exc).__name__
            sent += 1
            out.emit(
                {
                    "k": "req",
                    "t0": started,
                    "t1": time.time(),
                    "ok": error is None,
                    "p": provider,
                    "err": error,
                    "sf": store_failures,
                    "calls": list(calls),
                }
            )
            # fixed rate: the next free slot, never a burst to catch up
            k = max(k + 1, math.ceil((time.time() - first) / interval))
        manager = getattr(client, "_sync_manager", None)
        out.emit(
            {
                "k": "done",
                "sent": sent,
                "views": dict(views),
                "fallbacks": manager.fallbacks if manager else 0,
                "reconnects": manager.reconnects if manager else 0,
                "degraded": manager.degraded if manager else False,
                "store": manager.backend.stats() if manager else {},
            }
        )
        return 0
    finally:
        client.close()


def _main(argv: Sequence[str]) -> int:
    if len(argv) == 3 and argv[0] == "worker":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
        try:
            return _worker(argv[1], int(argv[2]))
        except Exception as exc:  # report it to the parent, which raises FleetError
            with contextlib.suppress(Exception):
                _Recorder(sys.stdout).emit({"k": "error", "msg": f"{type(exc).__name__}: {exc}"})
            raise
    print("usage: python -m flexiai_dev.fleet worker SPEC_JSON INDEX", file=sys.stderr)
    return 2


@contextlib.contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:  # the parent closed our stdout: nothing left to tell it
        with contextlib.suppress(OSError):
            sys.stdout = Path(os.devnull).open("w")  # noqa: SIM115 - stdout for good
        os._exit(0)


if __name__ == "__main__":
    with _quiet_broken_pipe():
        sys.exit(_main(sys.argv[1:]))
