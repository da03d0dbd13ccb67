"""The guide's module-level client in multi-worker servers (issue 12, item 1; issue 14,
item 3), with a dead primary and a healthy fallback:

* ``gunicorn --preload`` with 4 uvicorn workers: the master imports the app, and so builds
  the client, before it forks the workers;
* ``uvicorn --workers 2``: the supervisor *spawns* each worker, a fresh interpreter that
  imports the app and builds its own client; nothing is inherited.

Either way each worker must be a worker of its own (a distinct id carrying its own pid),
all must share one breaker per provider in Redis (a dead primary costs the fleet at most
``failure_threshold`` + one call per worker: one in flight each when it opens), and SIGTERM
must stop them cleanly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from flexiai.models import CircuitBreakerConfig
from flexiai.testing import FakeLLMServer
from flexiai_dev.servers import RedisProcess
from tests.web.gunicorn_run import gunicorn, uvicorn

pytestmark = pytest.mark.slow

Server = Callable[[str, Path, Mapping[str, str]], contextlib.AbstractContextManager[Any]]
SERVERS: dict[str, tuple[Server, int, int]] = {
    # name: (how to start it, workers, requests)
    "gunicorn --preload": (partial(gunicorn, preload=True, workers=4), 4, 24),
    "uvicorn --workers": (partial(uvicorn, workers=2), 2, 16),
}


@pytest.fixture
def worker_ids_dir(tmp_path: Path) -> Path:
    path = tmp_path / "worker-ids"
    path.mkdir()
    return path


@pytest.mark.parametrize("name", SERVERS)
def test_the_module_level_client_gives_each_worker_its_id_and_one_shared_breaker(
    name: str,
    tmp_path: Path,
    worker_ids_dir: Path,
    redis_server: RedisProcess,
    fake_llm: FakeLLMServer,
) -> None:
    start, workers, requests = SERVERS[name]
    env = {
        "GUIDE_FAKE_LLM": fake_llm.url,
        "GUIDE_REDIS_PORT": str(redis_server.port),
        "GUIDE_WORKER_IDS": str(worker_ids_dir),
    }
    fake_llm.down("openai")
    with start("tests.web.guide_app:app", tmp_path, env) as server:
        with server.http() as http:
            answers = [http.post("/generate", params={"prompt": f"q{i}"}) for i in range(requests)]
        exit_code = server.stop()
    log = server.log.read_text()

    worker_ids = {path.name: path.read_text() for path in worker_ids_dir.iterdir()}
    assert len(worker_ids) == workers, log[-4000:]
    assert len(set(worker_ids.values())) == workers
    for pid, worker_id in worker_ids.items():
        assert f"-{pid}-" in worker_id  # the worker's own pid, not the master's

    assert [a.status_code for a in answers] == [200] * requests
    assert {a.json()["worker_id"] for a in answers} <= set(worker_ids.values())
    threshold = CircuitBreakerConfig().failure_threshold
    assert fake_llm.count("openai") <= threshold + workers  # one breaker for all workers
    assert fake_llm.count("anthropic") == requests
    with redis_server.client() as raw:  # the breaker they all read is the shared one
        assert b'"OPEN"' in (raw.get("flexiai:state:openai") or b"")

    assert exit_code == 0, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
