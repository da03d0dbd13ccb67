"""Closing a client frees it (issue 12, item 7): no client, provider or httpx client outlives
``close()``, so a create/close loop reaches a plateau (bench/client_memory.py measures RSS).
Behaviour, not numbers: weak references die once the last strong one is gone."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest

from flexiai import FlexiAI
from flexiai.models import FlexiAIConfig
from flexiai.providers.transport import HttpPool, shared_ssl_context
from flexiai.testing import FakeLLMServer
from tests.support.llm_fixtures import provider_config


def config(fake_llm: FakeLLMServer) -> FlexiAIConfig:
    return FlexiAIConfig(
        providers=[provider_config(fake_llm, name) for name in ("openai", "anthropic")]
    )


def references(client: FlexiAI) -> list[weakref.ref[Any]]:
    refs: list[weakref.ref[Any]] = [weakref.ref(client)]
    refs += [weakref.ref(p) for p in client._providers.values()]  # what it built, to watch
    pool = client._http_pool
    if pool is not None:
        refs.append(weakref.ref(pool))
    return refs


def test_a_closed_client_is_freed_with_everything_it_built(fake_llm: FakeLLMServer) -> None:
    client = FlexiAI(config(fake_llm))
    client.generate("hi")
    refs = references(client)
    assert len(refs) == 3  # the client, the provider that answered, the pool

    client.close()
    del client
    gc.collect()

    assert [r() for r in refs] == [None] * len(refs)


@pytest.mark.anyio
async def test_a_closed_async_client_is_freed_too(fake_llm: FakeLLMServer) -> None:
    client = FlexiAI(config(fake_llm))
    await client.agenerate("hi")
    refs = references(client)

    await client.aclose()
    del client
    gc.collect()

    assert [r() for r in refs] == [None] * len(refs)


def test_a_pools_httpx_clients_are_freed_on_close(fake_llm: FakeLLMServer) -> None:
    pool = HttpPool()
    http = weakref.ref(pool.sync())

    pool.close()
    gc.collect()

    assert http() is None


def test_every_pool_shares_one_tls_context() -> None:
    """Loading the CA bundle once per process, not once per client: the per-client cost
    that made RSS grow across clients."""
    assert shared_ssl_context() is shared_ssl_context()
