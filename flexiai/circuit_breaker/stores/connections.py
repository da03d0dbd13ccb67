"""redis-py clients built from a ``SyncConfig``, one per process per connection settings.

``acquire(config)`` returns a lease on the process's client for those settings, building it
on first use; the client is closed when the last lease is released. Several FlexiAI clients
in one process, and warm Lambda invocations, therefore share one connection pool. Nothing
here opens a socket before the first command, except ``RedisCluster``, which discovers the
topology when it is built: that is why building waits for the first ``acquire``.

Topologies: ``redis_url`` (``redis://``, ``rediss://``, ``valkey://``, ``valkeys://``,
``unix://``; credentials and query options in the URL win over the fields), host/port/db,
TLS, Sentinel (``redis_sentinels`` + ``redis_sentinel_service``), Cluster
(``redis_cluster``) and ElastiCache IAM (``redis_iam_auth``, implies TLS). hiredis parses
replies whenever it is installed.

Settings chosen for a request path (redis-py's defaults block ~59 s on a frozen server):

- ``socket_timeout`` and ``socket_connect_timeout`` from the config (0.25 s and 0.5 s).
- ``Retry(NoBackoff(), 1)`` on ``ConnectionError`` only. One immediate retry replaces a
  pooled connection that died while idle (server restart, failover, an idle connection
  dropped by Lambda or a NAT) without failing the request. Timeouts are not retried, so a
  frozen server costs one ``socket_timeout``; a backoff would only delay a caller that
  falls back to local breakers anyway. If the server executed a command and then died
  before replying, the retry runs it again: for a breaker that is at most one extra
  failure count or one probe lease, and leases expire.
- ``health_check_interval``: a connection idle for longer is PINGed before reuse.
- ``socket_keepalive``: the subscriber's idle connection notices a dead peer.
- RESP2 (``protocol=2``). redis-py 8 defaults to RESP3, which adds a HELLO handshake and
  needs Redis 6+; every server, proxy and fakeredis speaks RESP2, replies have the same
  shape in every topology, and RESP3's extras (client-side caching, push notifications)
  are unused here: the subscriber has a connection of its own, and Lua replies are
  converted as RESP2 either way.

A forked child starts with no shared client: the parent's are its connections (redis-py
would also notice the new pid, but only pool by pool), and a lease taken in the parent
releases nothing in the child. Backends copied into the child drop their lease there and
acquire a client of the child's own on first use (see ``flexiai._fork``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import SecretStr

from flexiai._fork import forget_parent_module_state
from flexiai.exceptions import ConfigError
from flexiai.models import SyncConfig

logger = logging.getLogger("flexiai.sync.redis")

__all__ = [
    "HEALTH_CHECK_INTERVAL",
    "ClientLease",
    "ClusterClient",
    "RedisClient",
    "Script",
    "acquire",
    "client_settings",
    "describe",
    "host_port",
    "iam_region",
    "is_cluster_client",
    "require_redis",
    "sentinel_options",
    "settings_key",
    "shared_client_count",
]

#: Seconds a pooled connection may sit idle before it is PINGed on reuse.
HEALTH_CHECK_INTERVAL = 30

_CONNECTION_FIELDS = (
    "redis_url",
    "redis_host",
    "redis_port",
    "redis_db",
    "redis_username",
    "redis_password",
    "redis_ssl",
    "redis_ssl_ca_certs",
    "redis_socket_timeout",
    "redis_socket_connect_timeout",
    "redis_cluster",
    "redis_sentinels",
    "redis_sentinel_service",
    "redis_sentinel_password",
    "redis_iam_auth",
    "redis_iam_cache_name",
    "redis_iam_region",
    "redis_iam_serverless",
)

_URL_SCHEMES = {"valkey": "redis", "valkeys": "rediss"}


def settings_key(config: SyncConfig) -> str:
    """A digest of every setting that shapes the connection (secrets included, so two
    passwords never share a pool, but only as a hash)."""
    parts = []
    for name in _CONNECTION_FIELDS:
        value: Any = getattr(config, name, None)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        parts.append(f"{name}={value!r}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def describe(config: SyncConfig) -> str:
    """``redis://host:port/db``, ``sentinel://h:p,h:p/service`` ... never a password."""
    if config.redis_sentinels:
        text = f"sentinel://{','.join(config.redis_sentinels)}/{config.redis_sentinel_service}"
    elif config.redis_url is not None:
        url = urlsplit(config.redis_url.get_secret_value())
        if url.scheme == "unix":
            text = f"unix://{url.path}"
        else:
            host = url.hostname or ""
            host = f"[{host}]" if ":" in host else host
            port = f":{url.port}" if url.port else ""
            text = f"{url.scheme}://{host}{port}{url.path or ''}"
    else:
        scheme = "rediss" if config.redis_ssl or config.redis_iam_auth else "redis"
        text = f"{scheme}://{config.redis_host}:{config.redis_port}/{config.redis_db}"
    if config.redis_cluster:
        text += " (cluster)"
    if config.redis_iam_auth:
        text += " (iam)"
    return text


def require_redis() -> None:
    """Fail now, naming the setting and the fix, if redis-py cannot be imported: without it
    every store call would fail and the fleet would silently run per-process breakers.
    Looks the package up without importing it, so building a client stays cheap."""
    import importlib.util

    try:
        found = importlib.util.find_spec("redis") is not None
    except (ImportError, ValueError):  # a blocked import, or sys.modules["redis"] = None
        found = False
    if not found:
        raise ConfigError(
            "sync.backend='redis' (FLEXIAI_SYNC_BACKEND) with sync.enabled "
            "(FLEXIAI_SYNC_ENABLED) needs the redis package, which is not installed: "
            "pip install redis (or pip install 'flexiai[redis]', which adds hiredis), or "
            "set sync.enabled=False for per-process breakers"
        )


def iam_region(config: SyncConfig) -> str:
    region = (
        config.redis_iam_region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
    )
    if not region:
        raise ConfigError("redis_iam_auth needs a region: set redis_iam_region or AWS_REGION")
    return region


def is_cluster_client(client: Any) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


#: A stored record or a script's reply item, as redis-py returns it.
Raw = bytes | str


class Script(Protocol):
    """What ``register_script`` returns: EVALSHA, with SCRIPT LOAD on NOSCRIPT."""

    def __call__(self, keys: Sequence[str], args: Sequence[str]) -> Any: ...


class RedisClient(Protocol):
    """The part of ``redis.Redis`` / ``redis.cluster.RedisCluster`` this store uses, so a
    client brought by the caller (IAM, a custom pool, fakeredis) is checked as one. Cluster
    clients also take ``target_nodes=`` and answer ``get_node_from_key``."""

    def mget(self, keys: Sequence[str], *args: str) -> list[Raw | None]: ...

    def time(self, **options: Any) -> tuple[int, int]: ...

    def ping(self, **options: Any) -> Any: ...

    def pubsub(self, **options: Any) -> Any: ...

    def register_script(self, script: str) -> Script: ...

    def scan_iter(self, **options: Any) -> Iterator[Raw]: ...


class ClusterClient(RedisClient, Protocol):
    """A ``RedisCluster``: it can say which node holds a key."""

    def get_node_from_key(self, key: str, replica: bool = False) -> Any: ...


@dataclass
class _Shared:
    client: Any
    close: Callable[[], None]
    users: int = 0


_LOCK = threading.Lock()
_SHARED: dict[str, _Shared] = {}


@dataclass
class ClientLease:
    """One user's hold on a shared client. ``release()`` is idempotent."""

    key: str
    client: RedisClient
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        with _LOCK:
            if self._released:
                return
            self._released = True
            shared = _SHARED.get(self.key)
            if shared is None or shared.client is not self.client:
                return
            shared.users -= 1
            if shared.users > 0:
                return
            del _SHARED[self.key]
        shared.close()


def acquire(config: SyncConfig) -> ClientLease:
    """The process's client for these settings, built now if nobody holds one.

    Raises redis-py's errors (a cluster client connects while it is built) and
    ``ConfigError``.
    """
    key = settings_key(config)
    with _LOCK:
        shared = _SHARED.get(key)
        if shared is None:
            # Built under the lock: a concurrent caller wants this same client anyway, and
            # a cluster's discovery is bounded by the connect timeout.
            client, close = _build(config)
            shared = _SHARED[key] = _Shared(client, close)
        shared.users += 1
        return ClientLease(key, shared.client)


def _forget_parent_clients() -> None:
    """In a forked child: the parent's clients stay the parent's (unclosed: closing could
    end connections the parent still uses), and a lock a parent thread held at the fork
    would never be released here."""
    global _LOCK
    _LOCK = threading.Lock()
    _SHARED.clear()


forget_parent_module_state(_forget_parent_clients)


def shared_client_count() -> int:
    """How many clients this process holds open (for tests and diagnostics)."""
    with _LOCK:
        return len(_SHARED)


def client_settings(config: SyncConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Where and as whom to connect, and every connection option (timeouts, TLS, IAM
    credentials, RESP2): the keyword arguments of redis-py's clients, blocking and asyncio
    alike, so both are built from one reading of the config."""
    options: dict[str, Any] = {
        "socket_timeout": config.redis_socket_timeout,
        "socket_connect_timeout": config.redis_socket_connect_timeout,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "protocol": 2,
    }
    endpoint, url_options = _endpoint(config)
    options.update(url_options)
    if endpoint.pop("ssl"):
        # After the URL's options: nothing there may lower verification (the model rejects
        # it too); only redis_ssl_insecure does, and says so.
        insecure = config.redis_ssl_insecure
        if insecure:
            _warn_insecure(config)
        options.update(
            ssl=True,
            ssl_cert_reqs="none" if insecure else "required",
            ssl_ca_certs=config.redis_ssl_ca_certs,
            ssl_check_hostname=not insecure,
        )
    if config.redis_iam_auth:
        from flexiai.circuit_breaker.stores._iam import ElastiCacheIAMProvider

        endpoint.update(username=None, password=None)
        options["credential_provider"] = ElastiCacheIAMProvider(
            config.redis_username or "",
            config.redis_iam_cache_name or "",
            iam_region(config),
            serverless=config.redis_iam_serverless,
        )
    return endpoint, options


def _build(config: SyncConfig) -> tuple[Any, Callable[[], None]]:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    retry = Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
    endpoint, options = client_settings(config)

    if config.redis_sentinels:
        return _build_sentinel(config, endpoint, options, retry)
    if config.redis_cluster:
        from redis.cluster import RedisCluster

        endpoint.pop("db", None)
        cluster = RedisCluster(
            retry=retry,
            # Keep the configured endpoint (an ElastiCache configuration endpoint, say)
            # as the way back in when every discovered node address has changed.
            dynamic_startup_nodes=False,
            **endpoint,
            **options,
        )
        return cluster, cluster.close
    client = redis.Redis(retry=retry, **endpoint, **options)
    return client, client.close


_WARNED_INSECURE: set[str] = set()


def _warn_insecure(config: SyncConfig) -> None:
    where = describe(config)
    if where not in _WARNED_INSECURE:
        _WARNED_INSECURE.add(where)
        logger.warning(
            "redis_ssl_insecure is set: the certificate of %s is not verified; anyone on the "
            "path can read and forge the fleet's breaker state",
            where,
        )


def _endpoint(config: SyncConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Where and as whom to connect (URL over fields), and the URL's query options."""
    endpoint: dict[str, Any] = {
        "host": config.redis_host,
        "port": config.redis_port,
        "db": config.redis_db,
        "username": config.redis_username,
        "password": _secret(config.redis_password),
        "ssl": config.redis_ssl or config.redis_iam_auth,
    }
    if config.redis_url is None:
        return endpoint, {}
    from redis.connection import SSLConnection, parse_url

    scheme, _, rest = config.redis_url.get_secret_value().partition("://")
    parsed: dict[str, Any] = parse_url(  # type: ignore[no-untyped-call]
        f"{_URL_SCHEMES.get(scheme, scheme)}://{rest}"
    )
    connection_class = parsed.pop("connection_class", None)
    if connection_class is SSLConnection:
        endpoint["ssl"] = True
    if "path" in parsed:
        del endpoint["host"], endpoint["port"]
        endpoint["unix_socket_path"] = parsed.pop("path")
    for name in ("host", "port", "db", "username", "password"):
        if name in parsed:
            endpoint[name] = parsed.pop(name)
    return endpoint, parsed


def _build_sentinel(
    config: SyncConfig, endpoint: dict[str, Any], options: dict[str, Any], retry: Any
) -> tuple[Any, Callable[[], None]]:
    from redis.sentinel import Sentinel

    endpoint.pop("host", None), endpoint.pop("port", None)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [host_port(item) for item in config.redis_sentinels],
        sentinel_kwargs=sentinel_options(config, options, retry),
        retry=retry,
        **endpoint,
        **options,
    )
    client = sentinel.master_for(config.redis_sentinel_service or "")  # type: ignore[no-untyped-call]

    def close() -> None:
        client.close()
        client.connection_pool.disconnect()
        for sentinel_client in sentinel.sentinels:
            sentinel_client.close()

    return client, close


def sentinel_options(config: SyncConfig, options: dict[str, Any], retry: Any) -> dict[str, Any]:
    """How to talk to the sentinels themselves: the data connections' timeouts and TLS,
    the sentinels' own password."""
    chosen = {
        name: value
        for name, value in options.items()
        if name.startswith(("socket_", "ssl")) or name in ("protocol", "health_check_interval")
    }
    chosen.update(retry=retry, password=_secret(config.redis_sentinel_password))
    return chosen


def host_port(item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    return host.strip("[]"), int(port)


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()
