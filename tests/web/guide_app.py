"""The deployment guide's "Example 1: FastAPI with Multiple Workers": a module-level client.

As the guide writes it, except what the test adds (marked): the Redis port and the
providers' base_url; Redis timeouts and a recovery timeout generous enough that a busy
test machine neither trips the store's 0.25 s socket timeout (a worker would fall back to
local breakers) nor lets the breaker half-open during the test; the worker id in the
reply; and a startup hook that records each worker's id in a file, so the test counts
workers without depending on how gunicorn spreads connections. Run by
tests/web/test_guide_app_workers.py under ``gunicorn --preload`` and ``uvicorn --workers``.
"""

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from flexiai import FlexiAI
from flexiai.models import CircuitBreakerConfig, FlexiAIConfig, ProviderConfig, SyncConfig

FAKE = os.environ["GUIDE_FAKE_LLM"]  # added by the test

app = FastAPI()

# Initialize once at module level (shared across requests)
config = FlexiAIConfig(
    providers=[
        ProviderConfig(
            name="openai",
            api_key="sk-...",
            model="gpt-4",
            priority=1,
            base_url=f"{FAKE}/p/openai/v1",  # added by the test
        ),
        ProviderConfig(
            name="anthropic",
            api_key="sk-ant-...",
            model="claude-3-sonnet-20240229",
            priority=2,
            base_url=f"{FAKE}/p/anthropic",  # added by the test
        ),
    ],
    sync=SyncConfig(
        enabled=True,
        backend="redis",
        redis_host="localhost",
        redis_port=int(os.environ["GUIDE_REDIS_PORT"]),  # added by the test
        redis_socket_timeout=10,  # added by the test
        redis_socket_connect_timeout=10,  # added by the test
    ),
    circuit_breaker=CircuitBreakerConfig(recovery_timeout=3600),  # added by the test
)

client = FlexiAI(config=config)


@app.post("/generate")
async def generate(prompt: str) -> dict[str, Any]:
    response = client.generate(prompt=prompt, temperature=0.7)
    # worker_id added by the test
    return {"response": response.content, "worker_id": response.metadata.worker_id}


@app.get("/health")
async def health() -> dict[str, Any]:
    manager = client._sync_manager
    sync_healthy = manager.backend.health_check() if manager else False
    return {
        "status": "healthy",
        "sync_enabled": manager is not None,
        "sync_healthy": sync_healthy,
    }


@app.on_event("startup")  # added by the test
async def record_worker() -> None:
    Path(os.environ["GUIDE_WORKER_IDS"], str(os.getpid())).write_text(client.worker_id)


@app.on_event("shutdown")
async def shutdown() -> None:
    client.close()
