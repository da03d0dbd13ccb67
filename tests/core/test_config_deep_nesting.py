"""A deeply nested JSON value in the environment is a ``ConfigError`` naming the variable,
never a ``RecursionError`` (issue 12, item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexiai.config import load_config
from flexiai.exceptions import ConfigError

PROVIDER = {
    "FLEXIAI_PROVIDER_1_NAME": "openai",
    "FLEXIAI_PROVIDER_1_MODEL": "gpt-4",
    "FLEXIAI_PROVIDER_1_API_KEY": "sk-x",
}


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_deeply_nested_provider_options_name_the_variable(depth: int) -> None:
    env = {**PROVIDER, "FLEXIAI_PROVIDER_1_OPTIONS": nested(depth)}

    with pytest.raises(ConfigError, match="FLEXIAI_PROVIDER_1_OPTIONS") as info:
        load_config(env)

    assert "nested too deeply" in str(info.value)


def test_deeply_nested_lists_are_refused_the_same_way() -> None:
    env = {**PROVIDER, "FLEXIAI_PROVIDER_1_OPTIONS": "[" * 50_000 + "]" * 50_000}

    with pytest.raises(ConfigError, match="FLEXIAI_PROVIDER_1_OPTIONS"):
        load_config(env)


def test_modestly_nested_options_still_load() -> None:
    env = {**PROVIDER, "FLEXIAI_PROVIDER_1_OPTIONS": nested(50)}

    config = load_config(env)

    assert json.dumps(config.providers[0].options).count("{") == 50


def test_a_deeply_nested_config_file_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "flexiai.json"
    path.write_text('{"providers": [' + nested(100_000) + "]}")

    with pytest.raises(ConfigError, match="FLEXIAI_CONFIG_FILE"):
        load_config({"FLEXIAI_CONFIG_FILE": str(path)})


@settings(max_examples=200, deadline=None)  # no timing: a slow machine is not a failure
@given(
    raw=st.one_of(
        st.text(max_size=60),
        st.integers(min_value=1, max_value=200_000).map(lambda n: "[" * n + "]" * n),
        st.integers(min_value=1, max_value=200_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    )
)
def test_fuzzed_options_load_or_raise_a_config_error_naming_the_variable(raw: str) -> None:
    env = {**PROVIDER, "FLEXIAI_PROVIDER_1_OPTIONS": raw}
    message = ""
    try:
        load_config(env)
    except ConfigError as exc:  # anything else escapes and fails the test
        message = str(exc)
    assert not message or "FLEXIAI_PROVIDER_1_OPTIONS" in message
