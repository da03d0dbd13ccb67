"""RedisSyncBackend against a real redis-server: laziness, keys, the shared client, errors,
faults and concurrency."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import pytest

from flexiai.circuit_breaker._machine import EventType, Op
from flexiai.circuit_breaker._record import CircuitState
from flexiai.circuit_breaker.stores import connections
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend, state_key, state_key_pattern
from flexiai.exceptions import StateStoreError
from flexiai_dev.servers import RedisProcess, free_port
from tests.circuit_breaker.conftest import policy
from tests.support.redis_fixtures import sync_config_for


def connected_clients(server: RedisProcess) -> int:
    with server.client() as admin:
        return int(admin.info("clients")["connected_clients"]) - 1  # minus this one


# -- laziness ----------------------------------------------------------------------------


def test_importing_and_constructing_imports_no_redis_module() -> None:
    code = (
        "import sys\n"
        "from flexiai.models import SyncConfig\n"
        "from flexiai.circuit_breaker.stores.redis import RedisSyncBackend\n"
        "RedisSyncBackend(SyncConfig(redis_cluster=True, redis_port=1))\n"
        "RedisSyncBackend(SyncConfig(redis_sentinels=['127.0.0.1:1'], redis_sentinel_service='m'))\n"
        "loaded = sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.'))\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_constructing_opens_no_socket_until_first_use(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    assert connected_clients(redis_server) == 0
    backend = make_backend(sync_config_for(redis_server))
    cluster = make_backend(sync_config_for(redis_server, redis_cluster=True))
    assert "(cluster)" in repr(cluster) and backend.stats()["store_errors"] == 0
    assert connected_clients(redis_server) == 0
    assert connections.shared_client_count() == 0
    backend.load(["openai"])
    assert connected_clients(redis_server) == 1


# -- keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "cluster", "key"),
    [
        ("flexiai", False, "flexiai:state:openai"),
        ("flexiai", True, "{flexiai}:state:openai"),
        ("myapp:flexiai", True, "{myapp:flexiai}:state:openai"),
        ("{tenant}:flexiai", True, "{tenant}:flexiai:state:openai"),
        ("app{}", True, "{app{}}:state:openai"),  # an empty tag is no tag
        ("a{}b}", True, "{a{}b}}:state:openai"),  # the first "}" closes it: still empty
        ("a{b}c", False, "a{b}c:state:openai"),
    ],
)
def test_state_key(prefix: str, cluster: bool, key: str) -> None:
    assert state_key(prefix, "openai", cluster) == key


def test_state_key_pattern_escapes_glob_characters() -> None:
    assert state_key_pattern("flexiai", False) == "flexiai:state:*"
    assert state_key_pattern("a*b?[c]", True) == "{a\\*b\\?\\[c\\]}:state:*"


def test_list_providers_scans_only_this_prefix(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    config = sync_config_for(redis_server, key_prefix="team*a")
    backend = make_backend(config)
    for provider in ("openai", "anthropic", "gemini-2"):
        backend.transition(provider, Op.FAILURE, policy(), "w")
    with redis_server.client() as admin:
        admin.hset("team*b:state:other", "state", "OPEN")  # would match an unescaped glob
        admin.set("team*a:something-else", "x")
    assert backend.list_providers() == ["anthropic", "gemini-2", "openai"]


# -- one client per process ----------------------------------------------------------------


def test_backends_with_the_same_settings_share_one_client(redis_server: RedisProcess) -> None:
    config = sync_config_for(redis_server)
    first, second = RedisSyncBackend(config), RedisSyncBackend(config)
    other_db = RedisSyncBackend(sync_config_for(redis_server, redis_db=1))
    try:
        for backend in (first, second, other_db):
            backend.load(["a"])
        assert first._client() is second._client()
        assert first._client() is not other_db._client()
        assert connections.shared_client_count() == 2
        first.close()
        first.close()  # idempotent: must not release the client twice
        assert second.load(["a"]).records
        assert connections.shared_client_count() == 2
        second.close()
        assert connections.shared_client_count() == 1
    finally:
        for backend in (first, second, other_db):
            backend.close()
    assert connections.shared_client_count() == 0
    assert connected_clients(redis_server) == 0


def test_a_closed_backend_raises_state_store_error(redis_server: RedisProcess) -> None:
    backend = RedisSyncBackend(sync_config_for(redis_server))
    backend.close()
    with pytest.raises(StateStoreError, match="closed"):
        backend.transition("openai", Op.FAILURE, policy(), "w")
    with pytest.raises(StateStoreError, match="closed"):
        backend.subscribe(lambda event: None, lambda: None)
    assert backend.health_check() is False


def test_a_supplied_client_is_used_and_never_closed(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    with redis_server.client(db=2) as client:
        backend = make_backend(sync_config_for(redis_server), client=client)
        backend.transition("openai", Op.FAILURE, policy(), "w")
        backend.close()
        assert client.exists("flexiai:state:openai") == 1  # still open, and it used db 2
        assert connections.shared_client_count() == 0
        assert "supplied client" in backend.describe()


# -- describe, repr, errors never show a password -------------------------------------------


def test_describe_and_errors_never_show_the_password(
    make_backend: Callable[..., RedisSyncBackend],
) -> None:
    port = free_port()  # nothing listens there
    by_fields = make_backend(
        sync_config_for(_Nowhere(port), redis_password="hunter2-field", redis_username="app")
    )
    by_url = make_backend(
        sync_config_for(
            _Nowhere(port),
            redis_url=f"rediss://app:hunter2-url@127.0.0.1:{port}/3",
            redis_cluster=True,
        )
    )
    assert by_fields.describe() == f"redis://127.0.0.1:{port}/0"
    assert by_url.describe() == f"rediss://127.0.0.1:{port}/3 (cluster)"
    for backend, secret in ((by_fields, "hunter2-field"), (by_url, "hunter2-url")):
        assert secret not in repr(backend) and secret not in backend.describe()
        with pytest.raises(StateStoreError) as caught:
            backend.load(["openai"])
        assert secret not in str(caught.value)
        assert caught.value.__cause__ is not None


def test_describe_sentinel() -> None:
    backend = RedisSyncBackend(
        sync_config_for(
            _Nowhere(1),
            redis_sentinels=["10.0.0.1:26379", "10.0.0.2:26379"],
            redis_sentinel_service="mymaster",
            redis_sentinel_password="s3cret",
        )
    )
    assert backend.describe() == "sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster"
    assert "s3cret" not in repr(backend)


class _Nowhere:
    """A server-shaped address where nothing listens."""

    host = "127.0.0.1"
    password = None
    tls = None

    def __init__(self, port: int) -> None:
        self.port = port


# -- TTL -----------------------------------------------------------------------------------


def test_records_expire_state_ttl_after_their_last_deadline(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    backend = make_backend(sync_config_for(redis_server, state_ttl=60))
    with redis_server.client() as admin:
        backend.transition("openai", Op.FAILURE, policy(), "w")
        assert 59_000 < admin.pttl("flexiai:state:openai") <= 60_000
        backend.transition("openai", Op.TRIP, policy(max_open_for=600), "w", open_for=300_000)
        # Open for 300 s: the record must outlive that, then state_ttl more.
        assert 359_000 < admin.pttl("flexiai:state:openai") <= 360_000


# -- faults --------------------------------------------------------------------------------


def test_a_frozen_server_raises_instead_of_hanging(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    backend = make_backend(sync_config_for(redis_server, redis_socket_timeout=0.1))
    backend.load(["openai"])  # a pooled connection exists
    redis_server.freeze()
    try:
        with pytest.raises(StateStoreError, match="Timeout"):
            backend.transition("openai", Op.FAILURE, policy(), "w")
        with pytest.raises(StateStoreError):
            backend.load(["openai"])
        assert backend.health_check() is False
    finally:
        redis_server.thaw()
    assert backend.transition("openai", Op.FAILURE, policy(), "w").record.run == 1
    assert backend.health_check() is True
    assert backend.stats()["store_errors"] == 2


def test_a_refused_port_raises_state_store_error(
    make_backend: Callable[..., RedisSyncBackend],
) -> None:
    backend = make_backend(sync_config_for(_Nowhere(free_port())))
    with pytest.raises(StateStoreError, match="ConnectionError"):
        backend.transition("openai", Op.FAILURE, policy(), "w")
    with pytest.raises(StateStoreError):
        backend.load(["openai"])
    with pytest.raises(StateStoreError):
        backend.list_providers()
    assert backend.health_check() is False


def test_a_restarted_server_is_used_again_without_a_new_backend(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    backend = make_backend(sync_config_for(redis_server))
    backend.transition("openai", Op.FAILURE, policy(), "w")
    redis_server.restart()  # same port, empty (no persistence)
    # The pooled connection is dead; the single retry replaces it.
    assert backend.transition("openai", Op.FAILURE, policy(), "w").record.run == 1
    assert backend.stats()["store_errors"] == 0


def test_scripts_are_reloaded_after_script_flush(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    backend = make_backend(sync_config_for(redis_server))
    backend.load(["openai"])
    with redis_server.client() as admin:
        admin.script_flush()
    assert backend.transition("openai", Op.FAILURE, policy(), "w").changed


# -- concurrency ---------------------------------------------------------------------------


T = TypeVar("T")


def run_threads(count: int, target: Callable[[int], Iterable[T]]) -> list[T]:
    results: list[T] = []
    lock = threading.Lock()
    barrier = threading.Barrier(count)

    def worker(index: int) -> None:
        barrier.wait()
        for result in target(index):
            with lock:
                results.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_failures_open_after_exactly_the_threshold(redis_server: RedisProcess) -> None:
    config = sync_config_for(redis_server)
    backends = [RedisSyncBackend(config) for _ in range(8)]
    p = policy(failure_threshold=20)
    try:
        results = run_threads(
            8,
            lambda i: [backends[i].transition("openai", Op.FAILURE, p, f"w{i}") for _ in range(6)],
        )
    finally:
        for backend in backends:
            backend.close()
    events = Counter(r.event for r in results)
    assert events == {EventType.FAILURE: 19, EventType.OPENED: 1, None: 48 - 20}
    assert sorted(r.record.run for r in results if r.event is EventType.FAILURE) == list(
        range(1, 20)
    )
    final = max(results, key=lambda r: r.record.version).record
    assert final.state is CircuitState.OPEN and final.version == 20


def test_concurrent_acquires_grant_exactly_half_open_max_calls(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    backend = make_backend(sync_config_for(redis_server))
    p = policy(half_open_max_calls=3, recovery_timeout=0.05)
    backend.transition("openai", Op.TRIP, p, "w", open_for=50)
    time.sleep(0.1)
    results = run_threads(
        8, lambda i: [backend.transition("openai", Op.ACQUIRE, p, f"w{i}") for _ in range(3)]
    )
    assert sum(r.granted for r in results) == 3
    assert sum(r.event is EventType.HALF_OPEN for r in results) == 1
    assert backend.load(["openai"]).records["openai"].probes_in_flight == 3


# -- the server's clock without a round trip -----------------------------------------------


def _time_calls(server: RedisProcess) -> int:
    with server.client(decode_responses=True) as admin:
        stats = admin.info("commandstats")
    return int(stats.get("cmdstat_time", {}).get("calls", 0))


def _server_time(server: RedisProcess) -> float:
    with server.client() as admin:
        seconds, micros = admin.time()
    now: float = seconds + micros / 1_000_000
    return now


def test_load_reads_the_servers_clock_and_measures_it_every_30_seconds(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    """A snapshot is one MGET; the clock offset costs a TIME only on the first load and
    once it is _CLOCK_RESAMPLE old. The local wall clock plays no part: this worker's is
    a day off, and the snapshot still reads the server's time."""

    class Clock:
        shift = 0.0  # monotonic seconds added by the test

        def now(self) -> float:
            return time.time() - 86_400  # a day off

        def monotonic(self) -> float:
            return time.monotonic() + self.shift

    clock = Clock()
    backend = make_backend(sync_config_for(redis_server), clock=clock)
    before = _time_calls(redis_server)
    low = _server_time(redis_server)
    first = backend.load(["openai"]).now / 1000
    high = _server_time(redis_server)
    assert low - 0.05 <= first <= high + 0.05
    for _ in range(5):
        backend.load(["openai"])
    assert _time_calls(redis_server) - before == 3  # the test's two, and the first load's

    clock.shift = 29.0  # not yet stale: no TIME, and now moves with the monotonic clock
    assert backend.load(["openai"]).now / 1000 == pytest.approx(first + 29.0, abs=0.5)
    assert _time_calls(redis_server) - before == 3
    clock.shift = 31.0  # stale: measured again, and the server's clock wins
    again = backend.load(["openai"]).now / 1000
    assert _time_calls(redis_server) - before == 4
    assert again == pytest.approx(_server_time(redis_server), abs=0.5)


def test_transitions_refresh_the_clock_offset_and_now_never_goes_back(
    redis_server: RedisProcess, make_backend: Callable[..., RedisSyncBackend]
) -> None:
    backend = make_backend(sync_config_for(redis_server))
    backend.load(["openai"])
    before = _time_calls(redis_server)
    result = backend.transition("openai", Op.TRIP, policy(), "w", open_for=0)
    # A breaker tripped for 0 s may probe at once: the next snapshot's now is past open_until.
    snapshot = backend.load(["openai"])
    assert snapshot.now >= result.record.open_until == result.now
    assert _time_calls(redis_server) - before == 1  # only the script's own TIME
