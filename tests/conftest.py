"""Shared fixtures: real Redis servers (tests/support/redis_fixtures.py) and the fake LLM
server (tests/support/llm_fixtures.py). Tests never touch the machine's own 6379 server.

No test has a time limit of its own: a busy machine makes the suite slower, never red. The
`timeout` marker (pytest-timeout's) is refused at collection, and pyproject.toml turns the
plugin off (`-p no:timeout`) for a machine that has it installed anyway. A test that waits
for something bounds the wait itself and says what it was waiting for. Hypothesis runs
without its per-example deadline and its too-slow health check (both are timings), and
keeps no example database in the checkout.

The suite runs on two pytest-xdist workers (scripts/test, ``--dist loadgroup``). Tests that
must not run beside each other share an ``xdist_group`` (``XDIST_GROUPS`` below, assigned
here by path and fixture so a new file in those places is covered without a mark of its
own): each group runs on one worker, one test at a time, while the other worker runs the
rest.
"""

from __future__ import annotations

import signal

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
    # A run started in the background by a script (as CI may be) inherits SIGINT ignored,
    # and so would every subprocess: the tests that press Ctrl-C on the demo need it live.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # Registered so that --strict-markers reaches the clear error below, not a generic one.
    config.addinivalue_line("markers", "timeout: refused here (see tests/conftest.py)")
    # pytest-xdist registers it too; here for a run without the plugin (-p no:xdist).
    config.addinivalue_line("markers", "xdist_group(name): tests that run on one worker")


#: (path prefix, group): the multi-process tests that load the CPU (a fleet of 16-32
#: workers, gunicorn, the demo, the benches) take turns, as do the deploy tests (the
#: session's one CDK synthesis is shared only by tests on the same worker; layer, SAM and
#: package builds) and the Redis topologies (a cluster and sentinel groups of 5 servers).
XDIST_GROUPS: tuple[tuple[str, str], ...] = (
    # The minute-long soak takes turns with nothing: its assertions (no failed request, at
    # most one store failure per request, 2 % noise never opens) are counts that CPU
    # contention cannot change, and beside the other fleet tests it halves the critical path.
    ("tests/fleet/test_soak.py", "soak"),
    ("tests/fleet/", "processes"),
    ("tests/web/", "processes"),
    ("tests/bench/", "processes"),
    ("tests/demo/", "processes"),
    ("tests/cli/test_demo.py", "processes"),
    ("tests/deploy/", "deploy"),
    ("tests/test_packaging.py", "deploy"),
    ("tests/circuit_breaker/test_topologies.py", "redis-topology"),
)
#: A fixture whose users share a group wherever they live: one CDK synthesis per run, and
#: the session's Redis cluster and the module's sentinel groups on one worker.
FIXTURE_GROUPS = {
    "synthesized": "deploy",
    "redis_cluster": "redis-topology",
    "sentinel_redis": "redis-topology",
    # the flexiai layer for the real Lambda runtime: built once, by the worker that runs them
    "built_layer": "lambda-runtime",
}
#: Other tests marked ``slow`` (multi-process) take turns with the fleet.
SLOW_GROUP = "processes"


def xdist_group_of(item: pytest.Item) -> str | None:
    """The group ``item`` runs in under ``--dist loadgroup``, or None (any worker)."""
    path = item.nodeid.split("::", 1)[0]
    for prefix, group in XDIST_GROUPS:
        if path.startswith(prefix):
            return group
    for fixture in getattr(item, "fixturenames", ()):
        if fixture in FIXTURE_GROUPS:
            return FIXTURE_GROUPS[fixture]
    if item.get_closest_marker("slow"):
        return SLOW_GROUP
    return None


# tryfirst: xdist reads the marks in its own collection hook, which must run after this one.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None and (group := xdist_group_of(item)):
            item.add_marker(pytest.mark.xdist_group(group))
    limited = [item.nodeid for item in items if item.get_closest_marker("timeout")]
    if limited:
        raise pytest.UsageError(
            "per-test timeouts trip on a busy machine and are not used in this suite; "
            "remove @pytest.mark.timeout from: " + ", ".join(limited)
        )
