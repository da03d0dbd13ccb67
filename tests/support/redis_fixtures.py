"""pytest fixtures for real Redis servers (see ``redis_servers``); skipped when no binary.

    redis_server     a fresh standalone server per test (about 25 ms)
    tls_redis        a fresh TLS-only server per test (certificates made once per session)
    acl_redis        a fresh server with the backend's least-privilege ACL user
    sentinel_redis   master + replica + 3 sentinels, per module (a failover test may move
                     the master: ask the group, never assume a port)
    redis_cluster    3 masters, per session: use a unique key_prefix per test

``sync_config_for(server, **overrides)`` builds the ``SyncConfig`` that reaches any of them.
Tests that use one of these fixtures get the ``redis_server`` mark, so
``-m "not redis_server"`` runs everything that needs no server binary.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from flexiai.models import SyncConfig
from flexiai_dev.servers import (
    BinaryMissing,
    ClusterGroup,
    RedisProcess,
    SentinelGroup,
    TLSFiles,
    acl_setuser_line,
    start_cluster,
    start_sentinel_group,
    start_server,
    tls_files,
)

__all__ = ["AclServer", "sync_config_for"]


SERVER_FIXTURES = frozenset(
    {"redis_server", "tls_redis", "acl_redis", "sentinel_redis", "redis_cluster"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.redis_server)


@dataclass
class AclServer:
    """A server whose default user has every right, plus the backend's restricted user."""

    server: RedisProcess
    username: str
    password: str
    rules: str

    @property
    def port(self) -> int:
        return self.server.port


@contextlib.contextmanager
def _skip_if_missing() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        try:
            yield stack
        except BinaryMissing as exc:
            pytest.skip(str(exc))


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    with _skip_if_missing() as stack:
        server = start_server(stack)
        yield server


@pytest.fixture(scope="session")
def redis_tls_files() -> Iterator[TLSFiles]:
    with _skip_if_missing(), tls_files() as files:
        yield files


@pytest.fixture
def tls_redis(redis_tls_files: TLSFiles) -> Iterator[RedisProcess]:
    with _skip_if_missing() as stack:
        yield start_server(stack, tls=redis_tls_files, name="tls")


@pytest.fixture
def acl_redis() -> Iterator[AclServer]:
    with _skip_if_missing() as stack:
        server = start_server(stack, name="acl")
        password = secrets.token_hex(8)
        rules = acl_setuser_line(password)
        with server.client() as admin:
            admin.execute_command("ACL", "SETUSER", *rules.split())
        yield AclServer(server, rules.split()[0], password, rules)


@pytest.fixture(scope="module")
def sentinel_redis() -> Iterator[SentinelGroup]:
    with _skip_if_missing() as stack:
        yield start_sentinel_group(stack)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterGroup]:
    with _skip_if_missing() as stack:
        yield start_cluster(stack)


def sync_config_for(server: Any, **overrides: Any) -> SyncConfig:
    """The SyncConfig that reaches ``server`` (any fixture's value), plus ``overrides``."""
    settings: dict[str, Any] = {"enabled": True, "backend": "redis", "mode": "pubsub"}
    if isinstance(server, SentinelGroup):
        settings.update(
            redis_sentinels=server.sentinel_addresses,
            redis_sentinel_service=server.service,
            redis_password=server.password,
            redis_sentinel_password=server.sentinel_password,
        )
    elif isinstance(server, ClusterGroup):
        settings.update(redis_host=server.host, redis_port=server.port, redis_cluster=True)
    elif isinstance(server, AclServer):
        settings.update(
            redis_host=server.server.host,
            redis_port=server.port,
            redis_username=server.username,
            redis_password=server.password,
        )
    else:
        settings.update(redis_host=server.host, redis_port=server.port)
        if server.password:
            settings["redis_password"] = server.password
        if server.tls is not None:
            settings.update(redis_ssl=True, redis_ssl_ca_certs=server.tls.ca_cert)
    settings.update(overrides)
    return SyncConfig(**settings)
