"""The fleet-wide breaker store: one string per provider in Redis, Valkey or ElastiCache.

    {prefix}:state:{provider}     string, BreakerRecord.to_json(), TTL state_ttl after the
                                  record's last deadline (``GET flexiai:state:openai``)
    {channel}                     pub/sub, one flexiai.circuit_breaker._wire JSON message per event

Every operation (a failure with its tally, a probe, a trip, a reset) is one Lua script run
with EVALSHA: ``lua/breaker.lua`` applies ``circuit_breaker._machine`` atomically with the
server's clock, writes the record and publishes the event. A batch of tallies for every
provider (``report``: the pub/sub flush, or a snapshot refresh that carries counts) is one
call of the same script, which also returns every record. A refresh with nothing to count is
one plain ``MGET``: no script, one bulk string per provider. In cluster mode the prefix
carries a hash tag (``{flexiai}:state:openai``) so every key lives in one slot and that MGET
is one command.

The store's clock without a round trip: breakers compare ``open_until`` (written with the
server's ``TIME``, in milliseconds) against the snapshot's ``now``, so ``load`` must return
the server's clock, and MGET does not carry it. The backend keeps ``offset = server TIME -
local clock``, measured with a ``TIME`` round trip on the first load and again whenever the
last measurement is ``_CLOCK_RESAMPLE`` seconds old (and refreshed for free by every
transition, whose reply carries the server's time); ``now`` is then the local clock plus
that offset. The local clock is the monotonic one, so a step of this host's wall clock (NTP)
changes nothing. Workers' clocks still never have to agree with each other or with the
server: each worker measures its own offset against the server, so one whose wall clock is
minutes off still reads the server's time, to within half a round trip plus drift since the
last measurement. ``now`` never goes below a server time this backend has already seen.

The backend is lazy: building it imports no redis module and opens no socket; the shared
process-level client (see ``connections``) is acquired on first use. Every failure of
the store raises ``StateStoreError``; deciding what to do about it is the manager's job.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import logging
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar, cast

from flexiai._clock import Clock, SystemClock, epoch_ms
from flexiai._fork import forget_parent_state
from flexiai.circuit_breaker import SyncEvent, decode_event
from flexiai.circuit_breaker._machine import NO_TALLY, EventType, Op, Policy, Tally, Transition
from flexiai.circuit_breaker._record import BreakerRecord, version_jumped
from flexiai.circuit_breaker.stores import connections
from flexiai.circuit_breaker.stores.base import (
    AsyncBackend,
    EventHandler,
    StoreSnapshot,
    SyncBackend,
    ThreadedAsyncBackend,
)
from flexiai.circuit_breaker.stores.connections import ClusterClient, RedisClient, Script
from flexiai.exceptions import StateStoreError
from flexiai.models import SyncConfig

__all__ = [
    "RedisSyncBackend",
    "ScriptInputs",
    "function_library",
    "op_spec",
    "report_args",
    "state_key",
    "state_key_pattern",
    "transition_args",
]

logger = logging.getLogger("flexiai.sync.redis")

_T = TypeVar("_T")

#: How long the subscriber waits for a message before checking whether it should stop.
_POLL_SECONDS = 0.2
#: Subscriber reconnect backoff (redis-py EqualJitterBackoff): doubling from this base up
#: to ``reconnect_backoff``, half of it random, so a fleet does not reconnect in step.
_RECONNECT_BASE = 0.1
#: At most this many messages already received are handled as one batch, in which one
#: re-read of the store covers every event (see ``_Subscriber``).
_BATCH = 256
#: How long ``close()`` waits for the subscriber thread.
_JOIN_SECONDS = 2.0
#: Repeated problems are logged on the first occurrence and then every this many.
_LOG_EVERY = 100
#: How often ``load`` re-measures the server's clock (one extra TIME round trip).
_CLOCK_RESAMPLE = 30.0
#: What an absent key reads as (records are frozen, so one instance serves every read).
_FRESH = BreakerRecord()


def _tagged(prefix: str, cluster: bool) -> str:
    if not cluster:
        return prefix
    # Redis hashes the text between the first "{" and the first "}" after it, if non-empty.
    opening = prefix.find("{")
    closing = prefix.find("}", opening + 1) if opening != -1 else -1
    if closing > opening + 1:
        return prefix  # already carries a hash tag
    return f"{{{prefix}}}"


def state_key(prefix: str, provider: str, cluster: bool) -> str:
    """The string holding ``provider``'s breaker: ``flexiai:state:openai``, or in cluster mode
    ``{flexiai}:state:openai`` (a prefix that already has a ``{tag}`` is kept as is)."""
    return f"{_tagged(prefix, cluster)}:state:{provider}"


def state_key_pattern(prefix: str, cluster: bool) -> str:
    """A SCAN ``MATCH`` pattern for every provider's record under ``prefix``."""
    literal = "".join(f"\\{c}" if c in "*?[]\\" else c for c in state_key(prefix, "", cluster))
    return literal + "*"


@cache
def _script_source(name: str) -> str:
    return (importlib.resources.files("flexiai.circuit_breaker.stores") / "lua" / name).read_text(
        "utf-8"
    )


@cache
def function_library() -> tuple[str, str]:
    """breaker.lua as a Redis Functions library: ``(name, code)``. The same source, wrapped
    in one registered function; the name carries a hash of the code, so a fleet in a rolling
    upgrade calls the version it was built with while both are loaded. Loaded once by an
    operator (``flexiai functions load``), called with FCALL by workers whose ACL allows
    FCALL but no EVAL, EVALSHA or SCRIPT: they can run flexiai's code and no other."""
    body = _script_source("breaker.lua")
    name = "flexiai_breaker_" + hashlib.sha256(body.encode()).hexdigest()[:16]
    code = (
        f"#!lua name={name}\nredis.register_function('{name}', function(KEYS, ARGV)\n{body}\nend)\n"
    )
    return name, code


class _Function:
    """``FCALL`` of flexiai's function library, with the ``Script`` call shape. A server
    that does not have the library yet gets it loaded once (FUNCTION LOAD), when this user
    may; otherwise the error says how to load it."""

    def __init__(self, client: RedisClient) -> None:
        self._client: Any = client
        self._name, self._code = function_library()

    def __call__(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        try:
            return self._client.fcall(self._name, len(keys), *keys, *args)
        except Exception as exc:
            if not function_missing(exc):
                raise
        try:
            self._client.function_load(self._code)
        except Exception as exc:
            function_load_failed(self._name, exc)
        return self._client.fcall(self._name, len(keys), *keys, *args)


def function_missing(exc: Exception) -> bool:
    """True when ``exc`` says the server has no function library of that name yet."""
    return "function not found" in str(exc).lower()


def library_exists(exc: Exception) -> bool:
    """True when FUNCTION LOAD failed because the library is already on the server."""
    return "already exists" in str(exc)


def function_load_failed(name: str, exc: Exception) -> None:
    """FUNCTION LOAD failed with ``exc``: fine if another worker loaded the library first,
    otherwise a ``StateStoreError`` that says what to do (no cause: the fallback warning
    shows this message)."""
    if not library_exists(exc):
        raise StateStoreError(
            f"redis function {name} is not loaded and this user cannot load "
            f"it ({type(exc).__name__}); run `flexiai functions load` once"
        ) from None


def op_spec(
    op: str, tally: Tally = NO_TALLY, open_for: int | None = None, known: int | None = None
) -> str:
    """One key's operation as breaker.lua reads it: ``op successes slow age open_for
    known``, where ``known`` is the version this worker last read for the key (a record
    further ahead than ``MAX_VERSION_STEP`` is garbage)."""
    duration = "-" if open_for is None else str(open_for)
    return f"{op} {tally.wire} {duration} {'-' if known is None else known}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# A NamedTuple, not a frozen dataclass: an internal record on the Lambda cold-start path,
# and python3.12 creates a NamedTuple class in ~0.1 ms, a frozen slotted dataclass in ~0.6.
class ScriptInputs(NamedTuple):
    """What every run of breaker.lua takes besides its operations: the config (TTL,
    channel, key prefix), in tests the time standing in for the server's ``TIME``, and the
    version this worker last read for each provider (a record further ahead is garbage)."""

    config: SyncConfig
    now: int | None = None
    versions: Mapping[str, int] = MappingProxyType({})  # read-only: one default for all


def _script_args(
    inputs: ScriptInputs, policy: Policy, worker_id: str, *, publish: bool
) -> list[str]:
    now = "" if inputs.now is None else str(inputs.now)
    config = inputs.config
    channel = config.channel if publish else ""
    return [worker_id, policy.wire, str(config.state_ttl * 1000), channel, now, config.key_prefix]


def transition_args(
    inputs: ScriptInputs,
    provider: str,
    op: Op,
    policy: Policy,
    worker_id: str,
    *,
    open_for: int | None = None,
    tally: Tally = NO_TALLY,
    publish: bool = True,
) -> list[str]:
    """breaker.lua's ARGV for one operation on ``provider``'s key (KEYS[1]). The blocking
    and the asyncio backend both build their arguments here, and only here."""
    spec = op_spec(op.value, tally, open_for, inputs.versions.get(provider))
    return [*_script_args(inputs, policy, worker_id, publish=publish), provider, spec]


def report_args(
    inputs: ScriptInputs,
    names: Sequence[str],
    tallies: Mapping[str, Tally],
    policy: Policy,
    worker_id: str,
) -> list[str]:
    """breaker.lua's ARGV for a batch: a report for each provider in ``tallies``, a plain
    read for the others in ``names`` (KEYS, in the same order)."""
    args = _script_args(inputs, policy, worker_id, publish=True)
    for name in names:
        tally = tallies.get(name)
        if tally is None:
            args += [name, op_spec("read")]
        else:
            args += [name, op_spec("report", tally, known=inputs.versions.get(name))]
    return args


class _Scripts(NamedTuple):  # a NamedTuple for the same reason as ScriptInputs
    client: RedisClient
    breaker: Script


class RedisSyncBackend(SyncBackend):
    """Breaker records in Redis, shared by every worker that uses the same prefix.

    ``client`` brings your own ``redis.Redis`` or ``RedisCluster`` (IAM, custom pools,
    fakeredis in tests); it is used as is and never closed here. Otherwise the process's
    shared client for the config's connection settings is used. Every time here is the
    server's ``TIME``; ``clock`` is only the local monotonic clock that carries the measured
    offset to the server forward between measurements (see the module docstring).
    """

    name = "redis"
    shared = True

    def __init__(
        self,
        config: SyncConfig,
        *,
        client: RedisClient | None = None,
        clock: Clock | None = None,
        store_clock: Callable[[], int] | None = None,
    ) -> None:
        self._config = config
        self.key_prefix = config.key_prefix
        self._clock = clock or SystemClock()
        # Tests replace the server's TIME (milliseconds) to make the script deterministic.
        self._store_clock = store_clock
        self._own_client = client
        self._cluster = config.redis_cluster or (
            client is not None and connections.is_cluster_client(client)
        )
        if client is None:
            connections.require_redis()  # a missing package is a config error: say so now
        if config.redis_iam_auth and client is None:
            connections.iam_region(config)  # a missing region is a config error: say so now
        self._lock = threading.Lock()
        self._lease: connections.ClientLease | None = None
        self._scripts: _Scripts | None = None
        self._subscriber: _Subscriber | None = None
        self._closed = False
        # The last raw string read for each provider and its parsed record: on the snapshot
        # path a healthy fleet's records rarely change, so most reads skip parsing.
        self._parsed: dict[str, tuple[Any, BreakerRecord]] = {}
        # The version last read for each provider: a record far ahead of it is garbage.
        self._versions: dict[str, int] = {}
        # (server TIME - local monotonic clock, local monotonic time it was measured at),
        # and the latest server time seen, below which ``now`` never goes.
        self._clock_sync: tuple[float, float] | None = None
        self._latest_now = 0
        self._keys: dict[tuple[str, ...], list[str]] = {}
        self._invalid_logged: set[str] = set()  # garbage is logged once, counted every time
        self._counts = {
            "malformed_events": 0,
            "invalid_records": 0,
            "store_errors": 0,
            "reconnects": 0,
            "handler_errors": 0,
        }
        forget_parent_state(self)

    def _reset_after_fork(self) -> None:
        """In a forked child: the lease and the subscriber thread are the parent's; the
        child acquires its own client and starts its own subscriber on first use."""
        self._lock = threading.Lock()
        self._lease = None
        self._scripts = None
        self._subscriber = None

    # -- keys -------------------------------------------------------------------------

    def key_for(self, provider: str) -> str:
        return state_key(self._config.key_prefix, provider, self._cluster)

    # -- SyncBackend ------------------------------------------------------------------

    def load(self, providers: Sequence[str]) -> StoreSnapshot:
        keys = self.keys_for(providers)

        def read() -> StoreSnapshot:
            client = self._client()
            raws = client.mget(keys) if keys else []
            if self.clock_due():
                options: dict[str, Any] = {}
                if self._cluster and keys:
                    # The node that holds the records runs the scripts: use its clock.
                    node = cast(ClusterClient, client).get_node_from_key(keys[0])
                    options["target_nodes"] = node
                before = self._clock.monotonic()
                reply = client.time(**options)
                self.measured_time(reply, before, self._clock.monotonic())
            return self.load_reply(providers, raws)

        return self._run("load", read)

    def transition(
        self,
        provider: str,
        op: Op,
        policy: Policy,
        worker_id: str,
        *,
        open_for: int | None = None,
        tally: Tally = NO_TALLY,
        publish: bool = True,
    ) -> Transition:
        keys = [self.key_for(provider)]
        args = transition_args(
            self.script_inputs(),
            provider,
            op,
            policy,
            worker_id,
            open_for=open_for,
            tally=tally,
            publish=publish,
        )

        def run() -> Transition:
            script = self._registered().breaker
            before = self._clock.monotonic()
            reply = script(keys=keys, args=args)
            return self.transition_reply(provider, reply, before, self._clock.monotonic())

        return self._run(f"transition({op.value})", run)

    def report(
        self,
        tallies: Mapping[str, Tally],
        policy: Policy,
        worker_id: str,
        *,
        read: Sequence[str] = (),
    ) -> StoreSnapshot:
        names = list(dict.fromkeys([*tallies, *read]))
        args = report_args(self.script_inputs(), names, tallies, policy, worker_id)
        keys = [self.key_for(name) for name in names]

        def run() -> StoreSnapshot:
            script = self._registered().breaker
            before = self._clock.monotonic()
            reply = script(keys=keys, args=args)
            return self.report_reply(names, reply, before, self._clock.monotonic())

        return self._run("report", run)

    # -- shared with the asyncio twin (redis_async): everything but the I/O ---------------

    def keys_for(self, providers: Sequence[str]) -> list[str]:
        """The keys of ``providers``: the same providers every request, so built once."""
        names = tuple(providers)
        keys = self._keys.get(names)
        if keys is None:
            keys = self._keys[names] = [self.key_for(p) for p in names]
        return keys

    def script_inputs(self) -> ScriptInputs:
        """What every run of breaker.lua takes besides its operations."""
        now = None if self._store_clock is None else self._store_clock()
        return ScriptInputs(self._config, now, self._versions)

    def clock_due(self) -> bool:
        """The measured offset to the server's clock is missing or ``_CLOCK_RESAMPLE`` old:
        the next load measures it again (one TIME round trip). Never with a test clock."""
        if self._store_clock is not None:
            return False
        sync = self._clock_sync
        return sync is None or self._clock.monotonic() - sync[1] >= _CLOCK_RESAMPLE

    def measured_time(self, reply: Sequence[Any], before: float, after: float) -> None:
        """A TIME reply (seconds, microseconds) read between two local monotonic times."""
        seconds, micros = reply
        self._measured(int(seconds) * 1000 + int(micros) // 1000, before, after)

    def load_reply(self, providers: Sequence[str], raws: Sequence[Any]) -> StoreSnapshot:
        """MGET's reply, at the server's clock as last measured."""
        return self._snapshot(providers, raws, self.now())

    def transition_reply(
        self, provider: str, reply: Sequence[Any], before: float, after: float
    ) -> Transition:
        """breaker.lua's reply to one operation, run between two local monotonic times."""
        now = self._script_now(reply, before, after)
        return self._result(provider, reply[1:4], now)

    def report_reply(
        self, names: Sequence[str], reply: Sequence[Any], before: float, after: float
    ) -> StoreSnapshot:
        """breaker.lua's reply to a batch of tallies and reads (``report_args``' order)."""
        now = self._script_now(reply, before, after)
        records: dict[str, BreakerRecord] = {}
        invalid: list[str] = []
        for i, name in enumerate(names):
            part = reply[1 + 3 * i : 4 + 3 * i]
            try:
                records[name] = self._result(name, part, now, verify=True).record
            except ValueError:  # a key only read is parsed here, as after an MGET
                records[name] = _FRESH
                invalid.append(name)
                continue
            if _text(part[0])[2] == "1" and not part[2]:  # another type, only read
                invalid.append(name)
        if invalid or self._invalid_logged:
            self._note_invalid(invalid, records)
        return StoreSnapshot(records=records, now=now, invalid=tuple(invalid))

    def store_error(self, what: str, exc: BaseException) -> StateStoreError:
        """``exc`` as ``StateStoreError``, the one error the manager falls back on: counted,
        passwords redacted."""
        self._count("store_errors")
        if isinstance(exc, StateStoreError):
            return exc
        return self._error(what, exc)

    def subscribe(self, handler: EventHandler, on_connect: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                raise StateStoreError(f"{self.describe()}: backend is closed")
            if self._subscriber is not None:
                return
            self._subscriber = _Subscriber(self, handler, on_connect)
        self._subscriber.start()

    def health_check(self) -> bool:
        subscriber = self._subscriber
        if subscriber is not None and not subscriber.connected:
            return False
        try:
            self._run("ping", lambda: self._client().ping(), count=False)
        except StateStoreError:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None:
            subscriber.stop()
        with self._lock:
            lease, self._lease = self._lease, None
            self._scripts = None
        if lease is not None:
            lease.release()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def async_twin(self) -> AsyncBackend:
        """redis-py's asyncio client with this backend's settings and state
        (``redis_async``); a supplied blocking client is driven from worker threads."""
        if self._own_client is not None:
            return ThreadedAsyncBackend(self)
        from flexiai.circuit_breaker.stores.redis_async import AsyncRedisBackend

        return AsyncRedisBackend(self)

    def describe(self) -> str:
        if self._own_client is not None:
            return f"{type(self._own_client).__name__} (supplied client)"
        return connections.describe(self._config)

    def __repr__(self) -> str:
        return (
            f"RedisSyncBackend({self.describe()!r}, key_prefix={self._config.key_prefix!r}, "
            f"channel={self._config.channel!r})"
        )

    # -- operator tools ---------------------------------------------------------------

    def list_providers(self) -> list[str]:
        """Every provider with a record under this prefix (SCAN; for ``flexiai status``)."""
        prefix = state_key(self._config.key_prefix, "", self._cluster)
        pattern = state_key_pattern(self._config.key_prefix, self._cluster)

        def scan() -> list[str]:
            client = self._client()
            options: dict[str, Any] = {"match": pattern, "count": 200}
            if self._cluster:
                # Every state key shares the prefix's hash tag: one node holds them all.
                options["target_nodes"] = cast(ClusterClient, client).get_node_from_key(prefix)
            return sorted({_text(key)[len(prefix) :] for key in client.scan_iter(**options)})

        return self._run("scan", scan)

    def load_functions(self) -> tuple[str, bool]:
        """Load flexiai's function library (``redis_use_functions``) on the server: its
        name, and False if it was already there (for ``flexiai functions load``)."""
        name, code = function_library()

        def load() -> bool:
            client: Any = self._client()
            try:
                client.function_load(code)
            except Exception as exc:
                if library_exists(exc):
                    return False
                raise
            return True

        return name, self._run("function load", load)

    # -- internals --------------------------------------------------------------------

    def _client(self) -> RedisClient:
        if self._own_client is not None:
            return self._own_client
        with self._lock:
            if self._closed:
                raise StateStoreError(f"{self.describe()}: backend is closed")
            if self._lease is None:
                self._lease = connections.acquire(self._config)
            return self._lease.client

    def _registered(self) -> _Scripts:
        client = self._client()
        scripts = self._scripts
        if scripts is None or scripts.client is not client:
            breaker: Script
            if self._config.redis_use_functions:
                breaker = _Function(client)
            else:
                # register_script only hashes the source: EVALSHA, then SCRIPT LOAD on NOSCRIPT.
                breaker = client.register_script(_script_source("breaker.lua"))
            scripts = _Scripts(client, breaker)
            self._scripts = scripts
        return scripts

    def _run(self, what: str, call: Callable[[], _T], *, count: bool = True) -> _T:
        """Run one store call; any failure in it (redis-py's errors, ``RedisClusterException``
        which is not one of them, socket errors, a client that cannot even be built) becomes
        ``StateStoreError``, the one error the manager falls back on."""
        try:
            return call()
        except Exception as exc:
            if count:
                self._count("store_errors")
            if isinstance(exc, StateStoreError):
                raise
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: BaseException) -> StateStoreError:
        message = f"redis {what} failed on {self.describe()}: {type(exc).__name__}: {exc}"
        for secret in self._secrets():
            message = message.replace(secret, "**********")
        return StateStoreError(message)

    def _secrets(self) -> list[str]:
        """Every password this backend knows, including one inside ``redis_url``: redacting
        the URL's password rather than the whole URL keeps errors readable."""
        config = self._config
        found = [
            s.get_secret_value()
            for s in (config.redis_password, config.redis_sentinel_password)
            if s is not None and s.get_secret_value()
        ]
        if config.redis_url is not None:
            from urllib.parse import unquote, urlsplit

            url_password = urlsplit(config.redis_url.get_secret_value()).password
            if url_password:
                found += [url_password, unquote(url_password)]
        return found

    def now(self) -> int:
        """The server's clock from the last measured offset; the local wall clock until the
        first measurement (the first load or transition makes one)."""
        if self._store_clock is not None:
            return self._store_clock()
        sync = self._clock_sync
        if sync is None:
            return epoch_ms(self._clock)
        return max(int((self._clock.monotonic() + sync[0]) * 1000), self._latest_now)

    def _measured(self, server_now: int, before: float, after: float) -> None:
        """One reading of the server's clock (ms), taken between two local monotonic times:
        the server read it, on average, halfway through the round trip."""
        self._clock_sync = (server_now / 1000 - (before + after) / 2, after)
        self._latest_now = max(self._latest_now, server_now)

    def _script_now(self, reply: Any, before: float, after: float) -> int:
        now = int(_text(reply[0]))
        if self._store_clock is None:
            self._measured(now, before, after)
        return now

    def _snapshot(self, providers: Sequence[str], raws: Sequence[Any], now: int) -> StoreSnapshot:
        """Parse MGET's reply: one JSON string per provider, or nil for a key that is absent
        or holds another type (a transition detects and overwrites the latter)."""
        records: dict[str, BreakerRecord] = {}
        invalid: list[str] = []
        for provider, raw in zip(providers, raws, strict=True):
            try:
                records[provider] = self._accept(provider, raw)
            except ValueError:
                invalid.append(provider)
                records[provider] = _FRESH
        if invalid or self._invalid_logged:
            self._note_invalid(invalid, records)
        return StoreSnapshot(records=records, now=now, invalid=tuple(invalid))

    def _note_invalid(self, invalid: list[str], records: dict[str, BreakerRecord]) -> None:
        """Count garbage on every read, log it once per provider until the key is repaired."""
        if invalid:
            self._count("invalid_records", len(invalid))
            fresh = [p for p in invalid if p not in self._invalid_logged]
            if fresh:
                logger.warning(
                    "ignored invalid breaker state for %s in %s (read as CLOSED)",
                    ", ".join(fresh),
                    self.describe(),
                )
        self._invalid_logged = set(invalid) | (self._invalid_logged - set(records))

    def _result(
        self, provider: str, part: Sequence[Any], now: int, *, verify: bool = False
    ) -> Transition:
        """One key's part of breaker.lua's reply: flags, event, the stored JSON. breaker.lua
        checked the version step of every record it changed; with ``verify``, one it did
        not change (a key only read) is checked here, as after an MGET."""
        flags, event = _text(part[0]), _text(part[1])
        raw = part[2]
        if flags[2] == "1" and raw:  # garbage that this operation overwrote
            self._count("invalid_records")
            logger.warning(
                "overwrote invalid breaker state for %s in %s", provider, self.describe()
            )
        record = self._parse(provider, raw or None)  # the script answers '' for no record
        if (
            verify
            and flags[0] == "0"
            and version_jumped(self._versions.get(provider), record.version)
        ):
            raise ValueError("breaker record version jumped ahead")
        self._versions[provider] = record.version
        return Transition(
            record=record,
            changed=flags[0] == "1",
            granted=flags[1] == "1",
            event=EventType(event) if event else None,
            now=now,
        )

    def _accept(self, provider: str, raw: Any) -> BreakerRecord:
        """A record read (not written) by this worker: parsed, and garbage if its version
        jumped further ahead of the last one read than a fleet can go. Raises
        ``ValueError`` on garbage; the last version read moves only on a valid record."""
        record = self._parse(provider, raw)
        if version_jumped(self._versions.get(provider), record.version):
            raise ValueError("breaker record version jumped ahead")
        self._versions[provider] = record.version
        return record

    def _parse(self, provider: str, raw: Any) -> BreakerRecord:
        """A stored record (None: no key), parsed once per distinct string. Raises
        ``ValueError`` on garbage."""
        if raw is None:
            return _FRESH
        cached = self._parsed.get(provider)
        if cached is not None and cached[0] == raw:
            return cached[1]
        record = BreakerRecord.from_json(raw)
        self._parsed[provider] = (raw, record)
        return record

    def _count(self, name: str, amount: int = 1) -> int:
        with self._lock:
            self._counts[name] += amount
            return self._counts[name]


class _Subscriber:
    """The background reader of the event channel: one daemon thread, one connection.

    A ``subscribe`` confirmation from the server marks every (re)connection, including the
    ones redis-py makes by itself inside ``get_message``; each one calls ``on_connect`` so
    the manager resyncs whatever it missed.

    Messages already received are taken as one batch. Once the handler says it re-read the
    store for one of them, the rest of the batch is covered (each was published after its
    record was written, and received before that read began): they are still decoded and
    counted when malformed, but not delivered. A burst costs one read, not one per event.
    """

    def __init__(
        self,
        backend: RedisSyncBackend,
        handler: EventHandler,
        on_connect: Callable[[], None],
    ) -> None:
        from redis.backoff import EqualJitterBackoff

        self._backend = backend
        self._handler = handler
        self._on_connect = on_connect
        self._channel = backend._config.channel
        self._backoff = EqualJitterBackoff(
            cap=backend._config.reconnect_backoff, base=_RECONNECT_BASE
        )
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="flexiai-sync-subscriber", daemon=True
        )
        self.connected = False
        self._connections = 0
        self._pubsub: Any = None  # the thread's current PubSub, for _wake

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(_JOIN_SECONDS)

    def _wake(self) -> None:
        """End a wait in ``get_message`` now rather than at the next poll: shutting the
        socket down (not closing it, which is the thread's job) makes it readable."""
        connection = getattr(self._pubsub, "connection", None)
        sock = getattr(connection, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        pubsub: Any = None
        failures = 0
        while not self._stopping.is_set():
            try:
                if pubsub is None:
                    pubsub = self._pubsub = self._backend._client().pubsub()
                    pubsub.subscribe(self._channel)
                message = pubsub.get_message(timeout=_POLL_SECONDS)
                batch = [] if message is None else self._drain(pubsub, message)
            except Exception as exc:
                self.connected = False
                pubsub = self._pubsub = self._discard(pubsub)
                if self._stopping.is_set():
                    break
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                logger.log(
                    level,
                    "event subscriber lost %s (%s: %s); reconnecting",
                    self._backend.describe(),
                    type(exc).__name__,
                    exc,
                )
                self._stopping.wait(self._backoff.compute(failures))
                continue
            covered = False
            for message in batch:
                if self._stopping.is_set():
                    break
                kind = _text(message.get("type"))
                if kind == "subscribe":
                    failures = 0
                    self._connected()
                elif kind == "message":
                    event = self._decode(message.get("data"))
                    if event is not None and not covered:
                        covered = self._deliver(event)
        self._discard(pubsub)

    @staticmethod
    def _drain(pubsub: Any, first: Any) -> list[Any]:
        """``first`` and whatever else has already arrived (no waiting), up to ``_BATCH``."""
        batch = [first]
        while len(batch) < _BATCH:
            message = pubsub.get_message(timeout=0)
            if message is None:
                break
            batch.append(message)
        return batch

    def _connected(self) -> None:
        self.connected = True
        self._connections += 1
        if self._connections > 1:
            self._backend._count("reconnects")
            logger.info("event subscriber reconnected to %s", self._backend.describe())
        try:
            self._on_connect()
        except Exception:
            self._handler_failed("on_connect")

    def _decode(self, data: Any) -> SyncEvent | None:
        """The event, or None for a malformed message (dropped, counted, logged sparingly)."""
        try:
            return decode_event(data)
        except Exception as exc:  # MalformedEventError, or a payload that is not even text
            count = self._backend._count("malformed_events")
            if count == 1 or count % _LOG_EVERY == 0:
                logger.warning(
                    "dropped a malformed event on %r (%s); %d dropped so far",
                    self._channel,
                    exc,
                    count,
                )
            return None

    def _deliver(self, event: SyncEvent) -> bool:
        """Hand ``event`` over; True when the handler says it re-read the store."""
        try:
            return self._handler(event) is True
        except Exception:
            self._handler_failed("event handler")
            return False

    def _handler_failed(self, what: str) -> None:
        count = self._backend._count("handler_errors")
        if count == 1 or count % _LOG_EVERY == 0:
            logger.exception("%s raised; %d errors so far", what, count)

    @staticmethod
    def _discard(pubsub: Any) -> None:
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:
                logger.debug("closing the subscriber connection failed", exc_info=True)
