"""Errors a newcomer meets first (issue 14, item 5): a misspelt field in code gets "did you
mean" as a misspelt variable does, an unknown provider kind points at ``kind="openai"`` +
``base_url``, and the log lines the deployment guide documents appear as it prints them."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from flexiai import FlexiAI
from flexiai.config import load_config
from flexiai.exceptions import ConfigError
from flexiai.models import (
    CircuitBreakerConfig,
    ConfigValidationError,
    FlexiAIConfig,
    ProviderConfig,
    RetryConfig,
    SyncConfig,
)
from flexiai.testing import FakeLLMServer
from flexiai_dev.servers import RedisProcess, free_port
from tests.support.llm_fixtures import provider_config
from tests.support.redis_fixtures import sync_config_for

OPENAI = {"name": "openai", "api_key": "sk-test-SECRET", "model": "gpt-4o-mini"}
#: What each public model needs besides the misspelt field.
REQUIRED: dict[type[BaseModel], dict[str, Any]] = {
    ProviderConfig: OPENAI,
    SyncConfig: {},
    CircuitBreakerConfig: {},
    RetryConfig: {},
    FlexiAIConfig: {"providers": [OPENAI]},
}


def misspell(field: str) -> str:
    """A typo people make: two neighbouring letters swapped, away from the ends."""
    middle = len(field) // 2
    return field[: middle - 1] + field[middle] + field[middle - 1] + field[middle + 1 :]


FIELDS = [
    pytest.param(model, field, id=f"{model.__name__}.{field}")
    for model in REQUIRED
    for field in model.model_fields
    if misspell(field) != field
]


@pytest.mark.parametrize(("model", "field"), FIELDS)
def test_every_misspelt_field_of_every_model_suggests_the_field(
    model: type[BaseModel], field: str
) -> None:
    typo = misspell(field)

    with pytest.raises(ConfigValidationError) as info:
        model(**REQUIRED[model], **{typo: None})

    assert str(info.value) == (
        f"invalid {model.__name__}: {typo}: unknown field (did you mean {field}?)"
    )


def test_the_issue_example_is_one_short_line_and_both_catches_work() -> None:
    with pytest.raises(ConfigError) as as_flexiai:
        SyncConfig(enabeld=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError) as as_pydantic:
        SyncConfig(enabeld=True)  # type: ignore[call-arg]

    assert str(as_flexiai.value) == (
        "invalid SyncConfig: enabeld: unknown field (did you mean enabled?)"
    )
    assert as_pydantic.value.errors()[0]["type"] == "extra_forbidden"


def test_a_misspelt_assignment_gets_the_same_suggestion() -> None:
    config = SyncConfig()

    with pytest.raises(ConfigValidationError) as typo:
        config.enabeld = True  # type: ignore[attr-defined]
    with pytest.raises(ConfigValidationError) as bad:
        config.redis_port = 0

    assert str(typo.value) == "invalid SyncConfig: enabeld: unknown field (did you mean enabled?)"
    assert str(bad.value) == (
        "invalid SyncConfig: redis_port: Input should be greater than or equal to 1"
    )
    config.enabled = True
    assert config.enabled is True


def test_nested_typos_name_their_path_and_every_problem_is_listed() -> None:
    with pytest.raises(ConfigError) as info:
        FlexiAIConfig(
            providers=[{**OPENAI, "modle": "x"}],
            sync={"enabld": True},
        )

    assert str(info.value) == (
        "invalid FlexiAIConfig: providers.0.modle: unknown field (did you mean model?); "
        "sync.enabld: unknown field (did you mean enabled?)"
    )


def test_a_far_off_name_gets_no_wild_guess() -> None:
    with pytest.raises(ConfigError) as info:
        RetryConfig(colour="blue")  # type: ignore[call-arg]

    assert str(info.value) == "invalid RetryConfig: colour: unknown field"


def test_the_message_never_shows_the_input_which_may_be_a_secret() -> None:
    with pytest.raises(ConfigError) as info:
        ProviderConfig(**{**OPENAI, "timeout": 0, "apikey": "sk-live-LEAKED"})

    message = str(info.value)
    assert "LEAKED" not in message and "SECRET" not in message
    assert "timeout: Input should be greater than 0" in message
    assert "apikey: unknown field (did you mean api_key?)" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("opnai", "(did you mean openai?)"),
        ("antropic", "(did you mean anthropic?)"),
        ("cohere", 'use kind="openai" with base_url'),
    ],
)
def test_an_unknown_kind_suggests_the_closest_or_the_openai_compatible_way(
    value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        ProviderConfig(**OPENAI, kind=value)

    assert str(info.value).startswith("invalid ProviderConfig: kind: Input should be 'openai'")
    assert expected in str(info.value)


def test_a_provider_name_that_names_no_kind_suggests_kind_openai_and_base_url() -> None:
    with pytest.raises(ConfigError) as info:
        ProviderConfig(name="vllm", model="m", api_key="k")

    assert "kind is required for provider 'vllm'" in str(info.value)
    assert 'kind="openai" with base_url' in str(info.value)


def test_an_openai_compatible_server_is_kind_openai_with_a_base_url() -> None:
    config = ProviderConfig(name="vllm", kind="openai", model="m", base_url="http://h:8000/v1")
    assert config.provider_kind == "openai"


# -- the environment -----------------------------------------------------------------------------

ENV = {"FLEXIAI_PROVIDER_1_NAME": "openai", "FLEXIAI_PROVIDER_1_MODEL": "gpt-4o-mini"}


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("FLEXIAI_PROVIDER_1_APIKEY", "FLEXIAI_PROVIDER_1_API_KEY"),
        ("FLEXIAI_PROVIDER_1_BASEURL", "FLEXIAI_PROVIDER_1_BASE_URL"),
        ("FLEXIAI_PROVIDER_2_MAXRETRIES", "FLEXIAI_PROVIDER_2_MAX_RETRIES"),
        ("FLEXIAI_PROVIDER_1_OPTION", "FLEXIAI_PROVIDER_1_OPTIONS"),
        ("FLEXIAI_SYNC_ENABLD", "FLEXIAI_SYNC_ENABLED"),
        ("FLEXIAI_RETRY_MAX_RETRY", "FLEXIAI_RETRY_MAX_RETRIES"),
    ],
)
def test_a_misspelt_variable_suggests_the_one_meant(variable: str, meant: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**ENV, "FLEXIAI_PROVIDER_1_API_KEY": "k", variable: "x"})

    assert str(info.value) == (
        f"{variable}: unknown flexiai environment variable (did you mean {meant}?)"
    )


def test_an_unknown_kind_in_the_environment_gets_the_same_hint() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**ENV, "FLEXIAI_PROVIDER_1_API_KEY": "k", "FLEXIAI_PROVIDER_1_KIND": "opnai"})

    assert str(info.value) == (
        "invalid flexiai configuration: FLEXIAI_PROVIDER_1_KIND: Input should be 'openai', "
        "'anthropic', 'gemini' or 'bedrock' (did you mean openai?)"
    )


def test_a_misspelt_key_in_the_config_file_gets_a_suggestion(tmp_path: Any) -> None:
    path = tmp_path / "flexiai.json"
    path.write_text('{"providers": [], "retry": {"max_retrys": 1}}')

    with pytest.raises(ConfigError) as info:
        load_config({**ENV, "FLEXIAI_PROVIDER_1_API_KEY": "k"}, file=path)

    assert "retry.max_retrys: unknown field (did you mean max_retries?)" in str(info.value)


# -- the guide's log lines -----------------------------------------------------------------------

GUIDE_FALLBACK = "Failed to initialize Redis backend, falling back to memory"


@pytest.mark.parametrize("mode", ["pubsub", "snapshot"])
def test_an_unreachable_redis_logs_the_guides_line_once_beside_the_specific_one(
    fake_llm: FakeLLMServer, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    config = FlexiAIConfig(
        providers=[provider_config(fake_llm, "openai")],
        sync=SyncConfig(
            enabled=True,
            mode=mode,
            redis_url=unreachable,
            reconnect_backoff=3600,
        ),
    )

    with caplog.at_level(logging.INFO, logger="flexiai"):
        with FlexiAI(config) as client:
            for _ in range(5):
                assert client.generate("hello").provider == "openai"

    lines = [f"{r.levelname}:{r.name}:{r.getMessage()}" for r in caplog.records]
    assert "INFO:flexiai.client:Sync manager initialized (backend: redis)" in lines
    fallbacks = [line for line in lines if GUIDE_FALLBACK in line]
    assert len(fallbacks) == 1, lines
    (line,) = fallbacks
    assert line.startswith(f"WARNING:flexiai.sync.manager:{GUIDE_FALLBACK}: ")
    assert f"127.0.0.1:{unreachable.rsplit(':', 1)[1].split('/')[0]}" in line
    assert "retrying in 3600.0s" in line


@pytest.mark.redis_server
def test_the_guides_other_log_lines_appear_as_it_prints_them(
    redis_server: RedisProcess, fake_llm: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The guide's "Example log output", line by line, with logging.basicConfig's format."""
    config = FlexiAIConfig(
        providers=[provider_config(fake_llm, "openai"), provider_config(fake_llm, "anthropic")],
        sync=sync_config_for(redis_server, mode="pubsub", worker_id="worker-1"),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2),
        retry=RetryConfig(max_retries=0),
    )
    fake_llm.down("openai")

    with caplog.at_level(logging.INFO, logger="flexiai"):
        with FlexiAI(config) as client:
            for _ in range(3):
                assert client.generate("hello").provider == "anthropic"

    lines = [f"{r.levelname}:{r.name}:{r.getMessage()}" for r in caplog.records]
    for guide_line in (
        "INFO:flexiai.client:Sync manager initialized (backend: redis)",
        "INFO:flexiai.sync.manager:Worker worker-1 started",
        "INFO:flexiai.circuit_breaker:Circuit opened for provider openai",
        "INFO:flexiai.sync.manager:Broadcasting state change: openai OPENED",
    ):
        assert guide_line in lines, lines
    assert not any(GUIDE_FALLBACK in line for line in lines)  # Redis was there all along
