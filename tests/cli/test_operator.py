"""``flexiai status``, ``reset`` and ``watch`` against a real redis-server the test starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flexiai.circuit_breaker import CircuitState, Op, Policy, Tally, decode_event
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend
from flexiai.models import CircuitBreakerConfig
from flexiai_dev.servers import RedisProcess, free_port
from tests.cli.conftest import command, run_command
from tests.support.redis_fixtures import sync_config_for

pytestmark = pytest.mark.redis_server

POLICY = Policy.from_config(CircuitBreakerConfig(failure_threshold=2, recovery_timeout=30))


@pytest.fixture
def store(redis_server: RedisProcess) -> Iterator[RedisSyncBackend]:
    """The backend workers use, to put state where the commands can find it."""
    backend = RedisSyncBackend(sync_config_for(redis_server))
    yield backend
    backend.close()


def open_breaker(store: RedisSyncBackend, provider: str, worker: str = "w1") -> None:
    for _ in range(POLICY.failure_threshold):
        store.transition(provider, Op.FAILURE, POLICY, worker)


def status_json(flexiai: Any, server: RedisProcess, *extra: str) -> dict[str, dict[str, Any]]:
    result = flexiai("status", "--redis-url", server.url, "--json", *extra)
    assert result.code == 0, result.err
    return {row["provider"]: row for row in json.loads(result.out)}


# -- status ------------------------------------------------------------------------------------


def test_status_shows_every_stored_breaker_with_its_ttl(
    flexiai: Any, redis_server: RedisProcess, store: RedisSyncBackend
) -> None:
    open_breaker(store, "openai", worker="web-3")
    store.report({"anthropic": Tally(3, 0, 10)}, POLICY, "web-2")
    store.transition("anthropic", Op.FAILURE, POLICY, "web-1")

    rows = status_json(flexiai, redis_server)

    assert set(rows) == {"openai", "anthropic"}
    opened = rows["openai"]
    assert opened["state"] == "OPEN"
    assert opened["updated_by"] == "web-3"
    assert opened["version"] == 2
    assert opened["open_until"] == pytest.approx(opened["opened_at"] + 30)
    assert 0 < opened["ttl_ms"] <= 3600 * 1000 + 30_000
    assert opened["opened_because"] == "consecutive_failures"
    # The window: 4 calls counted across the fleet, 1 failed; and the run of failures.
    anthropic = rows["anthropic"]
    assert anthropic["state"] == "CLOSED"
    assert (anthropic["window_calls"], anthropic["window_failures"]) == (4, 1)
    assert anthropic["failure_rate"] == pytest.approx(25.0)
    assert anthropic["consecutive_failures"] == 1
    table = flexiai("status", "--redis-url", redis_server.url)
    assert table.code == 0
    for text in ("openai", "OPEN", "web-3", "anthropic", "CLOSED", "59m", "25.0%"):
        assert text in table.out
    for column in ("calls", "failures", "failure rate", "in a row"):
        assert column in table.out
    assert "consecutive failures" in table.out  # why openai opened
    assert re.search(r"in (29|30)\.\ds", table.out)  # may probe in recovery_timeout


def test_status_lists_configured_providers_that_have_no_state_yet(
    flexiai: Any, redis_server: RedisProcess, store: RedisSyncBackend, monkeypatch: Any
) -> None:
    open_breaker(store, "openai")
    monkeypatch.setenv("FLEXIAI_PROVIDER_1_NAME", "gemini")
    monkeypatch.setenv("FLEXIAI_PROVIDER_1_API_KEY", "sk-test")
    monkeypatch.setenv("FLEXIAI_PROVIDER_1_MODEL", "gemini-2.0-flash")

    rows = status_json(flexiai, redis_server)

    assert rows["gemini"]["state"] == "CLOSED"
    assert rows["gemini"]["stored"] is False
    assert rows["gemini"]["ttl_ms"] is None
    assert rows["openai"]["state"] == "OPEN"


def test_status_reads_the_store_settings_from_the_environment(
    flexiai: Any, redis_server: RedisProcess, monkeypatch: Any
) -> None:
    other = RedisSyncBackend(sync_config_for(redis_server, key_prefix="team-a"))
    try:
        open_breaker(other, "openai")
    finally:
        other.close()
    monkeypatch.setenv("FLEXIAI_SYNC_REDIS_URL", redis_server.url)
    monkeypatch.setenv("FLEXIAI_SYNC_KEY_PREFIX", "team-a")

    result = flexiai("status", "--json")

    assert result.code == 0, result.err
    assert [row["state"] for row in json.loads(result.out)] == ["OPEN"]
    by_flag = flexiai("status", "--json", "--key-prefix", "flexiai")  # flags win
    assert json.loads(by_flag.out) == []


def test_status_says_so_when_there_is_no_state(flexiai: Any, redis_server: RedisProcess) -> None:
    result = flexiai("status", "--redis-url", redis_server.url)
    assert result.code == 0
    assert "no breaker state under prefix 'flexiai'" in result.out


def test_garbage_in_the_state_keys_is_shown_as_invalid(
    flexiai: Any, redis_server: RedisProcess, store: RedisSyncBackend
) -> None:
    open_breaker(store, "openai")
    with redis_server.client() as client:
        client.set("flexiai:state:gemini", '{"state": "MELTED", "failures": "many"}')
        client.set("flexiai:state:bedrock", "not JSON")
        client.rpush("flexiai:state:mistral", "a list")
        client.hset("flexiai:state:cohere", mapping={"state": "OPEN"})  # the old layout

    rows = status_json(flexiai, redis_server)
    table = flexiai("status", "--redis-url", redis_server.url)

    assert {name: row["state"] for name, row in rows.items()} == {
        "openai": "OPEN",
        "gemini": "invalid",
        "bedrock": "invalid",
        "mistral": "invalid",
        "cohere": "invalid",
    }
    assert table.code == 0
    assert table.out.count("invalid") == 4
    assert "Traceback" not in table.err


def test_status_on_a_cluster_reads_the_hash_tagged_keys(flexiai: Any, redis_cluster: Any) -> None:
    prefix = f"cli-{time.monotonic_ns()}"
    backend = RedisSyncBackend(sync_config_for(redis_cluster, key_prefix=prefix))
    try:
        open_breaker(backend, "openai")
    finally:
        backend.close()
    url = f"redis://{redis_cluster.host}:{redis_cluster.port}"

    result = flexiai("status", "--json", "--cluster", "--redis-url", url, "--key-prefix", prefix)

    assert result.code == 0, result.err
    assert [(r["provider"], r["state"]) for r in json.loads(result.out)] == [("openai", "OPEN")]


# -- reset -------------------------------------------------------------------------------------


def subscribe(server: RedisProcess) -> Any:
    client = server.client()
    pubsub = client.pubsub()
    pubsub.subscribe("flexiai:events")
    assert pubsub.get_message(timeout=2)["type"] in ("subscribe", b"subscribe")
    return client, pubsub


def test_reset_closes_one_breaker_for_the_fleet_through_an_atomic_transition(
    flexiai: Any, redis_server: RedisProcess, store: RedisSyncBackend
) -> None:
    open_breaker(store, "openai")
    open_breaker(store, "anthropic")
    client, pubsub = subscribe(redis_server)
    try:
        result = flexiai("reset", "openai", "--redis-url", redis_server.url)
        message = pubsub.get_message(timeout=2)
        assert pubsub.get_message(timeout=0.2) is None  # one event, for openai only
    finally:
        pubsub.close()
        client.close()

    assert result.code == 0
    assert "openai: OPEN -> CLOSED" in result.out
    event = decode_event(message["data"])
    assert (event.type.value, event.provider, event.version) == ("CLOSED", "openai", 3)
    assert event.worker_id.startswith("operator@")
    records = store.load(["openai", "anthropic"]).records
    assert records["openai"].state is CircuitState.CLOSED
    assert records["openai"].version == 3
    assert records["anthropic"].state is CircuitState.OPEN


def test_reset_without_a_provider_resets_every_one_and_overwrites_garbage(
    flexiai: Any, redis_server: RedisProcess, store: RedisSyncBackend
) -> None:
    open_breaker(store, "openai")
    store.transition("anthropic", Op.FAILURE, POLICY, "w2")
    with redis_server.client() as client:
        client.set("flexiai:state:gemini", '{"state": "MELTED"}')
        client.hset("flexiai:state:cohere", mapping={"state": "OPEN"})  # the old layout

    result = flexiai("reset", "--redis-url", redis_server.url)

    assert result.code == 0
    assert "anthropic: CLOSED with 1 failure in a row -> CLOSED" in result.out
    assert "gemini: invalid state -> CLOSED" in result.out
    assert "cohere: invalid state -> CLOSED" in result.out
    assert "openai: OPEN -> CLOSED" in result.out
    rows = status_json(flexiai, redis_server)
    assert {row["state"] for row in rows.values()} == {"CLOSED"}
    assert {row["consecutive_failures"] for row in rows.values()} == {0}


def test_reset_with_nothing_stored_changes_nothing(
    flexiai: Any, redis_server: RedisProcess
) -> None:
    result = flexiai("reset", "--redis-url", redis_server.url)
    assert result.code == 0
    assert "nothing to reset" in result.out


# -- watch -------------------------------------------------------------------------------------


def start_watch(server: RedisProcess, *argv: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        command("watch", "--redis-url", server.url, *argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with server.client() as client:  # wait until it listens
        deadline = time.monotonic() + 15
        while client.pubsub_numsub("flexiai:events")[0][1] < 1:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "watch never subscribed"
            time.sleep(0.02)
    return process


def test_watch_streams_decoded_events_and_shows_malformed_ones(
    redis_server: RedisProcess, store: RedisSyncBackend
) -> None:
    process = start_watch(redis_server, "--count", "4")
    try:
        open_breaker(store, "openai", worker="w7")
        with redis_server.client() as client:
            client.publish("flexiai:events", b"\xff not json")
            client.publish("flexiai:events", json.dumps({"v": 99, "type": "OPENED"}))
        out, err = process.communicate(timeout=15)
    finally:
        process.kill()
        process.wait()

    assert process.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4
    assert "FAILURE" in lines[0] and "openai" in lines[0] and "in a row=1" in lines[0]
    assert "OPENED" in lines[1] and "v2" in lines[1] and "by w7" in lines[1]
    assert "malformed event" in lines[2]
    assert "malformed event" in lines[3] and "unsupported wire version 99" in lines[3]
    assert "Traceback" not in err


def test_watch_json_prints_one_document_per_event(
    redis_server: RedisProcess, store: RedisSyncBackend
) -> None:
    process = start_watch(redis_server, "--count", "2", "--json")
    try:
        open_breaker(store, "anthropic")
        out, err = process.communicate(timeout=15)
    finally:
        process.kill()
        process.wait()

    assert process.returncode == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    assert [(d["type"], d["provider"], d["version"]) for d in docs] == [
        ("FAILURE", "anthropic", 1),
        ("OPENED", "anthropic", 2),
    ]
    assert docs[1]["record"]["state"] == "OPEN"


def test_watch_stops_after_its_timeout(flexiai: Any, redis_server: RedisProcess) -> None:
    result = flexiai("watch", "--redis-url", redis_server.url, "--timeout", "0.3")
    assert result.code == 0
    assert result.out == ""  # it returned by itself: nothing was published


# -- errors: one line, exit status 2, no traceback ------------------------------------------------


@pytest.mark.parametrize("name", ["status", "reset", "watch"])
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("notaurl", "--redis-url: redis_url must start with"),
        ("redis://127.0.0.1:notaport/0", "--redis-url: Port could not be cast"),
        ("refused", "Connection refused"),
    ],
)
def test_a_bad_url_or_a_server_that_is_down_is_one_line_and_status_2(
    flexiai: Any, name: str, url: str, expected: str
) -> None:
    if url == "refused":
        url = f"redis://127.0.0.1:{free_port()}/0"
    result = (
        flexiai(name, "--redis-url", url, "--timeout", "1")
        if name == "watch"
        else (flexiai(name, "--redis-url", url))
    )
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"flexiai {name}: ")
    assert expected in lines[0]


def test_a_frozen_server_times_out_with_one_line(flexiai: Any, redis_server: RedisProcess) -> None:
    redis_server.freeze()
    try:
        result = flexiai("status", "--redis-url", redis_server.url, "--socket-timeout", "0.2")
    finally:
        redis_server.thaw()
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "Timeout" in result.err


def test_a_bad_environment_variable_is_one_line(flexiai: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("FLEXIAI_SYNC_REDIS_PORTT", "1234")
    result = flexiai("status")
    assert result.code == 2
    assert "FLEXIAI_SYNC_REDIS_PORTT: unknown flexiai environment variable" in result.err
    assert "did you mean FLEXIAI_SYNC_REDIS_PORT" in result.err


def test_the_real_entry_point_prints_no_traceback_for_an_unreachable_server() -> None:
    result = run_command("status", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_importing_the_commands_imports_neither_rich_nor_redis() -> None:
    code = (
        "import sys, flexiai.cli.operator, flexiai_dev.demo; "
        "print(sorted(m for m in ('rich', 'redis', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- reset under load: it answers within --timeout, or says what it could not do ---------------


def test_reset_against_a_frozen_server_gives_up_within_its_timeout_and_says_so(
    redis_server: RedisProcess, store: RedisSyncBackend
) -> None:
    """SIGSTOP: connections are accepted by the kernel, then nothing answers."""
    open_breaker(store, "openai")
    redis_server.freeze()
    try:
        result = run_command("reset", "--redis-url", redis_server.url, "--timeout", "1")
    finally:
        redis_server.thaw()
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("flexiai reset: ")
    assert lines[0].endswith("nothing was reset")
    # Nothing was: the breaker is still open.
    assert store.load(["openai"]).records["openai"].state is CircuitState.OPEN


def test_reset_that_fails_half_way_says_what_was_and_was_not_reset(
    flexiai: Any, redis_server: RedisProcess, store: RedisSyncBackend
) -> None:
    """A user that may write anthropic's key but not openai's: the first reset lands, the
    second is refused, and the answer lists both."""
    open_breaker(store, "anthropic")
    open_breaker(store, "openai")
    open_breaker(store, "zeta")
    with redis_server.client() as admin:
        admin.script_load(_breaker_source())
        admin.execute_command(
            "ACL", "SETUSER", "half", "on", ">pw", "%R~flexiai:state:*",
            "~flexiai:state:anthropic", "resetchannels", "&flexiai:events", "-@all",
            "+evalsha", "+scan", "+mget", "+get", "+set", "+publish", "+time", "+ping",
        )  # fmt: skip
    url = f"redis://half:pw@{redis_server.host}:{redis_server.port}/0"
    result = flexiai("reset", "--redis-url", url)
    assert result.code == 2
    assert "anthropic: OPEN -> CLOSED for the whole fleet" in result.out
    line = result.err.strip()
    assert "NOPERM" in line or "permission" in line.lower()
    assert line.endswith(
        "reset: anthropic; not reset: zeta; unknown whether openai was reset (its reset was sent)"
    )
    records = store.load(["anthropic", "openai", "zeta"]).records
    assert [records[p].state for p in ("anthropic", "openai", "zeta")] == [
        CircuitState.CLOSED,
        CircuitState.OPEN,
        CircuitState.OPEN,
    ]


def _breaker_source() -> str:
    from flexiai.circuit_breaker.stores.redis import _script_source

    return _script_source("breaker.lua")
