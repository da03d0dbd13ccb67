"""examples/fastapi_app.py under gunicorn with 4 uvicorn workers, with and without
``--preload``: the workers share one breaker per provider.

The primary is down: the fleet spends at most ``failure_threshold`` + 4 calls on it (one in
flight per worker when the breaker opens), every request is answered by the secondary, and
``/health`` reports the primary OPEN from whichever worker answers it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flexiai.testing import FakeLLMServer
from flexiai_dev.servers import RedisProcess
from tests.web.gunicorn_run import gunicorn

WORKERS = 4
REQUESTS = 24
THRESHOLD = 3
HEALTH_CHECKS = 12

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-import", "preload"])
def test_example_workers_share_breakers(
    tmp_path: Path, redis_server: RedisProcess, fake_llm: FakeLLMServer, preload: bool
) -> None:
    env = {
        "FLEXIAI_PROVIDER_1_NAME": "openai",
        "FLEXIAI_PROVIDER_1_MODEL": "gpt-4o-mini",
        "FLEXIAI_PROVIDER_1_API_KEY": "sk-test-openai",
        "FLEXIAI_PROVIDER_1_BASE_URL": fake_llm.base_url("openai"),
        "FLEXIAI_PROVIDER_1_MAX_RETRIES": "0",
        "FLEXIAI_PROVIDER_2_NAME": "anthropic",
        "FLEXIAI_PROVIDER_2_MODEL": "claude-3-5-haiku-latest",
        "FLEXIAI_PROVIDER_2_API_KEY": "sk-test-anthropic",
        "FLEXIAI_PROVIDER_2_BASE_URL": fake_llm.base_url("anthropic"),
        "FLEXIAI_SYNC_ENABLED": "true",
        "FLEXIAI_SYNC_REDIS_URL": redis_server.url,
        "FLEXIAI_CIRCUIT_BREAKER_FAILURE_THRESHOLD": str(THRESHOLD),
        # A busy machine must neither trip the store's 0.25 s socket timeout (the worker
        # would fall back to local breakers) nor let the breaker half-open mid-test.
        "FLEXIAI_SYNC_REDIS_SOCKET_TIMEOUT": "10",
        "FLEXIAI_SYNC_REDIS_SOCKET_CONNECT_TIMEOUT": "10",
        "FLEXIAI_CIRCUIT_BREAKER_RECOVERY_TIMEOUT": "3600",
    }
    fake_llm.down("openai")
    with gunicorn("examples.fastapi_app:app", tmp_path, env, preload=preload) as server:
        with server.http() as http:
            answers = [http.post("/generate", json={"prompt": f"q{i}"}) for i in range(REQUESTS)]
            health = [http.get("/health").json() for _ in range(HEALTH_CHECKS)]
        exit_code = server.stop()
    log = server.log.read_text()

    assert [a.status_code for a in answers] == [200] * REQUESTS, log[-4000:]
    assert {a.json()["provider"] for a in answers} == {"anthropic"}
    assert fake_llm.count("openai") <= THRESHOLD + WORKERS
    assert fake_llm.count("anthropic") == REQUESTS

    served_by = {a.json()["worker_id"] for a in answers} | {h["worker_id"] for h in health}
    assert len(served_by) <= WORKERS
    for report in health:
        assert report["providers"]["openai"]["state"] == "OPEN"
        assert report["providers"]["anthropic"] == {"state": "CLOSED", "healthy": True}
        # "healthy" is left out: a worker's subscriber may still be connecting.
        assert report["store"]["backend"] == "redis" and report["store"]["shared"]

    assert exit_code == 0, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
