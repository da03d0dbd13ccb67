"""The fuzz modules build one client per provider kind and reuse it across examples, so
the AWS environment that Bedrock's botocore reads is set once per module, as
``tests/providers/conftest.py`` sets it per test: throwaway keys, no machine config, no
instance metadata lookups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.aws_env import MACHINE_AWS_VARIABLES


@pytest.fixture(scope="module", autouse=True)
def fake_aws_credentials(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    empty: Path = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as patch:
        for name in MACHINE_AWS_VARIABLES:
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_REGION", "us-east-1")
        patch.setenv("AWS_CONFIG_FILE", str(empty / "no-aws-config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "no-aws-credentials"))
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield
