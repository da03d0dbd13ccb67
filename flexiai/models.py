"""Configuration and response models: the public shapes of the deployment guide.

Every model forbids unknown keys, so a typo fails at construction with the key's name
instead of being ignored. Secrets are ``SecretStr`` and print as ``'**********'``.
"""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate every
# field's annotation string to build the models, ~1.5 ms of each Lambda cold start.
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from flexiai._suggest import did_you_mean
from flexiai.exceptions import ConfigError

__all__ = [
    "PROVIDER_KINDS",
    "ChatMessage",
    "CircuitBreakerConfig",
    "ConfigValidationError",
    "FailurePolicy",
    "FlexiAIConfig",
    "ProviderConfig",
    "ResponseMeta",
    "RetryConfig",
    "SyncConfig",
    "UnifiedResponse",
    "Usage",
    "infer_kind",
]

ProviderKind = Literal["openai", "anthropic", "gemini", "bedrock"]
PROVIDER_KINDS: tuple[ProviderKind, ...] = ("openai", "anthropic", "gemini", "bedrock")

#: Decides whether an exception counts toward a breaker: exception classes or a predicate.
FailurePolicy = tuple[type[BaseException], ...] | Callable[[BaseException], bool]

#: A duration: positive, finite and at most a year (an "infinite" timeout is a mistake that
#: should fail here, not as an OverflowError on the request path).
PositiveSeconds = Annotated[float, Field(gt=0, le=365 * 86400, allow_inf_nan=False)]
#: A share of calls, in percent.
Percent = Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]


#: Added to an unknown or unnamed provider kind: the adapter most servers speak.
OPENAI_COMPATIBLE_HINT = (
    "for an OpenAI-compatible server (vLLM, Ollama, LM Studio, Groq, Mistral, OpenRouter, ...) "
    'use kind="openai" with base_url set to its API root (e.g. http://localhost:8000/v1)'
)


class ConfigValidationError(ValidationError, ConfigError):
    """A configuration model rejected its input, in one line per problem: the field's path,
    what is wrong, and for a misspelt name what it probably meant. It is still a pydantic
    ``ValidationError`` (``errors()`` works) and a flexiai ``ConfigError``, so either catch
    works. The message never shows the input, which may be a secret."""

    message: str

    def __str__(self) -> str:
        return self.message

    @classmethod
    def from_error(cls, model: type[BaseModel], exc: ValidationError) -> "ConfigValidationError":
        errors = exc.errors(include_url=False)
        short = cls.from_exception_data(exc.title, errors)  # type: ignore[arg-type]
        problems = []
        for error in errors:
            where = ".".join(map(_loc_part, error["loc"]))
            text = describe_error(model, error)
            problems.append(f"{where}: {text}" if where else text)
        short.message = f"invalid {exc.title}: " + "; ".join(problems)
        return short


def _loc_part(part: int | str) -> str:
    """A location part as a message shows it: quoted unless it is a plain name, so a key
    holding a newline cannot break the one-line message, and cut short if long."""
    if isinstance(part, int) or part.isidentifier():
        return str(part)[:80]
    return repr(part[:80])


def describe_error(model: type[BaseModel], error: ErrorDetails) -> str:
    """One pydantic error as flexiai words it, without its location: "unknown field" with a
    suggestion, a literal with the closest allowed value, a kind with the OpenAI-compatible
    hint. Shared by the models and ``load_config`` (which names variables instead)."""
    loc = tuple(error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] in ("extra_forbidden", "no_such_attribute") and loc:
        owner = _model_at(model, loc[:-1])
        fields = [] if owner is None else list(owner.model_fields)
        return "unknown field" + did_you_mean(str(loc[-1]), fields)
    if error["type"] == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        given = error.get("input")
        hint = did_you_mean(given, allowed) if isinstance(given, str) else ""
        if not hint and loc and loc[-1] == "kind":
            hint = f"; {OPENAI_COMPATIBLE_HINT}"
        return message + hint
    return message


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model that holds the field at ``loc`` (list positions skipped), if any."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = None if current is None else current.model_fields.get(part)
        if field is None:
            return None
        current = _model_in(field.annotation)
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_model_in, get_args(annotation))), None)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def __init__(self, /, **data: Any) -> None:
        # A typo in code gets the same short, suggesting error as one in the environment.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigValidationError.from_error(type(self), exc) from None

    if not TYPE_CHECKING:  # declared, it would let mypy accept any attribute assignment

        def __setattr__(self, name: str, value: Any) -> None:
            # ``config.enabeld = True`` is the same typo as ``SyncConfig(enabeld=True)``.
            try:
                super().__setattr__(name, value)
            except ValidationError as exc:
                raise ConfigValidationError.from_error(type(self), exc) from None


def infer_kind(name: str) -> ProviderKind | None:
    """The API a provider speaks, from its name: ``openai``, or ``openai-backup``."""
    return next((k for k in PROVIDER_KINDS if name == k or name.startswith(k + "-")), None)


class ProviderConfig(_Model):
    """One LLM endpoint. ``kind`` says which API it speaks; it defaults from ``name``."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: ProviderKind | None = None
    api_key: SecretStr | None = None
    model: str = Field(min_length=1)
    priority: int | None = Field(default=None, ge=0)
    base_url: str | None = None
    timeout: PositiveSeconds = 30.0
    max_retries: int | None = Field(default=None, ge=0, le=10)
    min_timeout: PositiveSeconds = Field(
        default=1.0,
        description="The shortest attempt worth making: with less time left before a deadline "
        "the provider is skipped (capped at timeout).",
    )
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _infer_kind(self) -> "ProviderConfig":
        if self.kind is None:
            inferred = infer_kind(self.name)
            if inferred is None:
                raise ValueError(
                    f"kind is required for provider {self.name!r}: "
                    f"one of {', '.join(PROVIDER_KINDS)}"
                    " (it is inferred only from names such as 'openai' or 'openai-backup'); "
                    + OPENAI_COMPATIBLE_HINT
                )
            object.__setattr__(self, "kind", inferred)
        if (
            self.kind in ("openai", "anthropic", "gemini")
            and self.api_key is None
            and self.base_url is None
        ):
            raise ValueError(
                f"api_key is required for provider {self.name!r} unless base_url points at "
                "a server that needs none"
            )
        return self

    @property
    def shortest_attempt(self) -> float:
        """The least time worth an attempt: ``min_timeout``, capped at ``timeout``."""
        return min(self.min_timeout, self.timeout)

    @property
    def provider_kind(self) -> ProviderKind:
        assert self.kind is not None  # set by _infer_kind
        return self.kind


class CircuitBreakerConfig(_Model):
    """When a provider's breaker opens, and how it recovers. Counted across the whole fleet
    when sync is on, in this process otherwise.

    A CLOSED breaker opens when either holds:

    * **failure rate**: over the last ``failure_window`` seconds (a sliding window), at least
      ``failure_rate_threshold`` percent of calls failed, once ``minimum_calls`` calls were
      counted in that window;
    * **a run of failures**: ``failure_threshold`` failures in a row, with no success
      anywhere in between (the fast path for a provider that is down);
    * **slow calls** (off unless ``slow_call_duration`` is set): at least
      ``slow_call_rate_threshold`` percent of the window's calls took ``slow_call_duration``
      seconds or more, once ``minimum_calls`` were counted.

    After ``recovery_timeout`` seconds it admits at most ``half_open_max_calls`` probes in
    flight; ``success_threshold`` successful probes close it (the window starts empty), one
    failed probe opens it again. A probe that never reports back releases its lease after
    ``probe_lease_ttl`` seconds.

    ``failure_on`` overrides which exceptions count: exception classes or a predicate. By
    default every ``ProviderError`` whose ``counts_toward_breaker`` is true counts.
    """

    failure_threshold: int = Field(
        default=5,
        ge=1,
        le=10_000,
        description="Consecutive failures (fleet-wide, no success in between) that open it.",
    )
    failure_rate_threshold: Percent = Field(
        default=50.0, description="Failure rate in percent over failure_window that opens it."
    )
    minimum_calls: int = Field(
        default=20,
        ge=1,
        le=1_000_000,
        description="Calls the window must hold before a rate can open the breaker.",
    )
    failure_window: PositiveSeconds = Field(
        default=60.0, description="The sliding window, in seconds, that rates are taken over."
    )
    slow_call_duration: PositiveSeconds | None = Field(
        default=None, description="Calls at least this slow count as slow; None: rule off."
    )
    slow_call_rate_threshold: Percent = Field(
        default=50.0, description="Slow-call rate in percent that opens it (when enabled)."
    )
    recovery_timeout: PositiveSeconds = 60.0
    half_open_max_calls: int = Field(default=1, ge=1, le=1000)
    success_threshold: int = Field(default=1, ge=1, le=1000)
    probe_lease_ttl: PositiveSeconds = 30.0
    max_open_for: PositiveSeconds = Field(
        default=600.0, description="Upper bound on how long a 429 Retry-After may open a breaker."
    )
    failure_on: FailurePolicy | None = Field(default=None, exclude=True)

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    @field_validator("failure_on")
    @classmethod
    def _check_failure_on(cls, value: FailurePolicy | None) -> FailurePolicy | None:
        if value is None or (callable(value) and not isinstance(value, tuple)):
            return value
        if (
            isinstance(value, tuple)
            and value
            and all(isinstance(t, type) and issubclass(t, BaseException) for t in value)
        ):
            return value
        raise ValueError("failure_on must be a non-empty tuple of exception classes or a callable")


class RetryConfig(_Model):
    """Retries of one provider before failing over: full-jitter exponential backoff."""

    max_retries: int = Field(default=2, ge=0, le=10)
    initial_backoff: PositiveSeconds = 0.25
    max_backoff: PositiveSeconds = 8.0
    respect_retry_after: bool = Field(
        default=True,
        description="A 429 with Retry-After opens the provider's breaker (fleet-wide) for that "
        "long and fails over at once, so nobody calls it again before it asked.",
    )


#: redis-py URL options that would change how the server's certificate is checked.
_TLS_URL_OPTIONS = frozenset({"ssl_cert_reqs", "ssl_check_hostname", "ssl_ca_certs", "ssl_ca_path"})


class SyncConfig(_Model):
    """Sharing breaker state across workers. Fields and defaults follow the deployment guide.

    ``mode``: ``pubsub`` keeps a background subscriber (long-lived workers); ``snapshot`` reads
    every provider's state in one round trip when a request starts and reuses it for up to
    ``snapshot_max_age`` seconds (Lambda); ``auto`` picks snapshot when
    ``AWS_LAMBDA_FUNCTION_NAME`` is set, else pubsub.
    """

    enabled: bool = False
    backend: Literal["redis", "memory"] = "redis"
    mode: Literal["auto", "pubsub", "snapshot"] = "auto"

    redis_url: SecretStr | None = None
    redis_host: str = "localhost"
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_db: int = Field(default=0, ge=0)
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_ssl: bool = False
    redis_ssl_ca_certs: str | None = None
    redis_ssl_insecure: bool = Field(
        default=False,
        description="Accept any server certificate (no verification). Logged once as a "
        "warning; nothing in redis_url can do this.",
    )
    redis_use_functions: bool = Field(
        default=False,
        description="Run the breaker's Lua as a Redis Function (FCALL; Redis 7, Valkey, "
        "ElastiCache 7) instead of EVALSHA, so the workers' ACL can deny EVAL, EVALSHA and "
        "SCRIPT. Load it once with `flexiai functions load`.",
    )
    redis_socket_timeout: PositiveSeconds = 0.25
    redis_socket_connect_timeout: PositiveSeconds = 0.5
    redis_cluster: bool = False
    redis_sentinels: list[str] = Field(default_factory=list)
    redis_sentinel_service: str | None = None
    redis_sentinel_password: SecretStr | None = None
    redis_iam_auth: bool = False
    redis_iam_cache_name: str | None = None
    redis_iam_region: str | None = None
    redis_iam_serverless: bool = True

    worker_id: str | None = Field(default=None, min_length=1, max_length=200)
    key_prefix: str = Field(default="flexiai", min_length=1, max_length=100)
    channel: str = Field(
        default="",
        max_length=200,
        description="The pub/sub channel; empty: '<key_prefix>:events' (flexiai:events by "
        "default), so apps with different prefixes on one Redis never hear each other.",
    )
    state_ttl: int = Field(default=3600, ge=60)
    snapshot_max_age: float = Field(default=1.0, ge=0, le=60, allow_inf_nan=False)
    resync_interval: PositiveSeconds = Field(
        default=30.0,
        le=3600,
        description="Pub/sub workers re-read every breaker at least this often, so no view "
        "outlives the store's (a FLUSHALL, a failover that lost writes, a restore).",
    )
    flush_interval: PositiveSeconds = Field(
        default=1.0,
        le=60,
        description="Pub/sub workers send their batched call counts at most this often.",
    )
    reconnect_backoff: PositiveSeconds = Field(
        default=5.0,
        description="After a Redis failure, use local breakers this long before retrying.",
    )

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_are_host_port(cls, value: list[str]) -> list[str]:
        for item in value:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"sentinel {item!r} must be host:port")
        return value

    @field_validator("redis_url")
    @classmethod
    def _url_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        url = value.get_secret_value()
        if not url.startswith(("redis://", "rediss://", "unix://", "valkey://", "valkeys://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        from urllib.parse import parse_qsl, urlsplit

        for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True):
            if name.lower() in _TLS_URL_OPTIONS:
                raise ValueError(
                    f"redis_url may not set {name}: TLS verification is always on; "
                    "redis_ssl_insecure=True (FLEXIAI_SYNC_REDIS_SSL_INSECURE) turns it off, "
                    "knowingly, and redis_ssl_ca_certs names the CA"
                )
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> "SyncConfig":
        if not self.channel:
            object.__setattr__(self, "channel", f"{self.key_prefix}:events")
        if self.redis_sentinels and not self.redis_sentinel_service:
            raise ValueError("redis_sentinel_service is required when redis_sentinels is set")
        if self.redis_cluster and self.redis_sentinels:
            raise ValueError("redis_cluster and redis_sentinels cannot be combined")
        if self.redis_iam_auth:
            if not self.redis_iam_cache_name or not self.redis_username:
                raise ValueError(
                    "redis_iam_auth needs redis_iam_cache_name and redis_username "
                    "(the ElastiCache user id)"
                )
            if self.redis_password is not None:
                raise ValueError("redis_iam_auth and redis_password cannot be combined")
        return self

    def resolved_mode(self, environ: dict[str, str] | None = None) -> Literal["pubsub", "snapshot"]:
        if self.mode != "auto":
            return self.mode
        import os

        env = os.environ if environ is None else environ
        return "snapshot" if env.get("AWS_LAMBDA_FUNCTION_NAME") else "pubsub"


class FlexiAIConfig(_Model):
    """The whole client configuration. Providers are kept sorted by priority."""

    providers: list[ProviderConfig] = Field(min_length=1)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)

    @model_validator(mode="after")
    def _unique_and_sorted(self) -> "FlexiAIConfig":
        names = [p.name for p in self.providers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"provider names must be unique; repeated: {', '.join(dupes)}")
        prios = [p.priority for p in self.providers if p.priority is not None]
        dup_prios = sorted({p for p in prios if prios.count(p) > 1})
        if dup_prios:
            raise ValueError(
                f"provider priorities must be unique; repeated: {', '.join(map(str, dup_prios))}"
            )
        # Providers without a priority keep their list order, after every explicit priority.
        ordered = sorted(
            enumerate(self.providers),
            key=lambda ip: (ip[1].priority is None, ip[1].priority or 0, ip[0]),
        )
        object.__setattr__(self, "providers", [p for _, p in ordered])
        return self


class ChatMessage(BaseModel):
    """A message of a request: its errors are the caller's input, not configuration."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    role: Literal["system", "user", "assistant"]
    content: str


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ResponseMeta(BaseModel):
    """How an answer was obtained. Read it as attributes (``meta.attempts``) or, as the
    deployment guide does, by key (``meta["provider"]``, ``meta.get("provider")``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str = ""
    #: Provider calls made for this request, retries included.
    attempts: int = 0
    #: The whole request, failovers and backoff included.
    latency_ms: float = 0.0
    #: The answering provider's own call.
    provider_latency_ms: float | None = None
    #: Providers given up on (failed or skipped) before the one that answered.
    failovers: list[str] = Field(default_factory=list)
    worker_id: str = ""
    #: Shared breaker-store operations that failed or timed out during this request, each
    #: costing at most one ``redis_socket_timeout``; after the first, the request uses
    #: local breakers, so this is 0 or 1.
    store_failures: int = 0

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in type(self).model_fields else default


class UnifiedResponse(BaseModel):
    """One answer, whichever provider gave it; ``metadata`` says how it was obtained."""

    content: str
    model: str
    provider: str
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str | None = None
    metadata: ResponseMeta = Field(default_factory=ResponseMeta)
