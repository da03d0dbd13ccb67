"""``flexiai_handler``: a Powertools middleware that gives a Lambda handler a FlexiAI client.

Stack it innermost, after Powertools' own decorators (their documented order)::

    from aws_lambda_powertools import Logger, Metrics, Tracer
    from flexiai.aws import current_client, flexiai_handler

    tracer, logger, metrics = Tracer(auto_patch=False), Logger(), Metrics()

    @tracer.capture_lambda_handler          # outermost
    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
    @metrics.log_metrics(capture_cold_start_metric=True)   # the ColdStart metric
    @flexiai_handler                        # innermost; or @flexiai_handler(safety_margin_ms=500)
    def handler(event, context):
        return current_client().generate(event["prompt"]).content

What it does for each invocation:

* **one client per execution environment**: the client is built on the first invocation
  (never at import, so an init phase opens no connection) from ``load_config()`` (the
  ``FLEXIAI_*`` environment), or from the ``config=`` or ``client_factory=`` option, and reused
  by every warm invocation. It is cached in this module, keyed by the decorated handler: that
  cache *is* the execution environment's state, which Lambda keeps between invocations.
  ``close_clients()`` closes and forgets them (tests, or a SIGTERM hook).
* ``client.refresh_breakers()`` first: one round trip reads every provider's fleet-wide breaker
  state (snapshot mode, the default on Lambda), so the invocation starts from the fleet's view.
* the handler reaches the client with ``flexiai.aws.current_client()`` (typed ``FlexiAI``).
* every flexiai call inside the handler is limited by the invocation's deadline:
  ``context.get_remaining_time_in_millis()`` minus ``safety_margin_ms`` (option, else
  ``FLEXIAI_LAMBDA_SAFETY_MARGIN_MS``, else 1000). Attempts are cut to fit and providers that
  cannot answer in time are skipped, so the handler can still return a clean error.
* breaker transitions, failovers and provider failures are logged as structured records
  through a Powertools ``Logger`` (keys ``flexiai_event``, ``provider``, ``old_state``,
  ``new_state``, ``remote``, ``worker_id``, ``request_id``...).
* EMF metrics in namespace ``POWERTOOLS_METRICS_NAMESPACE`` (default ``FlexiAI``), all with a
  ``service`` dimension (``POWERTOOLS_SERVICE_NAME``, default ``flexiai``):

  ===================  ============  ==========================================================
  ProviderLatency      Milliseconds  every provider call; dimensions service, provider
  ProviderFailure      Count         every failed call; service, provider
  Failover             Count         a request gave up on a provider; service, provider
  CircuitOpened        Count         a breaker opened *here* (not a remote opening seen here),
                                     emitted twice: {service, provider} and {service} alone,
                                     the series one alarm watches for every provider
  ===================  ============  ==========================================================

  No ``ColdStart``: Powertools' ``Metrics`` emits it (``capture_cold_start_metric=True``,
  dimensions ``function_name`` and ``service``). A second one here, with other dimensions,
  would be a second CloudWatch series counting the same thing.

  They are kept apart from the application's ``Metrics`` (whose instances share one global
  set) and flushed at the end of every invocation, with or without ``@metrics.log_metrics``.
* X-Ray: a ``## flexiai`` subsegment annotated with ``flexiai_provider`` (who answered) and
  ``flexiai_failovers``, when your function uses Powertools' ``Tracer`` (the X-Ray SDK is
  already loaded) or ``trace=True``; ``trace=False`` never traces. The default never imports
  the X-Ray SDK itself: that import alone costs about 300 ms of cold start. Tracer is a
  shared-state object in Powertools, so the middleware's ``Tracer()`` follows yours (and
  disables itself off Lambda).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)
from aws_lambda_powertools.middleware_factory import lambda_handler_decorator

from flexiai._constants import SAFETY_MARGIN_VARIABLE as _SAFETY_MARGIN_VARIABLE
from flexiai._deadline import deadline
from flexiai.aws._invocation import use_client
from flexiai.circuit_breaker import CircuitState
from flexiai.events import (
    BreakerChanged,
    ClientEvent,
    FailedOver,
    ProviderCallFailed,
    ProviderCallSucceeded,
)
from flexiai.exceptions import ConfigError

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

    from flexiai.client import FlexiAI
    from flexiai.models import FlexiAIConfig

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_SAFETY_MARGIN_MS",
    "DEFAULT_SERVICE",
    "SAFETY_MARGIN_VARIABLE",
    "close_clients",
    "flexiai_handler",
]

SAFETY_MARGIN_VARIABLE = _SAFETY_MARGIN_VARIABLE
DEFAULT_SAFETY_MARGIN_MS = 1000.0
DEFAULT_NAMESPACE = "FlexiAI"
DEFAULT_SERVICE = "flexiai"

_log = logging.getLogger("flexiai.aws.middleware")

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])
ClientFactory = Callable[[], "FlexiAI"]


# -- metrics and logs ------------------------------------------------------------------------


class _Telemetry:
    """The client listener: turns flexiai events into log records, EMF metrics and trace
    annotations. One per execution environment; ``begin``/``end`` bracket an invocation."""

    def __init__(self, *, logger: Logger, namespace: str, service: str, worker_id: str) -> None:
        self.logger = logger
        self.namespace = namespace
        self.service = service
        self.worker_id = worker_id
        self._lock = threading.Lock()
        self._emitters: dict[str | None, AmazonCloudWatchEMFProvider] = {}
        self.request_id: str | None = None
        self.answered_by: str | None = None
        self.failovers = 0

    def begin(self, request_id: str | None) -> None:
        self.request_id = request_id
        self.answered_by = None
        self.failovers = 0

    def end(self) -> None:
        try:
            self.flush()
        except Exception:  # bookkeeping never replaces the handler's answer or error
            _log.exception("flexiai: could not flush metrics")
        self.request_id = None

    def __call__(self, event: ClientEvent) -> None:
        if isinstance(event, ProviderCallSucceeded):
            self.answered_by = event.provider
            self.metric("ProviderLatency", "Milliseconds", event.latency_ms, event.provider)
        elif isinstance(event, ProviderCallFailed):
            self.metric("ProviderLatency", "Milliseconds", event.latency_ms, event.provider)
            self.metric("ProviderFailure", "Count", 1, event.provider)
            self._log(
                logging.INFO,
                "flexiai provider call failed",
                "provider_failed",
                provider=event.provider,
                error_type=event.error_type,
                status_code=event.status_code,
                latency_ms=round(event.latency_ms, 3),
                counted=event.counted,
            )
        elif isinstance(event, FailedOver):
            self.failovers += 1
            self.metric("Failover", "Count", 1, event.provider)
            self._log(
                logging.WARNING,
                "flexiai failed over",
                "failover",
                provider=event.provider,
                reason=event.reason,
            )
        elif isinstance(event, BreakerChanged):
            opened = event.new is CircuitState.OPEN
            if opened and not event.remote:
                # Counted once per fleet-wide opening: by the worker whose failure opened it.
                self.metric("CircuitOpened", "Count", 1, event.provider)
                self.metric("CircuitOpened", "Count", 1, None)
            self._log(
                logging.WARNING if opened else logging.INFO,
                f"flexiai circuit breaker {event.old.value} -> {event.new.value}",
                "breaker_changed",
                provider=event.provider,
                old_state=event.old.value,
                new_state=event.new.value,
                remote=event.remote,
                worker_id=event.worker_id,
            )

    def _log(self, level: int, message: str, kind: str, **fields: Any) -> None:
        fields.setdefault("worker_id", self.worker_id)
        extra = {"flexiai_event": kind, **fields, "request_id": self.request_id}
        if level >= logging.WARNING:
            self.logger.warning(message, extra=extra)
        else:
            self.logger.info(message, extra=extra)

    def metric(self, name: str, unit: str, value: float, provider: str | None) -> None:
        with self._lock:
            emitter = self._emitters.get(provider)
            if emitter is None:
                emitter = AmazonCloudWatchEMFProvider(
                    namespace=self.namespace,
                    service=self.service,
                    default_dimensions={"provider": provider} if provider else {},
                )
                self._emitters[provider] = emitter
            emitter.add_metric(name=name, unit=unit, value=value)

    def flush(self) -> None:
        """Print one EMF document per dimension set that has metrics, then forget them."""
        with self._lock:
            for emitter in self._emitters.values():
                if emitter.metric_set:
                    emitter.flush_metrics()
                    emitter.clear_metrics()  # flush_metrics keeps them when metrics are disabled


# -- one client per execution environment ----------------------------------------------------


class _Environment:
    """What survives between invocations: the client, its listener and the tracer."""

    def __init__(
        self,
        client: FlexiAI,
        telemetry: _Telemetry,
        *,
        margin_seconds: float,
        tracer: Tracer | None,
    ) -> None:
        self.client = client
        self.telemetry = telemetry
        self.margin_seconds = margin_seconds
        self.tracer = tracer
        client.add_listener(telemetry)

    def invoke(self, handler: Callable[..., Any], event: Any, context: Any) -> Any:
        self.telemetry.begin(getattr(context, "aws_request_id", None))
        try:
            self.client.refresh_breakers()
            with use_client(self.client), self._deadline(context), self._traced():
                return handler(event, context)
        finally:
            self.telemetry.end()

    def _deadline(self, context: Any) -> AbstractContextManager[None]:
        remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
        if not callable(remaining_ms):
            return nullcontext()
        margin = self.margin_seconds
        return deadline(lambda: remaining_ms() / 1000.0 - margin)

    @contextmanager
    def _traced(self) -> Iterator[None]:
        tracer = self.tracer
        if tracer is None or tracer.disabled:
            yield
            return
        with tracer.provider.in_subsegment(name="## flexiai") as subsegment:
            try:
                yield
            finally:
                if self.telemetry.answered_by:
                    subsegment.put_annotation("flexiai_provider", self.telemetry.answered_by)
                failovers: Any = self.telemetry.failovers  # typed as numbers.Number upstream
                subsegment.put_annotation("flexiai_failovers", failovers)


_ENVIRONMENTS: dict[Callable[..., Any], _Environment] = {}
_ENVIRONMENTS_LOCK = threading.Lock()


def close_clients() -> None:
    """Close every client built by ``flexiai_handler`` and forget it: the next invocation
    builds a new one. For tests, and for shutdown hooks."""
    with _ENVIRONMENTS_LOCK:
        environments = list(_ENVIRONMENTS.values())
        _ENVIRONMENTS.clear()
    for environment in environments:
        environment.client.close()


def safety_margin_seconds(option_ms: float | None, environ: dict[str, str] | None = None) -> float:
    """The margin kept before Lambda's deadline: the option, else the variable, else 1000 ms."""
    if option_ms is not None:
        value, origin = float(option_ms), "safety_margin_ms"
    else:
        env = os.environ if environ is None else environ
        raw = env.get(SAFETY_MARGIN_VARIABLE, "").strip()
        if not raw:
            return DEFAULT_SAFETY_MARGIN_MS / 1000.0
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        origin = SAFETY_MARGIN_VARIABLE
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{origin}: must be a number of milliseconds >= 0")
    return value / 1000.0


def _environment(handler: Callable[..., Any], options: dict[str, Any]) -> _Environment:
    environment = _ENVIRONMENTS.get(handler)
    if environment is not None:
        return environment
    with _ENVIRONMENTS_LOCK:
        environment = _ENVIRONMENTS.get(handler)
        if environment is None:
            environment = _build_environment(**options)
            _ENVIRONMENTS[handler] = environment
    return environment


def _build_environment(
    *,
    config: FlexiAIConfig | None,
    client_factory: ClientFactory | None,
    safety_margin_ms: float | None,
    logger: Logger | None,
    namespace: str | None,
    service: str | None,
    trace: bool | None,
) -> _Environment:
    margin = safety_margin_seconds(safety_margin_ms)
    if client_factory is not None:
        client = client_factory()
    else:
        from flexiai.client import FlexiAI

        client = FlexiAI(config)  # None: load_config() reads the FLEXIAI_* environment
    try:
        service = service or os.environ.get("POWERTOOLS_SERVICE_NAME") or DEFAULT_SERVICE
        telemetry = _Telemetry(
            logger=logger or Logger(service=service),
            namespace=namespace
            or os.environ.get("POWERTOOLS_METRICS_NAMESPACE")
            or DEFAULT_NAMESPACE,
            service=service,
            worker_id=client.worker_id,
        )
        tracer = _tracer(trace)
        return _Environment(client, telemetry, margin_seconds=margin, tracer=tracer)
    except BaseException:
        client.close()
        raise


def _tracer(trace: bool | None) -> Tracer | None:
    if trace is False or importlib.util.find_spec("aws_xray_sdk") is None:
        return None
    if trace is None and "aws_xray_sdk.core" not in sys.modules:
        return None  # the function does not trace: do not pay for the X-Ray SDK
    from aws_lambda_powertools import Tracer

    return Tracer()


# -- the decorator ---------------------------------------------------------------------------


@lambda_handler_decorator
def _flexiai_middleware(
    handler: Callable[..., Any], event: Any, context: Any, **options: Any
) -> Any:
    """The Powertools middleware; ``flexiai_handler`` is its typed front door."""
    return _environment(handler, options).invoke(handler, event, context)


@overload
def flexiai_handler(handler: HandlerT, /) -> HandlerT: ...


@overload
def flexiai_handler(
    *,
    config: FlexiAIConfig | None = None,
    client_factory: ClientFactory | None = None,
    safety_margin_ms: float | None = None,
    logger: Logger | None = None,
    namespace: str | None = None,
    service: str | None = None,
    trace: bool | None = None,
) -> Callable[[HandlerT], HandlerT]: ...


def flexiai_handler(
    handler: HandlerT | None = None,
    /,
    *,
    config: FlexiAIConfig | None = None,
    client_factory: ClientFactory | None = None,
    safety_margin_ms: float | None = None,
    logger: Logger | None = None,
    namespace: str | None = None,
    service: str | None = None,
    trace: bool | None = None,
) -> HandlerT | Callable[[HandlerT], HandlerT]:
    """Decorate a Lambda handler (see the module docstring). Options are keyword-only:

    ``config`` or ``client_factory`` (not both): how to build the client; by default
    ``FlexiAI()``, that is ``load_config()`` from the ``FLEXIAI_*`` environment.
    ``safety_margin_ms``: time kept before Lambda's deadline (default
    ``FLEXIAI_LAMBDA_SAFETY_MARGIN_MS`` or 1000). ``logger``: the Powertools ``Logger`` for
    flexiai's records (default ``Logger(service=service)``, which shares your logger's
    handler and injected Lambda context when the service names match). ``namespace`` and
    ``service``: of the EMF metrics. ``trace``: add the X-Ray subsegment (None: only when
    the function already uses Powertools' Tracer).
    """
    if config is not None and client_factory is not None:
        raise TypeError("flexiai_handler: pass config= or client_factory=, not both")
    if safety_margin_ms is not None:
        safety_margin_seconds(safety_margin_ms)  # fail at decoration, not on the first call
    options: dict[str, Any] = {
        "config": config,
        "client_factory": client_factory,
        "safety_margin_ms": safety_margin_ms,
        "logger": logger,
        "namespace": namespace,
        "service": service,
        "trace": trace,
    }

    def decorate(func: HandlerT) -> HandlerT:
        return cast(HandlerT, _flexiai_middleware(func, **options))

    return decorate if handler is None else decorate(handler)
