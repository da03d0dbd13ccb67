"""Shared fixtures: real Redis servers (tests/support/redis_fixtures.py) and the fake LLM
server (tests/support/llm_fixtures.py). Tests never touch the machine's own 6379 server.

No test has a time limit of its own: a busy machine makes the suite slower, never red. The
`timeout` marker (pytest-timeout's) is refused at collection, and pyproject.toml turns the
plugin off (`-p no:timeout`) for a machine that has it installed anyway. A test that waits
for something bounds the wait itself and says what it was waiting for. Hypothesis runs
without its per-example deadline and its too-slow health check (both are timings), and
keeps no example database in the checkout.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "flexiai",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
settings.load_profile("flexiai")

pytest_plugins = [
    "tests.support.redis_fixtures",
    "tests.support.llm_fixtures",
]


def pytest_configure(config: pytest.Config) -> None:
    # Registered so that --strict-markers reaches the clear error below, not a generic one.
    config.addinivalue_line("markers", "timeout: refused here (see tests/conftest.py)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    limited = [item.nodeid for item in items if item.get_closest_marker("timeout")]
    if limited:
        raise pytest.UsageError(
            "per-test timeouts trip on a busy machine and are not used in this suite; "
            "remove @pytest.mark.timeout from: " + ", ".join(limited)
        )
