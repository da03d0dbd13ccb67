"""``StateSyncManager``: one worker's link to the shared breaker store.

It owns the rules every backend shares:

* **fail open**: any store failure falls back, within that one call, to a local memory
  store seeded with the last known state; Redis is then left alone for
  ``reconnect_backoff`` seconds instead of costing a timeout on every request;
* **resync**: after a (re)connection, and whenever a snapshot is older than
  ``snapshot_max_age`` in snapshot mode, every breaker's view is replaced by the store's;
* **events**: another worker's event is never believed, only a reason to read every
  record again (see ``_on_event``);
* **counts**: the breakers' tallies (successes counted locally) reach the store in batches:
  with the snapshot refresh in snapshot mode (the same single round trip), from a
  background thread at most every ``flush_interval`` in pub/sub mode (a healthy request
  makes no round trip), and inline where the store is this process's memory. While the
  store is down they go to the local fallback, so an outage loses at most one batch.

Logs say "falling back" and "reconnected" once per outage, never once per request.

Sync and async share every rule: each operation that reaches the store is written once, as
a generator (a *store flow*) that yields the ``StoreCall`` it needs and receives the reply
(or has the ``StateStoreError`` thrown in). ``run`` drives a flow with the blocking
backend; ``arun`` awaits the backend's async twin (``SyncBackend.async_twin``), so the
async API never waits on a socket on the event loop. The failover generator in
``flexiai.client`` yields from these flows, so it stays one algorithm with two drivers.
The pub/sub subscriber and the flusher stay threads: they are not on the loop.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from flexiai._clock import Clock, SystemClock, epoch_ms
from flexiai._fork import forget_parent_state
from flexiai.circuit_breaker._machine import NO_TALLY, EventType, Op, Policy, Tally, Transition
from flexiai.circuit_breaker._wire import SyncEvent
from flexiai.circuit_breaker.stores.base import AsyncBackend, StoreSnapshot, SyncBackend
from flexiai.circuit_breaker.stores.memory import MemorySyncBackend
from flexiai.exceptions import StateStoreError
from flexiai.models import CircuitBreakerConfig

if TYPE_CHECKING:
    import asyncio

    from flexiai.circuit_breaker._breaker import CircuitBreaker

__all__ = [
    "StateSyncManager",
    "StoreCall",
    "StoreFailures",
    "StoreFlow",
    "StoreHealth",
    "generate_worker_id",
]

logger = logging.getLogger("flexiai.sync.manager")

SyncMode = Literal["pubsub", "snapshot"]
_BROADCAST = (EventType.OPENED, EventType.CLOSED, EventType.HALF_OPEN)
_T = TypeVar("_T")


# A NamedTuple, not a frozen dataclass: an internal record on the Lambda cold-start path,
# and python3.12 creates a NamedTuple class in ~0.1 ms, a frozen slotted dataclass in ~0.6.
class StoreCall(NamedTuple):
    """One call of the breaker store that a flow needs: the name of a method that
    ``SyncBackend`` and ``AsyncBackend`` both have, and its arguments."""

    method: Literal["load", "report", "transition"]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = MappingProxyType({})  # read-only: one default for all


#: A sans-I/O operation on the store: yields ``StoreCall``s, receives their replies (a
#: failed call is thrown in as ``StateStoreError``), returns its result.
StoreFlow = Generator[StoreCall, Any, _T]


class StoreFailures:
    """How many shared-store operations failed (or timed out) while one request ran: the
    request's own ones, not the subscriber's or the flusher's, which never make it wait.
    Each costs at most one ``redis_socket_timeout``, and the first one degrades the
    manager, so the rest of the request uses local breakers: normally 0, at most 1."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


#: The counter of the request running in this thread or task (a ContextVar, so concurrent
#: async requests each count their own; background threads start with none).
_request_failures: ContextVar[StoreFailures | None] = ContextVar(
    "flexiai_store_failures", default=None
)


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """How this worker's link to the breaker store is doing (``FlexiAI.store_health()``).

    ``shared``: the state is shared with other processes right now (False with sync off,
    with the memory backend, and while degraded); ``healthy``: the store answered a PING
    just now and the subscriber, if any, is connected."""

    backend: str
    mode: str
    shared: bool
    healthy: bool
    degraded: bool
    worker_id: str
    fallbacks: int
    reconnects: int


def generate_worker_id() -> str:
    """hostname-pid-random: unique per process, readable in ``flexiai status``."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class StateSyncManager:
    def __init__(
        self,
        backend: SyncBackend,
        *,
        worker_id: str | None = None,
        mode: SyncMode = "pubsub",
        snapshot_max_age: float = 1.0,
        reconnect_backoff: float = 5.0,
        flush_interval: float = 1.0,
        resync_interval: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self.backend = backend
        self._given_worker_id = worker_id
        self.worker_id = worker_id or generate_worker_id()
        self.mode: SyncMode = mode
        self._clock = clock or SystemClock()
        self._snapshot_max_age = snapshot_max_age
        self._reconnect_backoff = reconnect_backoff
        self._flush_interval = flush_interval
        self._resync_interval = resync_interval
        self._flushed_at = self._clock.monotonic()
        self._hurried = False  # a breaker has counts that should not wait (see hurry)
        self._flusher: _Flusher | None = None
        self._fallback = MemorySyncBackend(clock=self._clock)
        self._async_backend: AsyncBackend | None = None  # built on the first async call
        # Store reads in flight, by loop and keys: see aperform.
        self._loads_in_flight: dict[tuple[Any, ...], asyncio.Task[Any]] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._policy = Policy.from_config(CircuitBreakerConfig())  # replaced by attach()
        self._lock = threading.Lock()
        self._degraded_until: float | None = None
        self._snapshot_at: float | None = None
        self._subscribed = False
        self._closed = False
        self.fallbacks = 0
        self.reconnects = 0
        #: Events from another app (another key_prefix) on a shared channel, dropped unread.
        self.foreign_events = 0
        forget_parent_state(self)

    def _reset_after_fork(self) -> None:
        """In a forked child (see ``flexiai._fork``): a worker of its own. A new id, because
        events carrying this worker's id are ignored as its own; the subscriber and flusher
        threads exist only in the parent, so the next request reads the store and starts
        the child's own; the counts not yet sent are the parent's to send; and locks that a
        parent thread may have held at the fork are replaced. A configured ``worker_id``
        gets the child's pid appended, so that forked workers stay distinct."""
        given = self._given_worker_id
        self.worker_id = generate_worker_id() if given is None else f"{given}-{os.getpid()}"
        self._lock = threading.Lock()
        self._flusher = None
        self._subscribed = False
        self._loads_in_flight = {}  # the parent's loop's tasks
        self._snapshot_at = None
        self._hurried = False
        self._fallback._hub.lock = threading.Lock()
        for breaker in self._breakers.values():
            breaker._lock = threading.Lock()
            breaker.take_tally()

    # -- wiring ------------------------------------------------------------------------
    def attach(self, breakers: Iterable[CircuitBreaker]) -> None:
        for breaker in breakers:
            self._breakers[breaker.provider] = breaker
            self._policy = breaker.policy  # one client, one CircuitBreakerConfig

    @property
    def shared(self) -> bool:
        return self.backend.shared and not self.degraded

    @property
    def degraded(self) -> bool:
        return self._degraded_until is not None

    def store_now(self) -> int:
        """The store's clock in milliseconds, without I/O (the local clock while degraded:
        the local fallback store writes with it)."""
        if self._degraded_until is None:
            return self.backend.now()
        return epoch_ms(self._clock)

    # -- drivers -----------------------------------------------------------------------
    @property
    def async_backend(self) -> AsyncBackend:
        """The store for the async API (the backend's async twin), built on first use."""
        twin = self._async_backend
        if twin is None:
            twin = self._async_backend = self.backend.async_twin()
        return twin

    def perform(self, call: StoreCall) -> Any:
        """One store call, blocking. Raises ``StateStoreError``."""
        return getattr(self.backend, call.method)(*call.args, **call.kwargs)

    async def aperform(self, call: StoreCall) -> Any:
        """One store call, awaited on the async twin. Raises ``StateStoreError``.

        Concurrent reads of the same keys on one loop share one round trip: a burst of 100
        requests that each want a fresh snapshot sends one MGET, not 100, and with the store
        frozen 100 requests wait out one socket timeout instead of 100 timeouts that all
        expire, and are handled, in the same loop iteration. A request that joins a read in
        flight gets state read no earlier than that read was sent: at most one round trip
        older than a read of its own."""
        if call.method != "load":
            return await getattr(self.async_backend, call.method)(*call.args, **call.kwargs)
        import asyncio  # loaded already: this runs on a loop

        from flexiai._loop_turns import take_turn_after

        loop = asyncio.get_running_loop()
        key = (loop, tuple(call.args[0]))
        shared = self._loads_in_flight.get(key)
        if shared is None:
            shared = loop.create_task(self.async_backend.load(*call.args))
            self._loads_in_flight[key] = shared
            shared.add_done_callback(functools.partial(self._load_done, key))
        # Not awaited itself: a waiter cancelled (a deadline, a disconnect) leaves the read
        # to the others, and the waiters take turns handling its outcome.
        await take_turn_after(shared)
        try:
            return shared.result()
        except StateStoreError as exc:
            # A failure of its own for each waiter: raising the one shared object in each
            # would add every waiter's frames to its one traceback, a cost that grows with
            # the square of the burst (10 ms for 50 requests).
            raise copy.copy(exc) from exc

    def _load_done(self, key: tuple[Any, ...], task: asyncio.Task[Any]) -> None:
        self._loads_in_flight.pop(key, None)
        if not task.cancelled():
            task.exception()  # every waiter may be gone: not an "exception never retrieved"

    def run(self, flow: Generator[Any, Any, _T], other: Callable[[Any], Any] | None = None) -> _T:
        """Drive ``flow`` to its end with blocking store calls. Steps that are not store
        calls (the client's provider calls and sleeps) go to ``other``, whose return value
        is sent back in."""
        reply: Any = None
        error: StateStoreError | None = None
        while True:
            try:
                step = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as done:
                result: _T = done.value
                return result
            reply, error = None, None
            if not isinstance(step, StoreCall):
                assert other is not None, f"no driver for {step!r}"
                reply = other(step)
                continue
            try:
                reply = self.perform(step)
            except StateStoreError as exc:
                error = exc

    async def arun(
        self,
        flow: Generator[Any, Any, _T],
        other: Callable[[Any], Awaitable[Any]] | None = None,
    ) -> _T:
        """``run`` with awaited store calls and steps: the loop never blocks, and a burst of
        concurrent requests takes turns on it (``flexiai._loop_turns``) both before a step
        starts (building and sending it) and before its reply is handled."""
        from flexiai._loop_turns import take_turn  # asyncio: not loaded for sync callers

        reply: Any = None
        error: StateStoreError | None = None
        while True:
            await take_turn()
            try:
                step = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as done:
                result: _T = done.value
                return result
            reply, error = None, None
            await take_turn()
            if not isinstance(step, StoreCall):
                assert other is not None, f"no driver for {step!r}"
                reply = await other(step)
                continue
            try:
                reply = await self.aperform(step)
            except StateStoreError as exc:
                error = exc

    # -- the request path --------------------------------------------------------------
    @contextlib.contextmanager
    def counting_failures(self) -> Iterator[StoreFailures]:
        """Count the store failures of the request running in this thread or task, for as
        long as it runs (``ResponseMeta.store_failures``); outside it, nothing is counted
        and nothing is kept local because of it."""
        counter = StoreFailures()
        token = _request_failures.set(counter)
        try:
            yield counter
        finally:
            _request_failures.reset(token)

    def before_request(self) -> None:
        """Bring the breakers' views up to date: cheap when nothing is due."""
        self.run(self.before_request_flow())

    async def abefore_request(self) -> None:
        await self.arun(self.before_request_flow())

    def before_request_flow(self) -> StoreFlow[None]:
        if self._closed:
            return
        now = self._clock.monotonic()
        if self._degraded_until is not None:
            if now < self._degraded_until:
                yield from self._flush_if_due(now)  # into the local fallback: no I/O
                return
            yield from self._try_reconnect()
            return
        if self.mode == "pubsub":
            # Read the fleet's state before the first request rather than waiting for the
            # subscriber thread: a new worker must not start CLOSED on an open provider.
            if not self._subscribed:
                if (yield from self.refresh_flow()):
                    self._start_subscriber()
            elif self._flusher is None:
                yield from self._flush_if_due(now)  # a store in this process: no thread
        elif (
            self._hurried
            or self._snapshot_at is None
            or now - self._snapshot_at >= self._snapshot_max_age
        ):
            yield from self.refresh_flow()

    def refresh(self) -> bool:
        """Read every provider's shared state in one round trip, which also sends the counts
        not yet sent when ``flush_interval`` has passed since they were last sent. False if
        the store failed (the counts then go to the local fallback)."""
        return self.run(self.refresh_flow())

    async def arefresh(self) -> bool:
        return await self.arun(self.refresh_flow())

    def refresh_flow(self) -> StoreFlow[bool]:
        names = list(self._breakers)
        # The snapshot's age counts from when the read was sent, not from when its answer
        # arrived: the store may be read at any moment in between, so only this makes
        # snapshot_max_age a bound on how stale a view is when the answer is slow.
        sent_at = self._clock.monotonic()
        # Counts ride along at most once per flush_interval (or at once when hurried): the
        # other refreshes stay a plain read, the cheapest round trip there is.
        tallies = self._take_tallies() if self._flush_due(sent_at) else {}
        snapshot: StoreSnapshot
        try:
            if tallies:
                snapshot = yield StoreCall(
                    "report", (tallies, self._policy, self.worker_id), {"read": names}
                )
                self._flushed_at = self._clock.monotonic()
                self._hurried = False
            else:
                snapshot = yield StoreCall("load", (names,))
        except StateStoreError as exc:
            self._degrade(exc)
            self._count_locally(tallies)
            return False
        self._snapshot_at = sent_at
        if self._degraded_until is not None:
            with self._lock:
                self._degraded_until = None
                self.reconnects += 1
            logger.warning(
                "shared breaker store %s reconnected; state resynced", self.backend.describe()
            )
        self._apply(snapshot)
        if snapshot.invalid:
            yield from self._repair(snapshot.invalid)
        return True

    def _repair(self, providers: Iterable[str]) -> StoreFlow[None]:
        """The first reader that finds garbage in a key replaces it with a fresh record (one
        operation per key that writes nothing on a valid record), so it is not read, logged
        and counted by every worker forever. A failure here is one more store failure."""
        for provider in providers:
            try:
                yield StoreCall("transition", (provider, Op.ACQUIRE, self._policy, self.worker_id))
            except StateStoreError as exc:
                self._degrade(exc)
                return

    def transition(
        self,
        provider: str,
        op: Op,
        policy: Policy,
        *,
        open_for: int | None = None,
        tally: Tally = NO_TALLY,
    ) -> Transition:
        return self.run(self.transition_flow(provider, op, policy, open_for=open_for, tally=tally))

    def transition_flow(
        self,
        provider: str,
        op: Op,
        policy: Policy,
        *,
        open_for: int | None = None,
        tally: Tally = NO_TALLY,
    ) -> StoreFlow[Transition]:
        """One atomic operation on the store, or on the local fallback while degraded."""
        # A request that already waited for a failed operation goes local for the rest of
        # it, even if another thread has reconnected meanwhile: one timeout per request.
        counter = _request_failures.get()
        if self._degraded_until is None and (counter is None or counter.count == 0):
            try:
                result: Transition = yield StoreCall(
                    "transition",
                    (provider, op, policy, self.worker_id),
                    {"open_for": open_for, "tally": tally},
                )
            except StateStoreError as exc:
                self._degrade(exc)
            else:
                if result.event in _BROADCAST and self.backend.shared:
                    logger.info("Broadcasting state change: %s %s", provider, result.event)
                return result
        return self._fallback.transition(
            provider, op, policy, self.worker_id, open_for=open_for, tally=tally
        )

    def flush(self) -> bool:
        """Send every breaker's counted calls to the store now (one round trip, nothing if
        there is nothing to send). False if the store failed; the counts then go to the
        local fallback, so they still count in this process."""
        return self.run(self._flush())

    def _flush(self) -> StoreFlow[bool]:
        tallies = self._take_tallies()
        if not tallies:
            return True
        self._flushed_at = self._clock.monotonic()
        self._hurried = False
        if self._degraded_until is None:
            try:
                snapshot: StoreSnapshot = yield StoreCall(
                    "report", (tallies, self._policy, self.worker_id)
                )
            except StateStoreError as exc:
                self._degrade(exc)
            else:
                self._apply(snapshot)
                return True
        self._count_locally(tallies)
        return False

    def _flush_due(self, now: float) -> bool:
        return self._hurried or now - self._flushed_at >= self._flush_interval

    def _flush_if_due(self, now: float) -> StoreFlow[None]:
        if self._flush_due(now):
            yield from self._flush()

    def hurry(self) -> None:
        """A breaker holds a success the store needs soon (it breaks a run of failures in
        progress): the next report goes now (at most ten a ``flush_interval``), or with the
        next refresh in snapshot mode."""
        self._hurried = True
        if self._flusher is not None:
            self._flusher.wake()

    def _take_tallies(self) -> dict[str, Tally]:
        return {
            name: tally
            for name, breaker in self._breakers.items()
            if (tally := breaker.take_tally())
        }

    def _count_locally(self, tallies: dict[str, Tally]) -> None:
        if tallies:
            self._apply(self._fallback.report(tallies, self._policy, self.worker_id))

    def _apply(self, snapshot: StoreSnapshot) -> None:
        for name, record in snapshot.records.items():
            breaker = self._breakers.get(name)
            if breaker is not None:
                breaker.apply_snapshot(record)

    # -- events and connections --------------------------------------------------------
    def _start_subscriber(self) -> None:
        try:
            self.backend.subscribe(self._on_event, self._on_connect)
        except StateStoreError as exc:
            self._degrade(exc)
            return
        self._subscribed = True
        if self.backend.shared:
            self._flusher = _Flusher(self, self._flush_interval, self._resync_interval)
            self._flusher.start()
            logger.info("Worker %s started", self.worker_id)

    def _on_connect(self) -> None:
        """Called by the backend after every (re)connection of its subscriber."""
        self.refresh()

    def _on_event(self, event: SyncEvent) -> bool:
        """An event says when to look, never what to believe: every record is read again
        (one MGET), so a forged, foreign or stale event cannot change this worker's view,
        and a store that lost its keys (FLUSHALL, a failover that lost writes) is adopted.
        This worker's own events are already in its view. Another app's events (another
        key_prefix on a shared channel) do not even cost a read: they are dropped, counted.
        True when the store was read: that read covers every event received before it,
        which the backend then skips, so a burst (or a flood of forged events) costs one
        read, not one per event."""
        prefix = self.backend.key_prefix
        if prefix is not None and event.prefix != prefix:
            with self._lock:
                self.foreign_events += 1
            return False
        if event.worker_id != self.worker_id and event.provider in self._breakers:
            return self.refresh()
        return False

    def _degrade(self, exc: BaseException) -> None:
        counter = _request_failures.get()
        if counter is not None:
            counter.count += 1
        with self._lock:
            first = self._degraded_until is None
            self._degraded_until = self._clock.monotonic() + self._reconnect_backoff
            if first:
                self.fallbacks += 1
                self._fallback.seed({n: b.record for n, b in self._breakers.items()})
        if first:
            # One line per episode: the deployment guide's words, which operators grep
            # for, then which store failed, why, and when it is tried again.
            logger.warning(
                "Failed to initialize Redis backend, falling back to memory: shared breaker "
                "store %s unavailable (%s); falling back to local breakers, retrying in %.1fs",
                self.backend.describe(),
                _reason(exc),
                self._reconnect_backoff,
            )

    def _try_reconnect(self) -> StoreFlow[None]:
        if (yield from self.refresh_flow()) and self.mode == "pubsub" and not self._subscribed:
            self._start_subscriber()

    # -- health and lifecycle ----------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """The store's counters (malformed events, invalid records, errors...) plus this
        worker's fallbacks and the events it dropped as another app's."""
        return {
            **self.backend.stats(),
            "fallbacks": self.fallbacks,
            "foreign_events": self.foreign_events,
        }

    def health_check(self) -> bool:
        return not self.degraded and self.backend.health_check()

    def health(self) -> StoreHealth:
        """Every fact about the link at once; ``healthy`` costs one PING when shared."""
        return StoreHealth(
            backend=self.backend.name,
            mode=self.mode,
            shared=self.shared,
            healthy=self.health_check(),
            degraded=self.degraded,
            worker_id=self.worker_id,
            fallbacks=self.fallbacks,
            reconnects=self.reconnects,
        )

    def close(self) -> None:
        """Stop background work, send the counts not yet sent (best effort: one round trip
        at most, skipped while the store is down), and release connections."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            self._flusher.stop()
        if self._degraded_until is None:
            self.flush()
        if self._async_backend is not None:
            self._async_backend.close()  # the asyncio connections of loops still running
        self.backend.close()
        self._fallback.close()

    async def aclose(self) -> None:
        """``close()`` for the async API: the counts not yet sent go through the async twin,
        whose connections on this loop are closed; the threads are stopped (joined) in a
        worker thread, so the loop does not wait on them."""
        if self._closed:
            return
        if self._degraded_until is None:
            await self.arun(self._flush())
        if self._async_backend is not None:
            await self._async_backend.aclose()
        import asyncio

        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        return (
            f"StateSyncManager(worker_id={self.worker_id!r}, backend={self.backend.describe()!r}, "
            f"mode={self.mode!r}, degraded={self.degraded})"
        )


def _reason(exc: BaseException) -> str:
    """Why the store failed, in a few words: the error's class, or for a refused TLS
    certificate, that (redis-py reports it as a plain ConnectionError), or the store's own
    message when it raised the error itself (a function library that is not loaded)."""
    import ssl

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"TLS certificate refused: {seen.verify_message or seen.reason}"
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return "TLS certificate refused: certificate verify failed"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, StateStoreError) and exc.__cause__ is None and str(exc):
        return str(exc)  # raised by the store itself, saying what is wrong
    return type(exc.__cause__ or exc).__name__


class _Flusher:
    """The pub/sub worker's background thread: it sends counts every ``interval`` seconds,
    so the healthy request path never waits on the store, sooner when a breaker hurries (at
    most ten reports an interval), and re-reads every record every ``resync_interval``, so
    no view outlives the store's for long."""

    def __init__(self, manager: StateSyncManager, interval: float, resync_interval: float) -> None:
        self._manager = manager
        self._interval = interval
        self._resync_interval = resync_interval
        self._stop = threading.Event()
        self._woken = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flexiai-sync-flush", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._woken.set()

    def stop(self) -> None:
        self._stop.set()
        self._woken.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        resynced = flushed = time.monotonic()
        while True:
            self._woken.wait(min(self._interval, self._resync_interval))
            self._woken.clear()
            gap = self._interval / 10 - (time.monotonic() - flushed)
            if self._stop.is_set() or (gap > 0 and self._stop.wait(gap)):
                return
            flushed = time.monotonic()
            try:
                self._manager.flush()
                if flushed - resynced >= self._resync_interval:
                    resynced = flushed
                    self._manager.refresh()
            except Exception:  # a bug here must not kill counting for good
                logger.exception("flushing breaker counts failed")
