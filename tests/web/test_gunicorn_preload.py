"""The guide's module-level client under ``gunicorn --preload`` with 4 uvicorn workers.

The master imports the app, and so builds the client, before forking the workers. Each
worker must still be a worker of its own (distinct ids), the four must share one breaker
per provider (a dead primary costs the fleet at most ``failure_threshold`` + 4 calls: one
in flight per worker when the breaker opens), and SIGTERM must stop them cleanly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flexiai.models import CircuitBreakerConfig
from flexiai.testing import FakeLLMServer
from flexiai_dev.servers import RedisProcess
from tests.web.gunicorn_run import gunicorn

WORKERS = 4
REQUESTS = 24

pytestmark = pytest.mark.slow


def test_preloaded_module_level_client(
    tmp_path: Path, redis_server: RedisProcess, fake_llm: FakeLLMServer
) -> None:
    ids_dir = tmp_path / "worker-ids"
    ids_dir.mkdir()
    env = {
        "GUIDE_FAKE_LLM": fake_llm.url,
        "GUIDE_REDIS_PORT": str(redis_server.port),
        "GUIDE_WORKER_IDS": str(ids_dir),
    }
    fake_llm.down("openai")
    with gunicorn("tests.web.guide_app:app", tmp_path, env, preload=True) as server:
        with server.http() as http:
            answers = [http.post("/generate", params={"prompt": f"q{i}"}) for i in range(REQUESTS)]
        exit_code = server.stop()
    log = server.log.read_text()

    worker_ids = {path.name: path.read_text() for path in ids_dir.iterdir()}
    assert len(worker_ids) == WORKERS, log[-4000:]
    assert len(set(worker_ids.values())) == WORKERS
    for pid, worker_id in worker_ids.items():
        assert f"-{pid}-" in worker_id  # the worker's own pid, not the master's

    assert [a.status_code for a in answers] == [200] * REQUESTS
    assert {a.json()["worker_id"] for a in answers} <= set(worker_ids.values())
    threshold = CircuitBreakerConfig().failure_threshold
    assert fake_llm.count("openai") <= threshold + WORKERS
    assert fake_llm.count("anthropic") == REQUESTS

    assert exit_code == 0, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
