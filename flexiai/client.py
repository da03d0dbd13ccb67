"""``FlexiAI``: calls providers in priority order, with retries and a breaker per provider.

The failover algorithm is written once, as a generator that yields what to do next (call
this provider with this timeout, sleep, or make this breaker-store call) and receives the
outcome; ``generate`` drives it with blocking I/O and ``agenerate`` with ``await``, so the
async API never blocks the event loop, on the store included. Building a client opens no connection
and imports no provider code: providers, the HTTP pool and the Redis connection are all
created on first use.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from flexiai._clock import Clock, SystemClock
from flexiai._deadline import remaining_time
from flexiai._fork import forget_parent_state
from flexiai._retry import full_jitter_backoff
from flexiai._secrets import api_key_source
from flexiai.circuit_breaker import (
    BreakerSnapshot,
    CircuitBreaker,
    CircuitState,
    StateSyncManager,
    StoreHealth,
)
from flexiai.circuit_breaker._sharing import StoreCall
from flexiai.circuit_breaker.stores.base import SyncBackend
from flexiai.circuit_breaker.stores.memory import MemorySyncBackend
from flexiai.events import (
    BreakerChanged,
    FailedOver,
    Listener,
    ProviderCallFailed,
    ProviderCallSucceeded,
    notify,
)
from flexiai.exceptions import (
    AllProvidersFailedError,
    AttemptRecord,
    CircuitOpenError,
    DeadlineExceededError,
    InvalidRequestError,
    ProviderError,
    RateLimited,
    SecretResolutionError,
)
from flexiai.models import ChatMessage, FlexiAIConfig, ProviderConfig, UnifiedResponse

if TYPE_CHECKING:
    import httpx

    from flexiai.circuit_breaker._sharing import StoreFailures
    from flexiai.providers.base import ChatRequest, Provider
    from flexiai.providers.transport import HttpPool

__all__ = ["FlexiAI", "ProviderStatus"]

logger = logging.getLogger("flexiai.client")

MessageInput = ChatMessage | dict[str, str]


# A NamedTuple, not a frozen dataclass: an internal record on the Lambda cold-start path,
# and python3.12 creates a NamedTuple class in ~0.1 ms, a frozen slotted dataclass in ~0.6.
class _Call(NamedTuple):
    provider: str
    timeout: float


class _Sleep(NamedTuple):
    seconds: float


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """One provider as ``get_provider_status()`` reports it. ``status["state"]`` and the
    other keys of ``as_dict()`` still read as in flexiai 0.1, whose status was a dict."""

    provider: str
    kind: str
    model: str
    priority: int | None
    breaker: BreakerSnapshot

    @property
    def state(self) -> CircuitState:
        return self.breaker.state

    @property
    def healthy(self) -> bool:
        return self.breaker.state is CircuitState.CLOSED

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model,
            "priority": self.priority,
            **self.breaker.as_dict(),
            "healthy": self.healthy,
        }

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]


_Outcome = UnifiedResponse | ProviderError | SecretResolutionError
#: Yields what to do; receives a provider call's outcome, a store call's reply, or nothing
#: after a sleep (a failed store call is thrown in as ``StateStoreError``).
_Flow = Generator[_Call | _Sleep | StoreCall, Any, UnifiedResponse]


class FlexiAI:
    """A client for several LLM providers that keeps answering when one of them fails.

    ``config`` defaults to ``flexiai.config.load_config()`` (the ``FLEXIAI_*`` environment).
    ``sync_backend`` replaces the backend that ``config.sync`` would build (bring your own
    Redis client); ``clock``, ``transport`` and ``rand`` exist for tests.
    """

    def __init__(
        self,
        config: FlexiAIConfig | None = None,
        *,
        sync_backend: SyncBackend | None = None,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        rand: Callable[[], float] | None = None,
    ) -> None:
        if config is None:
            from flexiai.config import load_config

            config = load_config()
        self.config = config
        self._clock = clock or SystemClock()
        self._rand = rand or random.random
        self._transport = transport
        self._async_transport = async_transport
        self._http_pool: HttpPool | None = None
        self._providers: dict[str, Provider] = {}
        self._providers_lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._closed = False
        self._provider_configs = {p.name: p for p in config.providers}
        forget_parent_state(self)  # the pool, the store and the manager register their own

        sync = config.sync
        backend = sync_backend or self._build_backend()
        self._state = StateSyncManager(
            backend,
            worker_id=sync.worker_id,
            mode=sync.resolved_mode() if sync.enabled else "pubsub",
            snapshot_max_age=sync.snapshot_max_age,
            reconnect_backoff=sync.reconnect_backoff,
            flush_interval=sync.flush_interval,
            resync_interval=sync.resync_interval,
            clock=self._clock,
        )
        self._breakers = {
            p.name: CircuitBreaker(
                p.name,
                config.circuit_breaker,
                self._state,
                self._clock,
                on_change=self._on_breaker_change,
            )
            for p in config.providers
        }
        self._state.attach(self._breakers.values())
        if sync.enabled:
            # The guide documents this exact line; the details follow on a second one.
            logger.info("Sync manager initialized (backend: %s)", backend.name)
            logger.debug(
                "sync mode %s, worker %s, store %s",
                self._state.mode,
                self._state.worker_id,
                backend.describe(),
            )

    def _build_backend(self) -> SyncBackend:
        sync = self.config.sync
        if not sync.enabled:
            return MemorySyncBackend(clock=self._clock)  # private: this client's own breakers
        if sync.backend == "memory":
            return MemorySyncBackend(namespace=sync.key_prefix, clock=self._clock)
        from flexiai.circuit_breaker.stores.redis import RedisSyncBackend

        return RedisSyncBackend(sync)

    # -- the guide's public surface ------------------------------------------------------
    @property
    def _sync_manager(self) -> StateSyncManager | None:
        """The sync manager, or None when sync is disabled (as the guide documents)."""
        return self._state if self.config.sync.enabled else None

    @property
    def worker_id(self) -> str:
        return self._state.worker_id

    def add_listener(self, listener: Listener) -> None:
        """Receive ``flexiai.events`` events: calls, failovers and breaker changes."""
        self._listeners.append(listener)

    def generate(
        self,
        prompt: str,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        **options: Any,
    ) -> UnifiedResponse:
        return self.chat_completion(
            [{"role": "user", "content": prompt}],
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
            **options,
        )

    def chat_completion(
        self,
        messages: Sequence[MessageInput],
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        **options: Any,
    ) -> UnifiedResponse:
        request = self._request(messages, system, temperature, max_tokens, options)

        def perform(step: _Call | _Sleep) -> _Outcome | None:
            if isinstance(step, _Sleep):
                self._clock.sleep(step.seconds)
                return None
            try:
                return self._provider(step.provider).complete(request, timeout=step.timeout)
            except (ProviderError, SecretResolutionError) as exc:
                return exc

        # Counted per request: the rest of a request that waited for a failed store
        # operation goes local (see StateSyncManager.counting_failures).
        with self._state.counting_failures() as store_failures:
            return self._state.run(self._failover(request, store_failures), perform)

    async def agenerate(
        self,
        prompt: str,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        **options: Any,
    ) -> UnifiedResponse:
        # Validated with the request, in its turn on the loop (see achat_completion).
        return await self.achat_completion(
            [{"role": "user", "content": prompt}],
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
            **options,
        )

    async def achat_completion(
        self,
        messages: Sequence[MessageInput],
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        **options: Any,
    ) -> UnifiedResponse:
        from flexiai._loop_turns import take_turn  # asyncio: not loaded for sync callers

        # Validating and building the request is a step too: 100 requests that start in one
        # loop iteration (a gather, a server's burst) would otherwise all do it there.
        await take_turn()
        request = self._request(messages, system, temperature, max_tokens, options)

        async def perform(step: _Call | _Sleep) -> _Outcome | None:
            if isinstance(step, _Sleep):
                await self._clock.asleep(step.seconds)
                return None
            try:
                return await self._provider(step.provider).acomplete(request, timeout=step.timeout)
            except (ProviderError, SecretResolutionError) as exc:
                return exc

        with self._state.counting_failures() as store_failures:
            return await self._state.arun(self._failover(request, store_failures), perform)

    def get_provider_status(self) -> dict[str, ProviderStatus]:
        """Every provider's breaker as this worker sees it (refreshed from the store first),
        in priority order."""
        if self.config.sync.enabled:
            self._state.refresh()
        return {
            p.name: ProviderStatus(
                provider=p.name,
                kind=p.provider_kind,
                model=p.model,
                priority=p.priority,
                breaker=self._breakers[p.name].snapshot(),
            )
            for p in self.config.providers
        }

    def store_health(self) -> StoreHealth:
        """How this worker's link to the shared breaker store is doing (one PING when
        shared). With sync off it reports the process's own memory store."""
        return self._state.health()

    def refresh_breakers(self) -> bool:
        """Read every provider's shared state now (one round trip); the Lambda middleware
        calls this when an invocation starts. False if the store is unreachable, in which
        case local breakers are used, as on any store failure."""
        return self._state.refresh()

    def reset_circuit_breakers(self, provider: str | None = None) -> None:
        """Close the breaker of ``provider`` (or every one) for the whole fleet."""
        if provider is not None and provider not in self._breakers:
            raise KeyError(f"unknown provider {provider!r}")
        for name, breaker in self._breakers.items():
            if provider is None or name == provider:
                breaker.reset()

    def _reset_after_fork(self) -> None:
        # A thread of the parent may have held it at the fork (see flexiai._fork).
        self._providers_lock = threading.Lock()

    def close(self) -> None:
        """Stop the sync manager and close connections, the async client's too (its close
        is scheduled on the running loop, if any: this never blocks on one). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for p in self._providers.values():
            p.close()
        if self._http_pool is not None:
            self._http_pool.close()
        self._state.close()

    async def aclose(self) -> None:
        """``close()`` that awaits the async HTTP client's and the async store's closes, and
        waits for background threads off the loop (``async with`` calls it)."""
        if self._http_pool is not None:
            await self._http_pool.aclose()
        if not self._closed:
            await self._state.aclose()
        self.close()

    def __enter__(self) -> FlexiAI:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> FlexiAI:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        names = ", ".join(p.name for p in self.config.providers)
        return f"FlexiAI(providers=[{names}], sync={self._state!r})"

    # -- internals ---------------------------------------------------------------------
    def _request(
        self,
        messages: Sequence[MessageInput],
        system: str | None,
        temperature: float | None,
        max_tokens: int | None,
        options: dict[str, Any],
    ) -> ChatRequest:
        from flexiai.providers.base import ChatRequest

        parsed = [
            m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in messages
        ]
        if not parsed:
            raise ValueError("messages must not be empty")
        return ChatRequest(parsed, system, temperature, max_tokens, dict(options))

    def _provider(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            from flexiai.providers import provider_class
            from flexiai.providers.transport import HttpPool

            with self._providers_lock:
                provider = self._providers.get(name)
                if provider is None:
                    if self._http_pool is None:
                        self._http_pool = HttpPool(
                            transport=self._transport, async_transport=self._async_transport
                        )
                    config = self._provider_configs[name]
                    cls = provider_class(config.provider_kind)
                    provider = cls(
                        config,
                        http=self._http_pool,
                        api_key=api_key_source(config.name, config.api_key),
                    )
                    self._providers[name] = provider
        return provider

    def _on_breaker_change(self, change: BreakerChanged) -> None:
        notify(self._listeners, change)

    def _attempt_timeout(self, provider: ProviderConfig) -> float | None:
        """The timeout for the next attempt, or None if the deadline leaves too little time."""
        left = remaining_time()
        if left is None:
            return provider.timeout
        if left < provider.shortest_attempt:
            return None
        return min(provider.timeout, left)

    def _failover(self, request: ChatRequest, store_failures: StoreFailures) -> _Flow:
        """The whole decision process for one request. It yields the provider calls, sleeps
        and breaker-store calls for its driver to perform (blocking or awaited); a store
        call that fails is thrown back in and the manager falls back to local breakers
        (``store_failures`` counts them: at most one per request)."""
        yield from self._state.before_request_flow()
        started = self._clock.monotonic()
        retry = self.config.retry
        attempts: list[AttemptRecord] = []
        gave_up_on: list[str] = []
        calls = 0
        deadline_hit: float | None = None
        for config in self.config.providers:
            breaker = self._breakers[config.name]
            permit = yield from breaker.allow_flow()
            if permit is None:
                attempts.append(
                    AttemptRecord(config.name, CircuitOpenError(breaker.snapshot()), skipped=True)
                )
                gave_up_on.append(config.name)
                notify(self._listeners, FailedOver(config.name, "circuit_open"))
                continue
            max_retries = retry.max_retries if config.max_retries is None else config.max_retries
            last: ProviderError | SecretResolutionError | None = None
            for attempt in range(max_retries + 1):
                timeout = self._attempt_timeout(config)
                if timeout is None:
                    deadline_hit = remaining_time()
                    break
                call_started = self._clock.monotonic()
                outcome = yield _Call(config.name, timeout)
                calls += 1
                duration = self._clock.monotonic() - call_started
                latency_ms = duration * 1000
                if isinstance(outcome, UnifiedResponse):
                    yield from breaker.record_success_flow(permit, duration)
                    notify(self._listeners, ProviderCallSucceeded(config.name, latency_ms, calls))
                    outcome.metadata = outcome.metadata.model_copy(
                        update={
                            "provider": config.name,
                            "attempts": calls,
                            "latency_ms": round((self._clock.monotonic() - started) * 1000, 3),
                            "failovers": gave_up_on,
                            "worker_id": self.worker_id,
                            "store_failures": store_failures.count,
                        }
                    )
                    return outcome
                assert isinstance(outcome, ProviderError | SecretResolutionError)
                last = outcome
                if isinstance(outcome, SecretResolutionError):
                    break  # our configuration, not the provider's health
                counted = yield from breaker.record_failure_flow(permit, outcome, duration)
                notify(
                    self._listeners,
                    ProviderCallFailed(
                        config.name,
                        type(outcome).__name__,
                        outcome.status_code,
                        latency_ms,
                        counted,
                    ),
                )
                if isinstance(outcome, InvalidRequestError):
                    raise outcome
                if (
                    isinstance(outcome, RateLimited)
                    and outcome.retry_after is not None
                    and retry.respect_retry_after
                ):
                    yield from breaker.trip_flow(outcome.retry_after)
                    break
                if permit.probe or not outcome.retryable or attempt == max_retries:
                    break
                delay = full_jitter_backoff(
                    attempt,
                    initial=retry.initial_backoff,
                    maximum=retry.max_backoff,
                    rand=self._rand,
                )
                left = remaining_time()
                if left is not None and left - delay < config.shortest_attempt:
                    break
                yield _Sleep(delay)
                # The fleet may have opened it meanwhile.
                next_permit = yield from breaker.allow_flow()
                if next_permit is None:
                    break
                permit = next_permit
            if last is None:
                attempts.append(
                    AttemptRecord(
                        config.name,
                        DeadlineExceededError(
                            remaining=max(0.0, deadline_hit or 0.0),
                            needed=config.shortest_attempt,
                        ),
                        skipped=True,
                    )
                )
            else:
                attempts.append(AttemptRecord(config.name, last))
            gave_up_on.append(config.name)
            notify(
                self._listeners,
                FailedOver(config.name, type(last).__name__ if last else "deadline"),
            )
        if calls == 0 and deadline_hit is not None:
            raise DeadlineExceededError(
                remaining=max(0.0, deadline_hit),
                needed=min(p.shortest_attempt for p in self.config.providers),
            )
        raise AllProvidersFailedError(attempts, retry_after=self._earliest_recovery(attempts))

    def _earliest_recovery(self, attempts: list[AttemptRecord]) -> float | None:
        """Seconds until the first open breaker may be probed, when all were skipped."""
        if not attempts or not all(isinstance(a.error, CircuitOpenError) for a in attempts):
            return None
        waits = [w for b in self._breakers.values() if (w := b.seconds_until_probe()) is not None]
        return min(waits) if waits else None
