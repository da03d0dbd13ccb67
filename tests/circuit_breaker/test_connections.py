"""How SyncConfig becomes a redis-py client: URLs, TLS, timeouts, retry, the shared cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import redis
from redis.backoff import NoBackoff
from redis.sentinel import SentinelConnectionPool

from flexiai.circuit_breaker.stores import connections
from flexiai.models import SyncConfig


def pool_of(lease: connections.ClientLease) -> redis.ConnectionPool:
    """The client's connection pool: redis-py's, which RedisClient does not describe."""
    return cast(redis.Redis, lease.client).connection_pool


def kwargs_of(lease: connections.ClientLease) -> dict[str, Any]:
    return pool_of(lease).connection_kwargs


@pytest.fixture
def lease_of() -> Iterator[Callable[..., connections.ClientLease]]:
    leases: list[connections.ClientLease] = []

    def acquire(**settings: Any) -> connections.ClientLease:
        lease = connections.acquire(SyncConfig(**settings))
        leases.append(lease)
        return lease

    yield acquire
    for lease in leases:
        lease.release()


def test_request_path_settings(lease_of: Callable[..., connections.ClientLease]) -> None:
    kwargs = kwargs_of(lease_of(redis_socket_timeout=0.3, redis_socket_connect_timeout=0.7))
    assert kwargs["socket_timeout"] == 0.3
    assert kwargs["socket_connect_timeout"] == 0.7
    assert kwargs["protocol"] == 2
    assert kwargs["health_check_interval"] == connections.HEALTH_CHECK_INTERVAL
    retry = kwargs["retry"]
    assert retry.get_retries() == 1
    assert isinstance(retry._backoff, NoBackoff)
    assert redis.ConnectionError in retry._supported_errors
    assert redis.TimeoutError not in retry._supported_errors


def test_fields_build_a_tls_client(lease_of: Callable[..., connections.ClientLease]) -> None:
    kwargs = kwargs_of(
        lease_of(
            redis_host="cache.example",
            redis_port=6380,
            redis_db=2,
            redis_username="app",
            redis_password="pw",
            redis_ssl=True,
            redis_ssl_ca_certs="/ca.pem",
        )
    )
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.example", 6380, 2)
    assert (kwargs["username"], kwargs["password"]) == ("app", "pw")
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_ca_certs"] == "/ca.pem"
    assert kwargs["ssl_check_hostname"] is True


@pytest.mark.parametrize("scheme", ["rediss", "valkeys"])
def test_a_url_wins_over_fields_and_its_query_over_defaults(
    lease_of: Callable[..., connections.ClientLease], scheme: str
) -> None:
    lease = lease_of(
        redis_url=f"{scheme}://user:s3cret@u.example:7000/4?socket_timeout=2",
        redis_host="ignored",
        redis_password="ignored",
    )
    kwargs = kwargs_of(lease)
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("u.example", 7000, 4)
    assert (kwargs["username"], kwargs["password"]) == ("user", "s3cret")
    assert kwargs["socket_timeout"] == 2.0
    assert kwargs["ssl_cert_reqs"] == "required"
    assert pool_of(lease).connection_class is redis.SSLConnection


def test_a_url_without_credentials_keeps_the_password_field(
    lease_of: Callable[..., connections.ClientLease],
) -> None:
    kwargs = kwargs_of(lease_of(redis_url="valkey://u.example:7000", redis_password="pw"))
    assert kwargs["password"] == "pw" and "ssl_cert_reqs" not in kwargs


def test_unix_socket_url(lease_of: Callable[..., connections.ClientLease]) -> None:
    kwargs = kwargs_of(lease_of(redis_url="unix:///run/redis.sock?db=3"))
    assert kwargs["path"] == "/run/redis.sock" and kwargs["db"] == 3


def test_sentinel_settings(lease_of: Callable[..., connections.ClientLease]) -> None:
    lease = lease_of(
        redis_sentinels=["10.0.0.1:26379", "[::1]:26380"],
        redis_sentinel_service="primary",
        redis_password="data-pw",
        redis_sentinel_password="sentinel-pw",
        redis_ssl=True,
    )
    pool = cast(SentinelConnectionPool, pool_of(lease))  # a sentinel config makes one
    assert pool.service_name == "primary"
    assert pool.connection_kwargs["password"] == "data-pw"
    sentinels = pool.sentinel_manager.sentinels
    addresses = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ]
    assert addresses == [("10.0.0.1", 26379), ("::1", 26380)]
    sentinel_kwargs = sentinels[0].connection_pool.connection_kwargs
    assert sentinel_kwargs["password"] == "sentinel-pw"
    assert sentinel_kwargs["socket_timeout"] == SyncConfig().redis_socket_timeout
    assert sentinel_kwargs["ssl_cert_reqs"] == "required"


def test_iam_uses_a_credential_provider_and_tls(
    lease_of: Callable[..., connections.ClientLease],
) -> None:
    from flexiai.circuit_breaker.stores._iam import ElastiCacheIAMProvider

    kwargs = kwargs_of(
        lease_of(
            redis_iam_auth=True,
            redis_username="iam-user",
            redis_iam_cache_name="c",
            redis_iam_region="eu-central-1",
            redis_iam_serverless=False,
        )
    )
    provider = kwargs["credential_provider"]
    assert isinstance(provider, ElastiCacheIAMProvider)
    assert (provider.user, provider.cache_name, provider.region, provider.serverless) == (
        "iam-user",
        "c",
        "eu-central-1",
        False,
    )
    assert kwargs.get("username") is None and kwargs.get("password") is None
    assert kwargs["ssl_cert_reqs"] == "required"


def test_one_client_per_settings_released_by_the_last_user() -> None:
    config = SyncConfig(redis_port=6390)
    first, second = connections.acquire(config), connections.acquire(config.model_copy())
    other = connections.acquire(SyncConfig(redis_port=6390, redis_password="different"))
    try:
        assert first.client is second.client
        assert other.client is not first.client
        assert connections.shared_client_count() == 2
        first.release()
        first.release()
        assert connections.shared_client_count() == 2
        second.release()
        assert connections.shared_client_count() == 1
    finally:
        for lease in (first, second, other):
            lease.release()
    assert connections.shared_client_count() == 0


def test_settings_key_hides_secrets() -> None:
    key = connections.settings_key(SyncConfig(redis_password="hunter2"))
    assert "hunter2" not in key
    assert key != connections.settings_key(SyncConfig(redis_password="hunter3"))
    assert key == connections.settings_key(SyncConfig(redis_password="hunter2", channel="x"))
