"""Shared fixtures: real Redis servers (tests/support/redis_fixtures.py) and the fake LLM
server (tests/support/llm_fixtures.py). Tests never touch the machine's own 6379 server."""

pytest_plugins = [
    "tests.support.redis_fixtures",
    "tests.support.llm_fixtures",
]
