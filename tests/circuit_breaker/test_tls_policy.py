"""TLS verification cannot be turned off from redis_url, only by a named setting that says
so; a refused certificate is named as such when the worker falls back (issue 11)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from flexiai.circuit_breaker import StateSyncManager
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
from flexiai.models import SyncConfig
from flexiai_dev.servers import RedisProcess
from tests.support.redis_fixtures import sync_config_for


@pytest.mark.parametrize(
    "query",
    [
        "ssl_cert_reqs=none",
        "ssl_check_hostname=false",
        "SSL_CERT_REQS=optional",
        "ssl_ca_certs=/tmp/evil.pem",
    ],
)
def test_redis_url_cannot_lower_tls_verification(query: str) -> None:
    with pytest.raises(ValidationError, match="redis_url may not set") as info:
        SyncConfig(enabled=True, redis_url=f"rediss://127.0.0.1:6380/0?{query}")
    assert "redis_ssl_insecure" in str(info.value)


def test_other_url_options_are_still_accepted() -> None:
    config = SyncConfig(enabled=True, redis_url="rediss://127.0.0.1:6380/0?client_name=worker")
    assert config.redis_url is not None


def test_a_refused_certificate_is_named_in_the_fallback_warning(
    tls_redis: RedisProcess,
    make_backend: Callable[..., RedisSyncBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = make_backend(sync_config_for(tls_redis, redis_ssl_ca_certs=None))
    manager = StateSyncManager(backend, mode="snapshot")
    with caplog.at_level(logging.WARNING, logger="flexiai.sync.manager"):
        assert manager.refresh() is False
    (warning,) = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert "TLS certificate refused" in warning


def test_redis_ssl_insecure_connects_without_the_ca_and_says_so_once(
    tls_redis: RedisProcess,
    make_backend: Callable[..., RedisSyncBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = sync_config_for(tls_redis, redis_ssl_ca_certs=None, redis_ssl_insecure=True)
    with caplog.at_level(logging.WARNING, logger="flexiai.sync.redis"):
        backend = make_backend(config)
        assert backend.health_check() is True
        assert backend.load(["openai"]).invalid == ()
    warnings = [r.getMessage() for r in caplog.records if "not verified" in r.getMessage()]
    assert len(warnings) == 1
