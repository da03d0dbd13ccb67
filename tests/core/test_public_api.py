"""The public surface: sorted and complete ``__all__``, cheap imports, lazy extras."""

from __future__ import annotations

import json
import subprocess
import sys

import flexiai


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert flexiai.__all__ == sorted(flexiai.__all__)
    for name in flexiai.__all__:
        assert getattr(flexiai, name) is not None


def test_guide_modules_are_public() -> None:
    from flexiai.config import load_config
    from flexiai.models import FlexiAIConfig, ProviderConfig, SyncConfig

    assert all((load_config, FlexiAIConfig, ProviderConfig, SyncConfig))


HEAVY = [
    "redis",
    "httpx",
    "boto3",
    "botocore",
    "openai",
    "anthropic",
    "google",
    "aws_lambda_powertools",
    "pydantic_settings",
    "rich",
    "yaml",
]


def loaded_after(code: str) -> list[str]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code + f"\nimport sys, json; print(json.dumps("
            f"[m for m in {HEAVY!r} if m in sys.modules]))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_flexiai_loads_no_heavy_module() -> None:
    """Regression: the origin imported every provider SDK on import (about 7 s cold)."""
    assert loaded_after("import flexiai") == []


def test_building_a_client_from_the_environment_loads_no_heavy_module() -> None:
    code = (
        "import os\n"
        "os.environ.update({'FLEXIAI_PROVIDER_1_NAME': 'openai', 'FLEXIAI_PROVIDER_1_API_KEY': 'k',"
        " 'FLEXIAI_PROVIDER_1_MODEL': 'm', 'FLEXIAI_PROVIDER_2_NAME': 'bedrock',"
        " 'FLEXIAI_PROVIDER_2_MODEL': 'b', 'FLEXIAI_SYNC_ENABLED': 'true',"
        " 'FLEXIAI_SYNC_REDIS_PORT': '1'})\n"
        "from flexiai import FlexiAI, load_config\n"
        "client = FlexiAI(config=load_config())\n"
    )
    assert loaded_after(code) == []
