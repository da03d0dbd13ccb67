"""The configuration page's reference tables are what scripts/config_reference.py makes of
the models today, and so name every field and every variable."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType

from flexiai.config import ENVIRONMENT_VARIABLES
from flexiai.models import CircuitBreakerConfig, ProviderConfig, RetryConfig, SyncConfig
from tests.docs.markdown import DOCS, ROOT

PAGE = DOCS / "configuration.md"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "scripts" / "config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_tables_are_fresh() -> None:
    generator = _generator()
    page = PAGE.read_text(encoding="utf-8")
    assert generator.PAGE == PAGE
    assert generator.with_reference(page) == page, (
        "docs/configuration.md is stale: run python scripts/config_reference.py --write"
    )


def test_the_check_command_agrees() -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/config_reference.py", "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_environment_variable_is_documented() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert sorted(v for v in ENVIRONMENT_VARIABLES if v not in page) == []


def test_every_config_field_is_documented() -> None:
    page = PAGE.read_text(encoding="utf-8")
    for model in (SyncConfig, CircuitBreakerConfig, RetryConfig, ProviderConfig):
        for field in model.model_fields:
            assert f"| `{field}` |" in page, f"{model.__name__}.{field}"
