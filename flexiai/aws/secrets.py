"""API keys read from AWS Secrets Manager or SSM Parameter Store when a provider is first used.

A provider's ``api_key`` may be a reference instead of a value::

    secretsmanager:NAME_OR_ARN           the whole SecretString
    secretsmanager:NAME_OR_ARN#field     one field of a SecretString holding a JSON object
    ssm:/path/to/parameter               a (SecureString) parameter, decrypted
    ssm:/path/to/parameter#field         one field of a parameter holding a JSON object

``flexiai._secrets`` calls ``resolve_reference`` lazily, on the provider's first use (never
at import or while the client is built). Values are cached for ``FLEXIAI_SECRETS_MAX_AGE``
seconds (default 300), so a rotated key is picked up without a cold start.

With Powertools installed, its Parameters utility fetches the value (``get_secret``,
``get_parameter(decrypt=True)``, ``max_age=``). Without it, boto3 is called directly (2 s
connect and 5 s read timeouts, standard retries). Either way a small cache of this module
keeps values for the max age; ``clear_cache()`` clears it and Powertools' caches. The clients
use the function's region (``AWS_REGION``).

A lookup never outlives the deadline (``flexiai.deadline``, which the Lambda middleware sets
to the invocation's remaining time less its safety margin): past it, the caller gets a
``SecretResolutionError`` and the client moves on to the next provider (see
``_within_deadline`` for how).

Every failure raises ``SecretResolutionError(reference, provider, reason)``: the message
names the reference and the provider, never the value, and no exception that could hold the
value is chained to it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from flexiai._constants import SECRETS_MAX_AGE_VARIABLE
from flexiai._deadline import remaining_time
from flexiai.exceptions import SecretResolutionError

__all__ = [
    "DEFAULT_MAX_AGE",
    "MAX_AGE_VARIABLE",
    "SecretReference",
    "SecretResolver",
    "clear_cache",
    "parse_reference",
    "resolve_reference",
]

MAX_AGE_VARIABLE = SECRETS_MAX_AGE_VARIABLE
DEFAULT_MAX_AGE = 300.0

Service = Literal["secretsmanager", "ssm"]
#: Builds a boto3 client for a service name (tests inject a stubbed one).
ClientFactory = Callable[[str], Any]

_NOT_FOUND = {"ResourceNotFoundException", "ParameterNotFound", "ParameterVersionNotFound"}
_DENIED = {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"}
_NOT_DECRYPTED = {"DecryptionFailure", "InvalidKeyId", "KMSAccessDeniedException"}


@dataclass(frozen=True, slots=True)
class SecretReference:
    """A parsed reference: which service, which secret or parameter, which JSON field."""

    service: Service
    name: str
    field: str | None
    text: str


def parse_reference(reference: str, *, provider: str) -> SecretReference:
    """Split ``secretsmanager:NAME#field`` or ``ssm:/path#field``; malformed ones raise."""
    service: Service
    if reference.startswith("secretsmanager:"):
        service, rest = "secretsmanager", reference[len("secretsmanager:") :]
    elif reference.startswith("ssm:"):
        service, rest = "ssm", reference[len("ssm:") :]
    else:
        raise SecretResolutionError(
            reference, provider, "not a reference: expected secretsmanager:NAME or ssm:/path"
        )
    name, hash_sign, field = rest.partition("#")
    if not name.strip():
        raise SecretResolutionError(reference, provider, "the reference names no secret")
    if hash_sign and not field:
        raise SecretResolutionError(reference, provider, "empty field name after '#'")
    return SecretReference(service, name, field or None, reference)


def max_age_from_env(environ: dict[str, str] | None = None) -> float:
    """``FLEXIAI_SECRETS_MAX_AGE`` in seconds (default 300; 0 disables caching)."""
    env = os.environ if environ is None else environ
    raw = env.get(MAX_AGE_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MAX_AGE
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{MAX_AGE_VARIABLE} must be a number of seconds >= 0, got {raw!r}")
    return value


def powertools_available() -> bool:
    """True when Powertools' Parameters utility can be imported (checked without importing)."""
    return importlib.util.find_spec("aws_lambda_powertools") is not None


class SecretResolver:
    """Resolves references, with a cache. ``resolve_reference`` uses one shared instance.

    ``max_age``: seconds a value is reused (default: ``FLEXIAI_SECRETS_MAX_AGE``, read on each
    call). ``use_powertools``: None picks Powertools when installed; False always calls boto3
    (then ``client_factory`` and ``clock`` are used: they exist for tests).
    """

    def __init__(
        self,
        *,
        max_age: float | None = None,
        use_powertools: bool | None = None,
        client_factory: ClientFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_age is not None and (not math.isfinite(max_age) or max_age < 0):
            raise ValueError("max_age must be a number of seconds >= 0")
        self._max_age = max_age
        self._use_powertools = use_powertools
        self._client_factory = client_factory or _boto3_client
        self._clock = clock
        self._clients: dict[str, Any] = {}
        self._cache: dict[tuple[Service, str], tuple[str | bytes, float]] = {}
        self._lock = threading.Lock()

    def resolve(self, reference: str, *, provider: str) -> str:
        ref = parse_reference(reference, provider=provider)
        try:
            max_age = self._max_age if self._max_age is not None else max_age_from_env()
        except ValueError as exc:
            raise SecretResolutionError(reference, provider, str(exc)) from None
        use_powertools = self._use_powertools
        if use_powertools is None:
            use_powertools = powertools_available()
        key = (ref.service, ref.name)
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and max_age > 0 and now - hit[1] < max_age:
            return _extract(ref, hit[0], provider)
        fetch: Callable[[], str | bytes] = (
            functools.partial(_fetch_with_powertools, ref, max_age)
            if use_powertools
            else functools.partial(self._fetch_with_boto3, ref)
        )
        try:
            raw = _within_deadline(fetch)
        except SecretResolutionError:
            raise
        except _DeadlineReached as exc:
            raise SecretResolutionError(reference, provider, str(exc)) from None
        except Exception as exc:
            raise SecretResolutionError(reference, provider, _describe_failure(exc)) from (
                _aws_error(exc)
            )
        with self._lock:
            self._cache[key] = (raw, now)
        return _extract(ref, raw, provider)

    def clear(self) -> None:
        """Forget cached values (``clear_cache()`` also clears Powertools' caches)."""
        with self._lock:
            self._cache.clear()

    def _fetch_with_boto3(self, ref: SecretReference) -> str | bytes:
        client = self._client(ref.service)
        value: str | bytes
        if ref.service == "secretsmanager":
            answer = client.get_secret_value(SecretId=ref.name)
            value = answer["SecretString"] if "SecretString" in answer else answer["SecretBinary"]
        else:
            answer = client.get_parameter(Name=ref.name, WithDecryption=True)
            value = answer["Parameter"]["Value"]
        return value

    def _client(self, service: Service) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = self._clients[service] = self._client_factory(service)
            return client


class _DeadlineReached(Exception):
    """The lookup did not finish in the time left before the deadline."""


def _within_deadline(fetch: Callable[[], str | bytes]) -> str | bytes:
    """``fetch()``, given no more than the time left before ``flexiai.deadline`` (on Lambda:
    the invocation's remaining time less the safety margin) and none at all when none is left.

    Neither path can be bounded from inside: boto3 fixes its timeouts per client and retries
    on its own, and Powertools builds its clients itself. So, under a deadline, the lookup
    runs in a daemon thread and the caller stops waiting when the time is up. The thread
    finishes on its own (boto3's 2 s connect and 5 s read timeouts, Powertools' botocore
    defaults); whatever it fetched then fills Powertools' cache for a later call.
    """
    left = remaining_time()
    if left is None:
        return fetch()
    if left <= 0:
        raise _DeadlineReached("no time left before the deadline to look it up")
    box: list[str | bytes] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            box.append(fetch())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    worker = threading.Thread(target=run, name="flexiai-secret-lookup", daemon=True)
    worker.start()
    worker.join(left)
    if worker.is_alive():
        raise _DeadlineReached(
            f"the lookup did not finish in the {left:.2f} s left before the deadline"
        )
    if failure:
        raise failure[0]
    return box[0]


class _MissingDependency(RuntimeError):
    """boto3 is not installed: the message says what to install."""


def _boto3_client(service: str) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise _MissingDependency("boto3 is not installed (pip install 'flexiai[aws]')") from None
    config = Config(
        connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"}
    )
    return boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]


def _fetch_with_powertools(ref: SecretReference, max_age: float) -> str | bytes:
    try:
        from aws_lambda_powertools.utilities import parameters
    except ImportError as exc:  # Powertools' Parameters needs boto3
        raise _MissingDependency(
            f"Powertools Parameters cannot be imported ({exc.name} is missing)"
        ) from None

    seconds = math.ceil(max_age)
    fresh = seconds == 0  # also replaces a value cached earlier with a longer max age
    value: Any
    if ref.service == "secretsmanager":
        value = parameters.get_secret(ref.name, max_age=seconds, force_fetch=fresh)
    else:
        value = parameters.get_parameter(ref.name, decrypt=True, max_age=seconds, force_fetch=fresh)
    if not isinstance(value, str | bytes):
        raise TypeError(f"unexpected value type {type(value).__name__}")
    return value


def _extract(ref: SecretReference, raw: str | bytes, provider: str) -> str:
    """The key inside the fetched value. Errors describe the shape, never the content."""

    def fail(reason: str) -> SecretResolutionError:
        return SecretResolutionError(ref.text, provider, reason)

    what = "secret" if ref.service == "secretsmanager" else "parameter"
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise fail(f"the {what} is binary, not UTF-8 text") from None
    if ref.field is None:
        value = raw.strip()
        if not value:
            raise fail(f"the {what} is empty")
        return value
    try:
        document = json.loads(raw)
    except ValueError:
        raise fail(f"the {what} is not JSON, so it has no field {ref.field!r}") from None
    if not isinstance(document, dict):
        raise fail(f"the {what} is JSON but not an object, so it has no field {ref.field!r}")
    if ref.field not in document:
        raise fail(f"the {what} has no field {ref.field!r}")
    value = document[ref.field]
    if not isinstance(value, str) or not value.strip():
        raise fail(f"field {ref.field!r} of the {what} is not a non-empty string")
    return value.strip()


def _aws_error(exc: BaseException) -> BaseException | None:
    """The botocore error behind ``exc`` (Powertools wraps it in GetParameterError)."""
    seen: BaseException | None = exc
    for _ in range(3):
        if seen is None:
            return None
        module = type(seen).__module__
        if module.startswith("botocore"):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _describe_failure(exc: BaseException) -> str:
    aws = _aws_error(exc)
    if aws is None:
        if isinstance(exc, _MissingDependency):
            return str(exc)
        return f"lookup failed ({type(exc).__name__})"
    response = getattr(aws, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", "")) or "unknown error"
        if code in _NOT_FOUND:
            return f"not found ({code})"
        if code in _DENIED:
            return f"access denied ({code}): check the function's IAM policy"
        if code in _NOT_DECRYPTED:
            return f"cannot be decrypted ({code}): check the KMS key policy"
        return f"AWS error {code}"
    return f"AWS call failed ({type(aws).__name__})"


_default: SecretResolver | None = None
_default_lock = threading.Lock()


def _default_resolver() -> SecretResolver:
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = SecretResolver()
    return _default


def resolve_reference(reference: str, *, provider: str) -> str:
    """The API key a ``secretsmanager:``/``ssm:`` reference points at (cached, see above)."""
    return _default_resolver().resolve(reference, provider=provider)


def clear_cache() -> None:
    """Forget every value cached by ``resolve_reference``: this module's cache and, when
    installed, Powertools' Parameters caches."""
    _default_resolver().clear()
    if powertools_available():
        from aws_lambda_powertools.utilities import parameters

        parameters.clear_caches()  # type: ignore[no-untyped-call]
