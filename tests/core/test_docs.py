"""The README's configuration reference covers every field and every variable."""

from __future__ import annotations

from pathlib import Path

from flexiai.config import ENVIRONMENT_VARIABLES
from flexiai.models import CircuitBreakerConfig, ProviderConfig, RetryConfig, SyncConfig

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_environment_variable_is_documented() -> None:
    missing = sorted(v for v in ENVIRONMENT_VARIABLES if v not in README)
    assert missing == []


def test_every_config_field_is_documented() -> None:
    for model in (SyncConfig, CircuitBreakerConfig, RetryConfig, ProviderConfig):
        for field in model.model_fields:
            assert f"| `{field}` |" in README, f"{model.__name__}.{field}"
