"""The guide's module-level client under ``uvicorn --workers 2`` (issue 12, item 1).

uvicorn's supervisor spawns each worker as a fresh interpreter that imports the app and so
builds its own client: nothing is inherited, unlike ``gunicorn --preload``. The two must
still be distinct workers sharing one breaker per provider (a dead primary costs the fleet
at most ``failure_threshold`` + 2 calls: one in flight per worker when it opens), and
SIGTERM must stop them cleanly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flexiai.models import CircuitBreakerConfig
from flexiai.testing import FakeLLMServer
from flexiai_dev.servers import RedisProcess
from tests.web.gunicorn_run import uvicorn

WORKERS = 2
REQUESTS = 16

pytestmark = pytest.mark.slow


def test_module_level_client_under_uvicorn_workers(
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
    with uvicorn("tests.web.guide_app:app", tmp_path, env, workers=WORKERS) as server:
        with server.http() as http:
            answers = [http.post("/generate", params={"prompt": f"q{i}"}) for i in range(REQUESTS)]
        exit_code = server.stop()
    log = server.log.read_text()

    worker_ids = {path.name: path.read_text() for path in ids_dir.iterdir()}
    assert len(worker_ids) == WORKERS, log[-4000:]
    assert len(set(worker_ids.values())) == WORKERS
    for pid, worker_id in worker_ids.items():
        assert f"-{pid}-" in worker_id  # each worker's own pid

    assert [a.status_code for a in answers] == [200] * REQUESTS
    assert {a.json()["worker_id"] for a in answers} <= set(worker_ids.values())
    threshold = CircuitBreakerConfig().failure_threshold
    assert fake_llm.count("openai") <= threshold + WORKERS  # one breaker for both workers
    assert fake_llm.count("anthropic") == REQUESTS
    with redis_server.client() as raw:  # the breaker both workers read is the shared one
        assert b'"OPEN"' in (raw.get("flexiai:state:openai") or b"")

    assert exit_code == 0, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
