"""Build a ``FlexiAIConfig`` from ``FLEXIAI_*`` environment variables (and optionally a file).

Variables map one to one onto model fields, and are validated by the same pydantic models,
so the rules are never written twice:

* ``FLEXIAI_SYNC_<FIELD>`` for every ``SyncConfig`` field (``FLEXIAI_SYNC_REDIS_HOST`` ...);
* ``FLEXIAI_CIRCUIT_BREAKER_<FIELD>`` and ``FLEXIAI_RETRY_<FIELD>``;
* ``FLEXIAI_PROVIDER_<N>_<FIELD>`` with FIELD one of NAME, KIND, API_KEY, MODEL, PRIORITY,
  BASE_URL, TIMEOUT, MAX_RETRIES, MIN_TIMEOUT, OPTIONS (JSON);
* ``FLEXIAI_CONFIG_FILE``: a JSON (or, with PyYAML, YAML) file that variables override.

Lists take comma-separated values. An empty value counts as unset (``sam local invoke``
passes a variable whose template value is ``AWS::NoValue`` or unresolvable as ""). An unknown
``FLEXIAI_`` variable is an error, so a typo never silently falls back to a default. Every
error names the variable.

pydantic-settings would do this too, but its import costs about 60-110 ms on a cold start,
which alone would break the cold-start budget; mapping names onto the models is shorter.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flexiai._constants import (
    CONFIG_FILE_VARIABLE,
    SAFETY_MARGIN_VARIABLE,
    SECRETS_MAX_AGE_VARIABLE,
)
from flexiai._suggest import did_you_mean
from flexiai.exceptions import ConfigError
from flexiai.models import (
    CircuitBreakerConfig,
    FlexiAIConfig,
    RetryConfig,
    SyncConfig,
    describe_error,
)

__all__ = ["ENVIRONMENT_VARIABLES", "PROVIDER_FIELDS", "PROVIDER_VARIABLE", "load_config"]

PREFIX = "FLEXIAI_"
_SECTIONS: dict[str, tuple[str, type[Any]]] = {
    "SYNC_": ("sync", SyncConfig),
    "CIRCUIT_BREAKER_": ("circuit_breaker", CircuitBreakerConfig),
    "RETRY_": ("retry", RetryConfig),
}
_NOT_FROM_ENV = {"failure_on"}
_LIST_FIELDS = {"redis_sentinels"}
#: What follows FLEXIAI_PROVIDER_<n>_ in a provider variable.
PROVIDER_FIELDS = (
    "NAME",
    "KIND",
    "API_KEY",
    "MODEL",
    "PRIORITY",
    "BASE_URL",
    "TIMEOUT",
    "MAX_RETRIES",
    "MIN_TIMEOUT",
    "OPTIONS",
)
PROVIDER_VARIABLE = re.compile(rf"^FLEXIAI_PROVIDER_(\d+)_({'|'.join(PROVIDER_FIELDS)})$")

#: Variables read by other parts of flexiai (the Lambda kit), accepted here as known.
_OTHER_VARIABLES = {CONFIG_FILE_VARIABLE, SAFETY_MARGIN_VARIABLE, SECRETS_MAX_AGE_VARIABLE}


def _section_variables() -> dict[str, tuple[str, str]]:
    """``FLEXIAI_SYNC_REDIS_HOST`` -> ("sync", "redis_host"), for every settable field."""
    names: dict[str, tuple[str, str]] = {}
    for infix, (section, model) in _SECTIONS.items():
        for field in model.model_fields:
            if field not in _NOT_FROM_ENV:
                names[f"{PREFIX}{infix}{field.upper()}"] = (section, field)
    return names


_SECTION_VARIABLES = _section_variables()

#: Every fixed variable name flexiai reads (provider variables match ``PROVIDER_VARIABLE``).
ENVIRONMENT_VARIABLES = frozenset(_SECTION_VARIABLES) | frozenset(_OTHER_VARIABLES)


def load_config(
    environ: Mapping[str, str] | None = None, *, file: str | os.PathLike[str] | None = None
) -> FlexiAIConfig:
    """The configuration described by the environment (``os.environ`` by default)."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    origin: dict[tuple[Any, ...], str] = {}  # pydantic error location -> variable name

    path = file or env.get(f"{PREFIX}CONFIG_FILE")
    if path:
        data = _read_file(Path(path))

    providers: dict[int, dict[str, Any]] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(PREFIX):
            continue
        if raw == "" and (name in ENVIRONMENT_VARIABLES or PROVIDER_VARIABLE.match(name)):
            continue  # empty is unset: sam local invoke passes AWS::NoValue this way
        if name in _SECTION_VARIABLES:
            section, field = _SECTION_VARIABLES[name]
            value: Any = raw
            if field in _LIST_FIELDS:
                value = [item.strip() for item in raw.split(",") if item.strip()]
            data.setdefault(section, {})[field] = value
            origin[(section, field)] = name
            continue
        match = PROVIDER_VARIABLE.match(name)
        if match:
            index, field = int(match.group(1)), match.group(2).lower()
            value = raw
            if field == "options":
                try:
                    value = json.loads(raw)
                except ValueError as exc:
                    raise ConfigError(f"{name}: not valid JSON ({exc})") from None
                except RecursionError:  # json nests by recursion: a deep document overflows
                    raise ConfigError(f"{name}: JSON nested too deeply") from None
            providers.setdefault(index, {})[field] = value
            origin[("providers", index, field)] = name
            continue
        if name in _OTHER_VARIABLES:
            continue
        raise ConfigError(f"{name}: unknown flexiai environment variable{_suggest(name)}")

    ordered = sorted(providers)
    if providers:
        data["providers"] = [providers[i] for i in ordered]
        # pydantic reports list positions; map them back to the N in the variable names
        origin = {
            (("providers", ordered.index(k[1]), *k[2:]) if k[0] == "providers" else k): v
            for k, v in origin.items()
        }
    elif not data.get("providers"):
        raise ConfigError(
            "no providers configured: set FLEXIAI_PROVIDER_1_NAME, FLEXIAI_PROVIDER_1_MODEL "
            "and FLEXIAI_PROVIDER_1_API_KEY (or FLEXIAI_CONFIG_FILE)"
        )

    try:
        return FlexiAIConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin, ordered)) from None
    except RecursionError:  # a deeply nested FLEXIAI_CONFIG_FILE or OPTIONS value
        raise ConfigError("invalid flexiai configuration: a value is nested too deeply") from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"FLEXIAI_CONFIG_FILE: cannot read {str(path)!r} ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"FLEXIAI_CONFIG_FILE: {str(path)!r} is not UTF-8 text") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                "FLEXIAI_CONFIG_FILE: YAML needs PyYAML (pip install pyyaml)"
            ) from None
        parse: Any = yaml.safe_load
    else:
        parse = json.loads
    try:
        loaded = parse(text)
    except Exception as exc:  # json.JSONDecodeError or yaml.YAMLError
        raise ConfigError(
            f"FLEXIAI_CONFIG_FILE: {str(path)!r} is not valid ({type(exc).__name__})"
        ) from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"FLEXIAI_CONFIG_FILE: {str(path)!r} must hold a mapping")
    return loaded


def _describe(
    exc: ValidationError, origin: dict[tuple[Any, ...], str], provider_numbers: list[int]
) -> str:
    lines = []
    for error in exc.errors(include_url=False):  # the input is read, never printed
        loc = tuple(error["loc"])
        name = None
        for length in range(len(loc), 0, -1):
            name = origin.get(loc[:length])
            if name:
                break
        if name is None and len(loc) >= 2 and loc[0] == "providers" and provider_numbers:
            # a required field nobody set, or a rule across fields: name the variables
            number = provider_numbers[int(loc[1])]
            field = f"_{str(loc[2]).upper()}" if len(loc) >= 3 else "_*"
            name = f"{PREFIX}PROVIDER_{number}{field}"
        where = name or ".".join(str(part) for part in loc) or "config"
        lines.append(f"{where}: {describe_error(FlexiAIConfig, error)}")
    return "invalid flexiai configuration: " + "; ".join(lines)


_NUMBERED = re.compile(r"^FLEXIAI_PROVIDER_(\d+)_")


def _suggest(name: str) -> str:
    """The known variable ``name`` was probably meant to be; a provider variable is matched
    against the fields of its own N (``FLEXIAI_PROVIDER_1_APIKEY`` -> ``..._1_API_KEY``)."""
    numbered = _NUMBERED.match(name)
    if numbered:
        stem = numbered.group(0)
        return did_you_mean(name, (stem + field for field in PROVIDER_FIELDS))
    return did_you_mean(name, ENVIRONMENT_VARIABLES)
