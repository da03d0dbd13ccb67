"""What importing the AWS kit costs: Powertools, boto3 and PyYAML load only when used."""

from __future__ import annotations

import subprocess
import sys

import pytest

import flexiai.aws


def imported_after(statement: str) -> list[str]:
    code = (
        f"import sys\n{statement}\n"
        "heavy = ('aws_lambda_powertools', 'boto3', 'botocore', 'yaml', 'aws_xray_sdk', 'redis')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.split()


@pytest.mark.parametrize(
    "statement",
    [
        "import flexiai, flexiai.aws",
        "from flexiai.aws import current_client, resolve_reference, LocalLambdaContext",
        "import flexiai.aws.context, flexiai_dev.cloudformation",
        "import flexiai_dev.invoke",
    ],
)
def test_the_light_modules_import_nothing_heavy(statement: str) -> None:
    assert imported_after(statement) == []


@pytest.mark.parametrize(
    "statement",
    ["from flexiai.aws import flexiai_handler", "import flexiai.aws.http_events"],
)
def test_the_middleware_and_the_http_resolvers_are_what_import_powertools(statement: str) -> None:
    loaded = imported_after(statement)
    assert "aws_lambda_powertools" in loaded
    # Powertools reads botocore's version for its user agent; boto3 itself stays out.
    assert not {"boto3", "yaml", "aws_xray_sdk", "redis"} & set(loaded)


def test_the_public_names_are_sorted_and_all_importable() -> None:
    assert flexiai.aws.__all__ == sorted(flexiai.aws.__all__)
    for name in flexiai.aws.__all__:
        assert getattr(flexiai.aws, name) is not None
    assert dir(flexiai.aws) == flexiai.aws.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        flexiai.aws.nope  # noqa: B018
