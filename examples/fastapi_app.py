"""flexiai in a FastAPI service, run by gunicorn with uvicorn workers.

Each worker process builds its client in the lifespan (after gunicorn forked it, with or
without ``--preload``) and closes it on shutdown; async endpoints call ``agenerate``, so a
slow provider never holds up a worker's other requests. The configuration comes from the
``FLEXIAI_*`` environment (see docs/web-services.md)::

    export FLEXIAI_PROVIDER_1_NAME=openai FLEXIAI_PROVIDER_1_MODEL=gpt-4o-mini
    export FLEXIAI_PROVIDER_1_API_KEY=sk-...
    export FLEXIAI_SYNC_ENABLED=true FLEXIAI_SYNC_REDIS_URL=redis://localhost:6379/0
    gunicorn examples.fastapi_app:app --workers 4 \\
        --worker-class uvicorn_worker.UvicornWorker --bind 127.0.0.1:8000

Add ``--preload`` to import the app once in the master before forking: it works the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from flexiai import FlexiAI
from flexiai.exceptions import AllProvidersFailedError, DeadlineExceededError


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One client per worker process, for the process's lifetime: it holds the HTTP and
    # Redis connection pools. `async with` awaits the close of both on shutdown.
    async with FlexiAI() as client:
        app.state.flexiai = client
        yield


app = FastAPI(title="flexiai example", lifespan=lifespan)


def _client(request: Request) -> FlexiAI:
    client: FlexiAI = request.app.state.flexiai
    return client


class GenerateRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=100_000)
    system: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=100_000)


@app.post("/generate")
async def generate(body: GenerateRequest, request: Request) -> dict[str, Any]:
    """``agenerate`` in an async endpoint: the worker's event loop keeps serving while
    this request waits on a provider (``generate`` here would block every request of
    the worker for as long as the provider takes)."""
    try:
        response = await _client(request).agenerate(
            body.prompt, system=body.system, max_tokens=body.max_tokens
        )
    except (AllProvidersFailedError, DeadlineExceededError) as exc:
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
        raise HTTPException(503, detail=str(exc), headers=headers) from exc
    meta = response.metadata
    return {
        "content": response.content,
        "provider": meta.provider,
        "failovers": meta.failovers,
        "worker_id": meta.worker_id,
    }


@app.get("/health")
def health(request: Request) -> dict[str, Any]:
    """Every provider's breaker as the fleet shares it, and this worker's link to Redis.

    A plain ``def``: FastAPI runs it in a thread, because reading the shared state is a
    blocking Redis round trip. It answers 200 whenever the worker is up; a breaker that is
    OPEN is reported, not treated as this worker being unhealthy (the others take over).
    """
    client = _client(request)
    providers = client.get_provider_status()
    store = client.store_health()
    return {
        "worker_id": client.worker_id,
        "providers": {
            name: {"state": status.state.value, "healthy": status.healthy}
            for name, status in providers.items()
        },
        "store": {"backend": store.backend, "shared": store.shared, "healthy": store.healthy},
    }
