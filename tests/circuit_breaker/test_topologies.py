"""The backend on every topology it supports: TLS, an ACL user, Cluster, Sentinel, IAM."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import pytest

from flexiai.circuit_breaker._machine import EventType, Op
from flexiai.circuit_breaker._record import BreakerRecord, CircuitState
from flexiai.circuit_breaker._wire import SyncEvent
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend, state_key
from flexiai.exceptions import StateStoreError
from flexiai.models import SyncConfig
from flexiai_dev.servers import (
    ACL_CLUSTER_COMMANDS,
    ACL_COMMANDS,
    ClusterGroup,
    RedisProcess,
    SentinelGroup,
    acl_setuser_line,
)
from tests.circuit_breaker.conftest import policy, wait_until
from tests.support.redis_fixtures import AclServer, sync_config_for

if TYPE_CHECKING:
    from redis.cluster import RedisCluster

# How Redis words an ACL refusal: of a command, inside a script, and of a PING.
DENIED = "(?i)no permissions|can't run|can't publish|PING refused"


def round_trip(backend: RedisSyncBackend, provider: str = "openai") -> None:
    """load, transition, and an event through a subscriber of the same backend."""
    events: queue.Queue[SyncEvent] = queue.Queue()
    connected: list[bool] = []
    backend.subscribe(events.put, lambda: connected.append(True))
    wait_until(lambda: connected, what="subscriber connected")
    assert backend.load([provider]).records[provider].version == 0
    result = backend.transition(provider, Op.FAILURE, policy(), "w-topology")
    assert result.event is EventType.FAILURE
    assert events.get(timeout=5).record == result.record
    assert backend.load([provider]).records[provider] == result.record
    assert backend.health_check() is True
    assert provider in backend.list_providers()


# -- TLS -----------------------------------------------------------------------------------


def test_tls_with_the_ca(
    tls_redis: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    backend = make_backend(sync_config_for(tls_redis))
    assert backend.describe().startswith("rediss://127.0.0.1:")
    round_trip(backend)


def test_tls_by_url(tls_redis: RedisProcess, make_backend: Callable[..., RedisSyncBackend]) -> None:
    config = sync_config_for(
        tls_redis, redis_ssl=False, redis_url=f"rediss://127.0.0.1:{tls_redis.port}/0"
    )
    round_trip(make_backend(config))


def test_tls_without_the_ca_fails_verification(
    tls_redis: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    backend = make_backend(sync_config_for(tls_redis, redis_ssl_ca_certs=None))
    with pytest.raises(StateStoreError, match=r"(?i)certificate"):
        backend.load(["openai"])
    assert backend.health_check() is False


def test_plain_connection_to_a_tls_port_fails_fast(
    tls_redis: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    backend = make_backend(sync_config_for(tls_redis, redis_ssl=False))
    with pytest.raises(StateStoreError):
        backend.load(["openai"])


# -- ACL -----------------------------------------------------------------------------------


def exercise(backend: RedisSyncBackend, acl: AclServer) -> None:
    """Every command the backend sends, each at least once."""
    with acl.server.client() as admin:
        admin.script_flush()  # so EVALSHA meets NOSCRIPT and needs SCRIPT LOAD
        admin.set(state_key("flexiai", "garbage", False), "junk")
    backend.load(["openai"])  # TIME (the clock offset), MGET
    backend.transition("garbage", Op.FAILURE, policy(), "w")  # TIME, GET, SET, PUBLISH
    assert backend.load(["garbage"]).records["garbage"].run == 1  # MGET
    assert "garbage" in backend.list_providers()
    if not backend.health_check():
        raise StateStoreError("PING refused")
    pubsub = backend._client().pubsub()
    try:
        pubsub.subscribe("flexiai:events")
        pubsub.get_message(timeout=1)
    finally:
        pubsub.close()


def test_the_least_privilege_user_can_do_everything_the_backend_needs(
    acl_redis: AclServer, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    backend = make_backend(sync_config_for(acl_redis))
    round_trip(backend)
    exercise(backend, acl_redis)


def test_the_user_cannot_leave_its_key_pattern(
    acl_redis: AclServer, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    outside = make_backend(sync_config_for(acl_redis, key_prefix="elsewhere"))
    with pytest.raises(StateStoreError, match=DENIED):
        outside.transition("openai", Op.FAILURE, policy(), "w")
    other_channel = make_backend(sync_config_for(acl_redis, channel="elsewhere:events"))
    with pytest.raises(StateStoreError, match=DENIED):
        other_channel.transition("openai", Op.FAILURE, policy(), "w")


@pytest.mark.parametrize("command", ACL_COMMANDS)
def test_every_acl_rule_is_needed(
    acl_redis: AclServer, make_backend: Callable[..., RedisSyncBackend], command: str
) -> None:
    with acl_redis.server.client() as admin:
        admin.execute_command("ACL", "SETUSER", acl_redis.username, f"-{command}")
    backend = make_backend(sync_config_for(acl_redis))
    with pytest.raises(Exception, match=DENIED):
        exercise(backend, acl_redis)


def test_acl_line_is_the_documented_one() -> None:
    assert acl_setuser_line("PASSWORD") == (
        "flexiai reset on >PASSWORD ~flexiai:* ~{flexiai}:* resetchannels &flexiai:events "
        "-@all +evalsha +script|load +time +get +set +mget +publish +subscribe +ping +scan"
    )


# -- Cluster -------------------------------------------------------------------------------


@pytest.fixture
def cluster_config(redis_cluster: ClusterGroup) -> SyncConfig:
    unique = uuid.uuid4().hex[:8]
    return sync_config_for(redis_cluster, key_prefix=f"t{unique}", channel=f"t{unique}:events")


def test_cluster_keys_share_one_slot(
    cluster_config: SyncConfig, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    backend = make_backend(cluster_config)
    prefix = cluster_config.key_prefix
    assert backend.key_for("openai") == f"{{{prefix}}}:state:openai"
    # A cluster config makes a RedisCluster client, which can name a key's slot.
    client = cast("RedisCluster", backend._client())
    slots = {client.keyslot(backend.key_for(p)) for p in ("openai", "anthropic", "gemini")}
    assert len(slots) == 1
    assert backend.describe().endswith("(cluster)")


def _cluster_commands(cluster: ClusterGroup) -> dict[str, int]:
    totals: dict[str, int] = {}
    for node in cluster.nodes:
        with node.client() as admin:
            for name, stats in admin.info("commandstats").items():
                command = name.removeprefix("cmdstat_")
                totals[command] = totals.get(command, 0) + int(stats["calls"])
    return totals


def test_cluster_round_trip(
    cluster_config: SyncConfig,
    make_backend: Callable[..., RedisSyncBackend],
    redis_cluster: ClusterGroup,
) -> None:
    backend = make_backend(cluster_config)
    round_trip(backend)
    backend.transition("anthropic", Op.TRIP, policy(), "w", open_for=3000)
    before = _cluster_commands(redis_cluster)
    snapshot = backend.load(["openai", "anthropic", "gemini"])  # one MGET, three keys
    after = _cluster_commands(redis_cluster)
    assert snapshot.records["anthropic"].state is CircuitState.OPEN
    assert snapshot.records["openai"].run == 1
    # The keys share the prefix's hash tag: a plain MGET, sent once, to the node holding them.
    assert after.get("mget", 0) - before.get("mget", 0) == 1
    assert backend.list_providers() == ["anthropic", "openai"]


def test_cluster_events_reach_a_subscriber_on_another_backend(
    cluster_config: SyncConfig, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    listening = make_backend(cluster_config)
    worker = RedisSyncBackend(cluster_config)
    try:
        events: queue.Queue[SyncEvent] = queue.Queue()
        connected: list[bool] = []
        listening.subscribe(events.put, lambda: connected.append(True))
        wait_until(lambda: connected)
        result = worker.transition("openai", Op.TRIP, policy(), "w-cluster", open_for=1000)
        event = events.get(timeout=5)
        assert (event.type, event.record) == (EventType.OPENED, result.record)
    finally:
        worker.close()


@pytest.mark.parametrize("missing", [None, *ACL_CLUSTER_COMMANDS])
def test_the_least_privilege_user_in_a_cluster(
    redis_cluster: ClusterGroup, make_backend: Callable[..., RedisSyncBackend], missing: str | None
) -> None:
    unique = uuid.uuid4().hex[:8]
    user, password, prefix, channel = f"u{unique}", "cluster-pw", f"p{unique}", f"p{unique}:ev"
    rules = acl_setuser_line(
        password, user=user, prefix=prefix, channel=channel, cluster=True
    ).split()
    if missing is not None:
        rules.remove(f"+{missing}")
    for node in redis_cluster.nodes:
        with node.client() as admin:
            admin.execute_command("ACL", "SETUSER", *rules)
    try:
        config = sync_config_for(
            redis_cluster,
            redis_username=user,
            redis_password=password,
            key_prefix=prefix,
            channel=channel,
        )
        backend = make_backend(config)
        if missing is None:
            round_trip(backend)
        else:
            with pytest.raises(StateStoreError):
                backend.load(["openai"])
    finally:
        for node in redis_cluster.nodes:
            with node.client() as admin:
                admin.execute_command("ACL", "DELUSER", user)


def test_a_supplied_cluster_client_gets_hash_tagged_keys(
    redis_cluster: ClusterGroup, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    from redis.cluster import RedisCluster

    client = RedisCluster(host=redis_cluster.host, port=redis_cluster.port, protocol=2)
    try:
        backend = make_backend(sync_config_for(redis_cluster, redis_cluster=False), client=client)
        assert backend.key_for("openai") == "{flexiai}:state:openai"
        prefix = uuid.uuid4().hex[:8]
        tagged = make_backend(sync_config_for(redis_cluster, key_prefix=prefix), client=client)
        assert tagged.transition("openai", Op.FAILURE, policy(), "w").record.run == 1
        assert client.exists(f"{{{prefix}}}:state:openai") == 1
        assert tagged.load(["openai", "gemini"]).records["openai"].run == 1
    finally:
        client.close()


# -- Sentinel ------------------------------------------------------------------------------


def test_sentinel_round_trip(
    sentinel_redis: SentinelGroup, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    config = sync_config_for(sentinel_redis, key_prefix=f"s{uuid.uuid4().hex[:6]}")
    round_trip(make_backend(config))


def test_sentinel_password_is_required_and_used(
    sentinel_redis: SentinelGroup, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    wrong = make_backend(sync_config_for(sentinel_redis, redis_sentinel_password="wrong"))
    with pytest.raises(StateStoreError):
        wrong.load(["openai"])


def test_sentinel_failover_reaches_the_new_master(
    sentinel_redis: SentinelGroup, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    backend = make_backend(sync_config_for(sentinel_redis, key_prefix="failover"))
    before = backend.transition("openai", Op.FAILURE, policy(), "w").record
    old_port = sentinel_redis.master_port()
    sentinel_redis.sentinel_client(0).execute_command(
        "SENTINEL", "FAILOVER", sentinel_redis.service
    )
    errors: list[Exception] = []
    deadline = time.monotonic() + 30
    result = None
    while time.monotonic() < deadline:
        try:
            result = backend.transition("openai", Op.FAILURE, policy(failure_threshold=50), "w")
        except StateStoreError as exc:  # anything else fails the test
            errors.append(exc)
            time.sleep(0.05)
            continue
        if sentinel_redis.master_port() != old_port:
            break
        time.sleep(0.05)
    assert result is not None
    new_port = sentinel_redis.master_port()
    assert new_port != old_port
    # The write went to the new master, and the record replicated before the switch.
    new_master = next(
        n for n in (sentinel_redis.master, sentinel_redis.replica) if n.port == new_port
    )
    with new_master.client() as client:
        assert client.info("replication")["role"] == "master"
        stored = BreakerRecord.from_json(client.get("failover:state:openai"))
    assert stored.version > before.version
    assert stored.run >= before.run + 1
