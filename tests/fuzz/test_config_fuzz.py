"""Fuzzed configuration (issue 12, "Tests"): whatever a model or the ``FLEXIAI_*``
environment is given, nested, huge or garbage, the only errors are the documented ones: a
pydantic ``ValidationError`` from a model (flexiai's is also a ``ConfigError``), a
``ConfigError`` from ``load_config``. Never a ``RecursionError``, an ``OverflowError``, a
``TypeError`` or a hang (every example returns; hypothesis runs without deadlines)."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from flexiai.config import ENVIRONMENT_VARIABLES, PROVIDER_FIELDS, load_config
from flexiai.exceptions import ConfigError
from flexiai.models import (
    CircuitBreakerConfig,
    FlexiAIConfig,
    ProviderConfig,
    RetryConfig,
    SyncConfig,
)

MODELS: tuple[type[BaseModel], ...] = (
    ProviderConfig,
    SyncConfig,
    CircuitBreakerConfig,
    RetryConfig,
    FlexiAIConfig,
)
FUZZ = settings(
    max_examples=30,
    deadline=None,  # no timing: a busy machine is not a failure
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- values: what a file, a dict or a typo can hold ----------------------------------------------

EDGE_NUMBERS = st.sampled_from(
    [math.inf, -math.inf, math.nan, 1e308, -0.0, 10**400, -(10**400), 2**63, 2**64 + 1]
)
NUMBER_TEXT = st.sampled_from(
    ["inf", "-inf", "nan", "1e309", "-1e309", "9" * 5000, "0x10", "1_000", " 1 ", "true", "\u0661"]
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    EDGE_NUMBERS,
    NUMBER_TEXT,
    st.text(max_size=30),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


def deep(depth: int, leaf: Any = 1) -> Any:
    """A list nested ``depth`` levels, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def deep_dict(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


nested = st.one_of(
    st.integers(min_value=1, max_value=50_000).map(deep),
    st.integers(min_value=1, max_value=50_000).map(deep_dict),
)
huge = st.one_of(
    st.integers(min_value=10_000, max_value=500_000).map(lambda n: "x" * n),
    st.integers(min_value=1_000, max_value=20_000).map(lambda n: list(range(n))),
)
garbage = st.one_of(values, nested, huge)


def data_for(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """A mapping whose keys are the model's fields, their typos and strangers, and whose
    values are anything at all."""
    fields = sorted(model.model_fields)
    keys = st.one_of(
        st.sampled_from(fields),
        st.sampled_from(fields).map(lambda f: f[:-1]),
        st.text(max_size=12),
        st.integers(min_value=1, max_value=300).map(lambda n: "k" * n),
    )
    return st.dictionaries(keys, garbage, max_size=5)


def build(model: type[BaseModel], data: dict[str, Any], how: str) -> None:
    if how == "init":
        model(**{str(k): v for k, v in data.items()})
    else:
        model.model_validate(data)


@pytest.mark.parametrize("how", ["init", "validate"])
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FUZZ
@given(data=st.data())
def test_fuzzed_models_raise_only_validation_errors(
    model: type[BaseModel], how: str, data: st.DataObject
) -> None:
    mapping = data.draw(data_for(model))
    error: ValidationError | None = None
    try:
        build(model, mapping, how)
    except ValidationError as exc:  # anything else escapes and fails the test
        error = exc
    if error is not None and how == "init":  # flexiai's short form: one line, a ConfigError
        assert isinstance(error, ConfigError)
        assert "\n" not in str(error)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_a_deeply_nested_value_for_every_field_is_a_validation_error(
    model: type[BaseModel],
) -> None:
    too_deep = deep(100_000)
    for field in model.model_fields:
        with pytest.raises(ValidationError):
            model.model_validate({field: too_deep})


json_texts = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60),
    st.integers(min_value=1, max_value=200_000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=200_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.sampled_from(['{"timeout": 1e999}', '{"redis_port": 1' + "0" * 5000 + "}", "\ud800"]),
)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FUZZ
@given(text=json_texts)
def test_fuzzed_json_text_raises_only_validation_errors(
    model: type[BaseModel], text: str | bytes
) -> None:
    with contextlib.suppress(ValidationError):  # anything else escapes and fails the test
        model.model_validate_json(text)


# -- the environment -----------------------------------------------------------------------------

KNOWN = sorted(ENVIRONMENT_VARIABLES)
variable_names = st.one_of(
    st.sampled_from(KNOWN),
    st.sampled_from(KNOWN).map(lambda n: n[:-1]),  # a typo
    st.builds(
        lambda n, f: f"FLEXIAI_PROVIDER_{n}_{f}",
        st.integers(min_value=0, max_value=10**30),
        st.sampled_from(PROVIDER_FIELDS) | st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_", max_size=12),
    ),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789", max_size=40).map(lambda s: "FLEXIAI_" + s),
)
variable_values = st.one_of(
    st.text(max_size=40),
    NUMBER_TEXT,
    values.map(lambda v: json.dumps(v, default=repr)),
    st.integers(min_value=1, max_value=200_000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=100_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(min_value=1, max_value=1_000_000).map(lambda n: "9" * n),
    st.integers(min_value=1, max_value=50_000).map(lambda n: ",".join(["h:1"] * n)),
)
BASE = {
    "FLEXIAI_PROVIDER_1_NAME": "openai",
    "FLEXIAI_PROVIDER_1_MODEL": "gpt-4o-mini",
    "FLEXIAI_PROVIDER_1_API_KEY": "sk-test-fuzz-SECRET",
}


def environment_error(environ: dict[str, str], file: Path | None = None) -> str | None:
    """Load, and return the ConfigError's message (None if it loaded). Anything that is not
    a ConfigError escapes and fails the test."""
    try:
        load_config(environ, file=file)
    except ConfigError as exc:
        return str(exc)
    return None


@FUZZ
@given(extra=st.dictionaries(variable_names, variable_values, max_size=4))
def test_a_fuzzed_environment_loads_or_raises_a_config_error_naming_a_variable(
    extra: dict[str, str],
) -> None:
    environ = {**BASE, **extra}
    message = environment_error(environ)
    if message is not None:
        assert "FLEXIAI_" in message
        assert "sk-test-fuzz-SECRET" not in message


shallow_documents = st.one_of(
    values,
    st.dictionaries(
        st.sampled_from(["providers", "sync", "retry", "circuit_breaker", "x"]),
        values,
        max_size=4,
    ),
).map(lambda v: json.dumps(v, default=repr))
deep_documents = st.builds(
    lambda n, where: where.replace("@", "[" * n + "]" * n),
    st.integers(min_value=1, max_value=100_000),
    st.sampled_from(['{"providers": @}', '{"sync": {"redis_sentinels": @}}', "@"]),
)


@FUZZ
@given(document=st.one_of(shallow_documents, deep_documents))
def test_a_fuzzed_config_file_loads_or_raises_a_config_error_naming_the_variable(
    tmp_path: Path, document: str
) -> None:
    path = tmp_path / "flexiai.json"
    path.write_text(document)
    message = environment_error(dict(BASE), file=path)
    if message is not None:
        assert "FLEXIAI_" in message or "invalid flexiai configuration" in message


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe{", b"[" * 100_000, b'{"providers": [' + b"[" * 100_000 + b"]}"],
    ids=["not-utf8", "deep-list", "deep-in-providers"],
)
def test_a_broken_config_file_is_a_config_error_naming_the_variable(
    tmp_path: Path, raw: bytes
) -> None:
    path = tmp_path / "flexiai.json"
    path.write_bytes(raw)

    message = environment_error({"FLEXIAI_CONFIG_FILE": str(path)})

    assert message is not None and "FLEXIAI_CONFIG_FILE" in message
