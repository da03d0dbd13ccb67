"""Each role's least-privilege ACL user (docs/redis-least-privilege.md, issue 11 finding 7)
against a real Redis 7 started with ``acl-pubsub-default resetchannels``: workers in both
modes open a breaker for the whole fleet, with EVALSHA or, denied every script, with
FCALL; the operator's ``status`` and ``reset`` work; the status reader reads and cannot
write. Real redis-server, real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from flexiai import FlexiAI
from flexiai.circuit_breaker import CircuitState, Op, Policy
from flexiai.circuit_breaker.stores.redis import RedisSyncBackend, function_library
from flexiai.cli import main
from flexiai.models import CircuitBreakerConfig
from flexiai.testing import FakeLLMServer
from flexiai_dev.acl_roles import ROLES, Role, acl_rules
from flexiai_dev.servers import BinaryMissing, RedisProcess, start_server
from tests.circuit_breaker.conftest import wait_until
from tests.circuit_breaker.test_manager import client_for
from tests.support.redis_fixtures import sync_config_for

pytestmark = pytest.mark.redis_server

PAGE = Path(__file__).parents[2] / "docs" / "redis-least-privilege.md"
Users = Callable[[Role, bool], tuple[str, str]]


@pytest.fixture
def acl_server() -> Iterator[RedisProcess]:
    with contextlib.ExitStack() as stack:
        try:
            server = start_server(
                stack, args=("--acl-pubsub-default", "resetchannels"), name="acl7"
            )
        except BinaryMissing as exc:
            pytest.skip(str(exc))
        with server.client() as admin:
            if int(admin.info("server")["redis_version"].split(".")[0]) < 7:
                pytest.skip("Redis Functions and ACL selectors need Redis 7")
        yield server


@pytest.fixture
def users(acl_server: RedisProcess) -> Users:
    """``users(role, functions)``: a fresh ACL user with exactly that role's rules."""

    def make(role: Role, functions: bool) -> tuple[str, str]:
        name, password = f"{role}-{secrets.token_hex(3)}", secrets.token_hex(8)
        rules = acl_rules(role, functions=functions).split()
        with acl_server.client() as admin:
            admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules)
        return name, password

    return make


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def url(server: RedisProcess, user: tuple[str, str]) -> str:
    return f"redis://{user[0]}:{user[1]}@{server.host}:{server.port}/0"


def as_user(server: RedisProcess, user: tuple[str, str]) -> Any:
    return server.client(username=user[0], password=user[1])


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def worker(
    server: RedisProcess, fake: FakeLLMServer, user: tuple[str, str], mode: str, functions: bool
) -> FlexiAI:
    return client_for(
        server,
        fake,
        mode=mode,
        snapshot_max_age=0,
        redis_username=user[0],
        redis_password=user[1],
        redis_use_functions=functions,
    )


@pytest.mark.parametrize("functions", [False, True], ids=["evalsha", "fcall"])
@pytest.mark.parametrize("mode", ["pubsub", "snapshot"])
def test_workers_open_a_breaker_for_the_whole_fleet_under_their_role(
    acl_server: RedisProcess,
    users: Users,
    fake: FakeLLMServer,
    capsys: pytest.CaptureFixture[str],
    mode: str,
    functions: bool,
) -> None:
    role: Role = "pubsub-worker" if mode == "pubsub" else "snapshot-worker"
    if functions:  # the operator loads the library once; workers may not
        code, out, err = cli(
            capsys, "functions", "load", "--redis-url", url(acl_server, users("operator", True))
        )
        assert code == 0, err
        assert function_library()[0] in out
    first, second = users(role, functions), users(role, functions)
    with (
        worker(acl_server, fake, first, mode, functions) as one,
        worker(acl_server, fake, second, mode, functions) as other,
    ):
        assert other.generate("warm up").provider == "openai"
        fake.down("openai")
        one.generate("a")
        one.generate("b")  # failure_threshold=2: opens for the fleet
        for client in (one, other):
            assert client.store_health().shared
        wait_until(lambda: other.get_provider_status()["openai"].state is CircuitState.OPEN)
        calls = fake.count("openai")
        assert other.generate("c").provider == "anthropic"
        assert fake.count("openai") == calls
        assert one._sync_manager is not None and other._sync_manager is not None
        assert one._sync_manager.stats()["store_errors"] == 0
        assert other._sync_manager.stats()["store_errors"] == 0

    with as_user(acl_server, first) as r:
        # What the worker's user may not do: list key names, touch other keys, run code
        # of its own (with functions: no script at all, so no busy loop).
        for denied in (
            lambda: r.scan(),
            lambda: r.set("flexiai:other", "x"),
            lambda: r.get("elsewhere:state:openai"),
            lambda: r.publish("elsewhere:events", "x"),
            lambda: r.function_load("#!lua name=mine\nredis.register_function('f', "
                                    "function() while true do end end)"),
        ):  # fmt: skip
            with pytest.raises(redis.exceptions.NoPermissionError):
                denied()  # type: ignore[no-untyped-call]
        if functions:
            with pytest.raises(redis.exceptions.NoPermissionError):
                r.eval("while true do end", 0)
            with pytest.raises(redis.exceptions.NoPermissionError):
                r.evalsha("0" * 40, 0)
            with pytest.raises(redis.exceptions.NoPermissionError):
                r.script_load("while true do end")


@pytest.mark.parametrize("functions", [False, True], ids=["evalsha", "fcall"])
def test_the_operator_role_runs_status_and_reset(
    acl_server: RedisProcess,
    users: Users,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    functions: bool,
) -> None:
    for name in [n for n in os.environ if n.startswith("FLEXIAI_")]:
        monkeypatch.delenv(name)
    if functions:
        monkeypatch.setenv("FLEXIAI_SYNC_REDIS_USE_FUNCTIONS", "true")
    backend = RedisSyncBackend(sync_config_for(acl_server))
    try:
        policy = Policy.from_config(CircuitBreakerConfig(failure_threshold=2))
        for _ in range(2):
            backend.transition("openai", Op.FAILURE, policy, "w1")
    finally:
        backend.close()
    operator = url(acl_server, users("operator", functions))
    code, out, err = cli(capsys, "status", "--json", "--redis-url", operator)
    assert code == 0, err
    assert '"state": "OPEN"' in out
    assert '"ttl_ms": null' not in out  # PTTL answered
    code, out, err = cli(capsys, "reset", "--redis-url", operator)
    assert code == 0, err
    assert "openai: OPEN -> CLOSED for the whole fleet" in out


def test_the_read_only_status_reader_reads_and_cannot_write(
    acl_server: RedisProcess, users: Users, fake: FakeLLMServer
) -> None:
    writer = users("snapshot-worker", False)
    with worker(acl_server, fake, writer, "snapshot", False) as one:
        fake.down("openai")
        one.generate("a")
        one.generate("b")
    reader = users("status-reader", False)
    with worker(acl_server, fake, reader, "snapshot", False) as status:
        assert status.get_provider_status()["openai"].state is CircuitState.OPEN
        health = status.store_health()
        assert health.shared and health.healthy
    with as_user(acl_server, reader) as r:
        assert r.mget(["flexiai:state:openai"])[0] is not None
        for denied in (
            lambda: r.set("flexiai:state:openai", "x"),
            lambda: r.delete("flexiai:state:openai"),
            lambda: r.eval("return 1", 0),
            lambda: r.fcall(function_library()[0], 0),
            lambda: r.publish("flexiai:events", "x"),
            lambda: r.scan(),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                denied()  # type: ignore[no-untyped-call]


def test_a_worker_without_the_library_falls_back_and_says_how_to_load_it(
    acl_server: RedisProcess,
    users: Users,
    fake: FakeLLMServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="flexiai.sync")
    with worker(acl_server, fake, users("snapshot-worker", True), "snapshot", True) as client:
        fake.down("openai")
        client.generate("a")  # the first write needs the function: not loaded
        assert client.generate("b").provider == "anthropic"
        assert not client.store_health().shared
    assert "run `flexiai functions load` once" in caplog.text


def test_the_page_shows_every_roles_rules() -> None:
    page = PAGE.read_text("utf-8")
    for role in ROLES:
        for functions in (False, True):
            assert acl_rules(role, functions=functions) in page, (role, functions)


def test_a_flushed_library_is_loaded_again_by_a_user_that_may(
    acl_server: RedisProcess, users: Users
) -> None:
    """FUNCTION FLUSH (or a new server) while workers run: the operator's user reloads it on
    its next call, as EVALSHA reloads a flushed script."""
    operator = users("operator", True)
    config = sync_config_for(
        acl_server,
        redis_username=operator[0],
        redis_password=operator[1],
        redis_use_functions=True,
    )
    backend = RedisSyncBackend(config)
    try:
        policy = Policy.from_config(CircuitBreakerConfig(failure_threshold=2))
        assert backend.transition("openai", Op.FAILURE, policy, "w").changed
        with acl_server.client() as admin:
            admin.function_flush()
        assert backend.transition("openai", Op.FAILURE, policy, "w").record.state is (
            CircuitState.OPEN
        )
        assert backend.load_functions() == (function_library()[0], False)
    finally:
        backend.close()


@pytest.mark.parametrize("mode", ["pubsub", "snapshot"])
def test_the_async_api_runs_the_library_with_fcall_too(
    acl_server: RedisProcess, users: Users, fake: FakeLLMServer, mode: str
) -> None:
    """agenerate's asyncio store, under a user that may run no script, opens the breaker
    for the fleet through FCALL."""
    role: Role = "pubsub-worker" if mode == "pubsub" else "snapshot-worker"
    client = worker(acl_server, fake, users(role, True), mode, True)

    async def run() -> list[str]:
        try:
            fake.down("openai")
            answers = [(await client.agenerate(q)).provider for q in ("a", "b", "c")]
        finally:
            await client.aclose()
        return answers

    with acl_server.client() as admin:
        admin.function_load(function_library()[1])
    assert asyncio.run(run()) == ["anthropic", "anthropic", "anthropic"]
    assert client._sync_manager is not None
    assert client._sync_manager.stats()["store_errors"] == 0
    backend = RedisSyncBackend(sync_config_for(acl_server))
    try:
        assert backend.load(["openai"]).records["openai"].state is CircuitState.OPEN
    finally:
        backend.close()
