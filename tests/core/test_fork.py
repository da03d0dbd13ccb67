"""A client built and used before ``os.fork`` works in every child as a worker of its own.

The parent has made a call, so it holds a Redis connection, a subscriber and a flusher
thread, and a keep-alive HTTP connection. Children forked by ``multiprocessing`` (fork start
method) must each get a new worker id, new Redis connections (the server sees a distinct
client id per process, and one subscriber per process), and an empty HTTP pool.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from multiprocessing.synchronize import Event
from typing import Any

import pytest
import redis

from flexiai import FlexiAI
from flexiai.models import FlexiAIConfig
from flexiai.testing import FakeLLMServer
from flexiai_dev.servers import RedisProcess
from tests.support.llm_fixtures import provider_config
from tests.support.redis_fixtures import sync_config_for

CHILDREN = 3
#: Bounds every wait on a child, so a child that hangs fails the test instead of hanging it.
WAIT_SECONDS = 120


def _redis_client_id(client: FlexiAI) -> int:
    """CLIENT ID on the connection this process's breaker store uses (read, not patched)."""
    manager = client._sync_manager
    assert manager is not None
    store: Any = manager.backend._client()  # type: ignore[attr-defined]
    return int(store.client_id())


def _child(client: FlexiAI, results: Any, done: Event) -> None:
    pool_before = repr(client._http_pool)
    response = client.generate("hello from a child")
    results.put(
        {
            "pid": os.getpid(),
            "worker_id": client.worker_id,
            "answered_by": response.metadata.worker_id,
            "pool_before": pool_before,
            "redis_client_id": _redis_client_id(client),
        }
    )
    done.wait(WAIT_SECONDS)  # stay connected while the test looks at the server
    client.close()


@pytest.fixture
def used_client(redis_server: RedisProcess, fake_llm: FakeLLMServer) -> Iterator[FlexiAI]:
    config = FlexiAIConfig(
        providers=[provider_config(fake_llm, "openai", priority=1)],
        sync=sync_config_for(redis_server, flush_interval=0.05),
    )
    client = FlexiAI(config)
    client.generate("hello from the parent")  # connections and threads now exist
    yield client
    client.close()


def _clients(redis_server: RedisProcess) -> list[dict[str, Any]]:
    """CLIENT LIST as the server sees it (this admin connection included)."""
    with redis.Redis(host=redis_server.host, port=redis_server.port) as admin:
        return list(admin.client_list())


@pytest.mark.slow
def test_forked_children_are_workers_of_their_own(
    used_client: FlexiAI, redis_server: RedisProcess
) -> None:
    parent_id = used_client.worker_id
    # Client ids only grow: a connection opened after the fork has a larger one.
    opened_before_fork = max(int(c["id"]) for c in _clients(redis_server))
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    done = context.Event()
    children = [
        context.Process(target=_child, args=(used_client, results, done)) for _ in range(CHILDREN)
    ]
    for child in children:
        child.start()
    try:
        reports = [results.get(timeout=WAIT_SECONDS) for _ in children]
        # Each child subscribed on a connection of its own, beside the parent's subscriber.
        subscribers = [c for c in _clients(redis_server) if "P" in c["flags"]]
        assert len(subscribers) == 1 + CHILDREN
    finally:
        done.set()
        for child in children:
            child.join(WAIT_SECONDS)
    assert [child.exitcode for child in children] == [0] * CHILDREN

    worker_ids = {r["worker_id"] for r in reports}
    assert len(worker_ids) == CHILDREN and parent_id not in worker_ids
    for report in reports:
        assert f"-{report['pid']}-" in report["worker_id"]
        assert report["answered_by"] == report["worker_id"]
        assert report["pool_before"] == "HttpPool(sync=False, async=False)"
    redis_ids = {r["redis_client_id"] for r in reports}
    assert len(redis_ids) == CHILDREN
    assert min(redis_ids) > opened_before_fork  # no child used a connection of the parent
    # The parent is untouched by its children: same id, still answering.
    assert used_client.worker_id == parent_id
    assert used_client.generate("still here").metadata.worker_id == parent_id


def test_a_configured_worker_id_gets_the_childs_pid(
    redis_server: RedisProcess, fake_llm: FakeLLMServer
) -> None:
    config = FlexiAIConfig(
        providers=[provider_config(fake_llm, "openai", priority=1)],
        sync=sync_config_for(redis_server, worker_id="web"),
    )
    with FlexiAI(config) as client:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report and leave without running the parent's cleanup
            try:
                os.write(write, client.worker_id.encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            child_id = pipe.read().decode()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert client.worker_id == "web"
        assert child_id == f"web-{pid}"
