"""Config models and ``load_config()``: good values load, bad ones fail naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from flexiai.config import ENVIRONMENT_VARIABLES, load_config
from flexiai.exceptions import ConfigError
from flexiai.models import (
    CircuitBreakerConfig,
    FlexiAIConfig,
    ProviderConfig,
    RetryConfig,
    SyncConfig,
)

OPENAI = {"name": "openai", "api_key": "sk-x", "model": "gpt-4"}

BAD_MODELS: list[tuple[str, type[Any], dict[str, Any], str]] = [
    ("unknown provider key", ProviderConfig, {**OPENAI, "modle": "x"}, "modle"),
    ("missing model", ProviderConfig, {"name": "openai", "api_key": "k"}, "model"),
    ("unknown kind", ProviderConfig, {**OPENAI, "kind": "cohere"}, "kind"),
    ("kind not inferable", ProviderConfig, {**OPENAI, "name": "myllm"}, "kind is required"),
    ("no api key and no base_url", ProviderConfig, {"name": "openai", "model": "m"}, "api_key"),
    ("negative priority", ProviderConfig, {**OPENAI, "priority": -1}, "priority"),
    ("zero timeout", ProviderConfig, {**OPENAI, "timeout": 0}, "timeout"),
    ("base_url without scheme", ProviderConfig, {**OPENAI, "base_url": "api.x.com"}, "base_url"),
    ("name with spaces", ProviderConfig, {**OPENAI, "name": "open ai"}, "name"),
    ("state_ttl below 60", SyncConfig, {"state_ttl": 59}, "state_ttl"),
    ("unknown backend", SyncConfig, {"backend": "etcd"}, "backend"),
    ("unknown mode", SyncConfig, {"mode": "poll"}, "mode"),
    ("port out of range", SyncConfig, {"redis_port": 70000}, "redis_port"),
    ("redis_url scheme", SyncConfig, {"redis_url": "http://x"}, "redis_url"),
    ("sentinels without service", SyncConfig, {"redis_sentinels": ["h:1"]}, "sentinel_service"),
    (
        "sentinel without port",
        SyncConfig,
        {"redis_sentinels": ["h"], "redis_sentinel_service": "m"},
        "host:port",
    ),
    ("iam without cache name", SyncConfig, {"redis_iam_auth": True}, "redis_iam_cache_name"),
    ("unknown sync key", SyncConfig, {"redis_hots": "x"}, "redis_hots"),
    ("threshold zero", CircuitBreakerConfig, {"failure_threshold": 0}, "failure_threshold"),
    (
        "failure_on of strings",
        CircuitBreakerConfig,
        {"failure_on": ("TimeoutError",)},
        "failure_on",
    ),
    ("negative retries", RetryConfig, {"max_retries": -1}, "max_retries"),
    ("no providers", FlexiAIConfig, {"providers": []}, "providers"),
    ("duplicate names", FlexiAIConfig, {"providers": [OPENAI, OPENAI]}, "openai"),
    (
        "duplicate priorities",
        FlexiAIConfig,
        {
            "providers": [
                {**OPENAI, "priority": 1},
                {"name": "anthropic", "api_key": "k", "model": "c", "priority": 1},
            ]
        },
        "priorities",
    ),
]


@pytest.mark.parametrize(
    ("model", "data", "needle"), [c[1:] for c in BAD_MODELS], ids=[c[0] for c in BAD_MODELS]
)
def test_bad_model_config_fails_naming_the_field(
    model: type[Any], data: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ValidationError) as info:
        model(**data)
    assert needle in str(info.value)


def test_providers_are_sorted_by_priority_and_unprioritised_keep_list_order() -> None:
    config = FlexiAIConfig(
        providers=[
            {"name": "gemini", "api_key": "k", "model": "g"},
            {**OPENAI, "priority": 2},
            {"name": "anthropic", "api_key": "k", "model": "c", "priority": 1},
            {"name": "bedrock", "model": "b"},
        ]
    )
    assert [p.name for p in config.providers] == ["anthropic", "openai", "gemini", "bedrock"]


def test_kind_is_inferred_from_the_name() -> None:
    assert ProviderConfig(**{**OPENAI, "name": "openai-backup"}).kind == "openai"
    assert (
        ProviderConfig(name="vllm", kind="openai", model="m", base_url="http://h").kind == "openai"
    )


def test_sync_mode_auto_means_snapshot_on_lambda() -> None:
    assert SyncConfig().resolved_mode({"AWS_LAMBDA_FUNCTION_NAME": "f"}) == "snapshot"
    assert SyncConfig().resolved_mode({}) == "pubsub"
    assert SyncConfig(mode="pubsub").resolved_mode({"AWS_LAMBDA_FUNCTION_NAME": "f"}) == "pubsub"


def test_guide_defaults() -> None:
    sync = SyncConfig()
    assert (sync.key_prefix, sync.channel, sync.state_ttl) == ("flexiai", "flexiai:events", 3600)
    breaker = CircuitBreakerConfig()
    assert (breaker.failure_threshold, breaker.recovery_timeout, breaker.half_open_max_calls) == (
        5,
        60.0,
        1,
    )


# -- environment variables ---------------------------------------------------------------

BASE_ENV = {
    "FLEXIAI_PROVIDER_1_NAME": "openai",
    "FLEXIAI_PROVIDER_1_API_KEY": "sk-env",
    "FLEXIAI_PROVIDER_1_MODEL": "gpt-4",
}


def test_load_config_reads_every_section() -> None:
    env = {
        **BASE_ENV,
        "FLEXIAI_PROVIDER_2_NAME": "claude",
        "FLEXIAI_PROVIDER_2_KIND": "anthropic",
        "FLEXIAI_PROVIDER_2_API_KEY": "sk-ant",
        "FLEXIAI_PROVIDER_2_MODEL": "claude-3",
        "FLEXIAI_PROVIDER_2_PRIORITY": "0",
        "FLEXIAI_PROVIDER_2_OPTIONS": '{"anthropic_version": "2023-06-01"}',
        "FLEXIAI_SYNC_ENABLED": "true",
        "FLEXIAI_SYNC_BACKEND": "redis",
        "FLEXIAI_SYNC_REDIS_HOST": "redis.example.com",
        "FLEXIAI_SYNC_REDIS_PORT": "6380",
        "FLEXIAI_SYNC_REDIS_PASSWORD": "pw",
        "FLEXIAI_SYNC_REDIS_SSL": "true",
        "FLEXIAI_SYNC_REDIS_SENTINELS": "a:26379, b:26379",
        "FLEXIAI_SYNC_REDIS_SENTINEL_SERVICE": "mymaster",
        "FLEXIAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "3",
        "FLEXIAI_RETRY_MAX_RETRIES": "0",
    }
    config = load_config(env)
    assert [p.name for p in config.providers] == ["claude", "openai"]
    assert config.providers[0].options == {"anthropic_version": "2023-06-01"}
    assert config.sync.enabled and config.sync.redis_ssl and config.sync.redis_port == 6380
    assert config.sync.redis_sentinels == ["a:26379", "b:26379"]
    assert config.circuit_breaker.failure_threshold == 3
    assert config.retry.max_retries == 0


BAD_ENV: list[tuple[str, dict[str, str], str]] = [
    ("port not a number", {"FLEXIAI_SYNC_REDIS_PORT": "sixthousand"}, "FLEXIAI_SYNC_REDIS_PORT"),
    ("bool garbage", {"FLEXIAI_SYNC_ENABLED": "maybe"}, "FLEXIAI_SYNC_ENABLED"),
    ("ttl too small", {"FLEXIAI_SYNC_STATE_TTL": "5"}, "FLEXIAI_SYNC_STATE_TTL"),
    ("typo in a variable", {"FLEXIAI_SYNC_REDIS_HOTS": "x"}, "FLEXIAI_SYNC_REDIS_HOST"),
    (
        "threshold zero",
        {"FLEXIAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "0"},
        "FLEXIAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD",
    ),
    ("provider timeout", {"FLEXIAI_PROVIDER_1_TIMEOUT": "-3"}, "FLEXIAI_PROVIDER_1_TIMEOUT"),
    (
        "provider options not json",
        {"FLEXIAI_PROVIDER_1_OPTIONS": "{nope"},
        "FLEXIAI_PROVIDER_1_OPTIONS",
    ),
    (
        "second provider lacks model",
        {"FLEXIAI_PROVIDER_7_NAME": "anthropic", "FLEXIAI_PROVIDER_7_API_KEY": "k"},
        "FLEXIAI_PROVIDER_7",
    ),
    ("unknown mode", {"FLEXIAI_SYNC_MODE": "poll"}, "FLEXIAI_SYNC_MODE"),
    ("unknown provider field", {"FLEXIAI_PROVIDER_1_MODLE": "x"}, "FLEXIAI_PROVIDER_1_MODLE"),
]


@pytest.mark.parametrize(("extra", "needle"), [c[1:] for c in BAD_ENV], ids=[c[0] for c in BAD_ENV])
def test_bad_environment_fails_naming_the_variable(extra: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**BASE_ENV, **extra})
    assert needle in str(info.value)


def test_no_providers_in_the_environment_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="FLEXIAI_PROVIDER_1_NAME"):
        load_config({"FLEXIAI_SYNC_ENABLED": "true"})


def test_config_file_is_read_and_variables_override_it(tmp_path: Any) -> None:
    path = tmp_path / "flexiai.json"
    path.write_text(json.dumps({"providers": [OPENAI], "sync": {"state_ttl": 120}}))
    config = load_config({"FLEXIAI_CONFIG_FILE": str(path), "FLEXIAI_SYNC_STATE_TTL": "300"})
    assert config.providers[0].name == "openai"
    assert config.sync.state_ttl == 300


def test_yaml_config_file(tmp_path: Any) -> None:
    path = tmp_path / "flexiai.yaml"
    path.write_text("providers:\n  - {name: openai, api_key: k, model: gpt-4}\n")
    assert load_config({}, file=path).providers[0].model == "gpt-4"


def test_broken_config_file_names_the_variable(tmp_path: Any) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="FLEXIAI_CONFIG_FILE"):
        load_config({"FLEXIAI_CONFIG_FILE": str(path)})


def test_every_sync_field_has_a_variable() -> None:
    for field in SyncConfig.model_fields:
        assert f"FLEXIAI_SYNC_{field.upper()}" in ENVIRONMENT_VARIABLES
