"""The ElastiCache users of template.yaml and of the CDK construct work, on a real Redis 7.

The exact access strings (SAM: the template's ``Fn::Sub`` with the parameters' defaults; CDK:
the synthesized ``AWS::ElastiCache::User``) become ACL users of a redis-server started with
``acl-pubsub-default resetchannels`` (what Redis 7 and Valkey do by default, and what
ElastiCache users get: a user without ``&<channel>`` cannot PUBLISH, not even from a script).
Each function's environment says which user it is and which key prefix and channel it uses.

In both sync modes, on a standalone server and on a one-node cluster (ElastiCache Serverless
is cluster mode, where the keys carry the ``{prefix}`` hash tag):

- two workers as the app user (GenerateFunction's): one's failures on a dead provider open
  the breaker, the other sees it OPEN and never calls that provider;
- the status reader (BreakerStatusFunction's read-only user) reads the breakers, the store's
  health and ``flexiai status``'s table, and can change nothing;
- the ACL log shows no denial while the functions do their work.

Locally the users authenticate with a password added after the access string; on ElastiCache
they authenticate with IAM. Nothing else differs.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from flexiai.models import CircuitBreakerConfig, FlexiAIConfig, RetryConfig, SyncConfig
from flexiai.testing import FakeLLMServer
from flexiai_dev.cloudformation import load_template
from flexiai_dev.servers import BinaryMissing, RedisProcess, start_server
from tests.deploy.conftest import REPO_ROOT
from tests.support.llm_fixtures import provider_config

pytestmark = [pytest.mark.redis_server]

TEMPLATE = REPO_ROOT / "template.yaml"
PUBSUB_DEFAULT = ["--acl-pubsub-default", "resetchannels"]
FUNCTIONS = {"generate": "GenerateFunction", "status": "BreakerStatusFunction"}


@dataclass(frozen=True)
class CacheUser:
    """One function's cache user: its ElastiCache user id and access string, and the
    key prefix and channel its function's environment sets."""

    user_id: str
    access_string: str
    key_prefix: str
    channel: str


# -- the users, as each deployment route defines them --------------------------------------


def _sub(value: Any, parameters: dict[str, Any]) -> str:
    """Resolve a ``Fn::Sub`` (or a plain string) with the template's parameter defaults."""
    text = value["Fn::Sub"] if isinstance(value, dict) else value
    assert isinstance(text, str), value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in parameters, f"${{{name}}} is not a template parameter"
        return str(parameters[name]["Default"])

    return re.sub(r"\$\{([A-Za-z0-9]+)\}", replace, text)


def sam_users() -> dict[str, CacheUser]:
    template = load_template(TEMPLATE)
    parameters = template["Parameters"]
    resources = template["Resources"]
    global_env = template["Globals"]["Function"]["Environment"]["Variables"]
    users = {}
    for role, logical_id in FUNCTIONS.items():
        props = resources[logical_id]["Properties"]
        env = {**global_env, **props.get("Environment", {}).get("Variables", {})}
        username = env["FLEXIAI_SYNC_REDIS_USERNAME"]
        condition, then, _else = username["Fn::If"]
        assert condition == "UseIamAuth"
        user = resources[then["Ref"]]["Properties"]
        assert env["FLEXIAI_SYNC_KEY_PREFIX"] == {"Ref": "KeyPrefix"}
        users[role] = CacheUser(
            user_id=_sub(user["UserId"], parameters),
            access_string=_sub(user["AccessString"], parameters),
            key_prefix=str(parameters["KeyPrefix"]["Default"]),
            channel=_sub(env["FLEXIAI_SYNC_CHANNEL"], parameters),
        )
    return users


def cdk_users(template: dict[str, Any]) -> dict[str, CacheUser]:
    resources = template["Resources"]
    by_id = {
        r["Properties"]["UserId"]: r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::ElastiCache::User"
    }
    prefixes = {"generate": "FunctionsGenerate", "status": "FunctionsBreakerStatus"}
    users = {}
    for role, prefix in prefixes.items():
        (fn,) = [
            r
            for k, r in resources.items()
            if r["Type"] == "AWS::Lambda::Function" and k.startswith(prefix)
        ]
        env = fn["Properties"]["Environment"]["Variables"]
        user = by_id[env["FLEXIAI_SYNC_REDIS_USERNAME"]]
        users[role] = CacheUser(
            user_id=user["UserId"],
            access_string=user["AccessString"],
            key_prefix=env["FLEXIAI_SYNC_KEY_PREFIX"],
            channel=env["FLEXIAI_SYNC_CHANNEL"],
        )
    return users


@pytest.fixture(params=["sam", "cdk"])
def route_users(request: pytest.FixtureRequest) -> dict[str, CacheUser]:
    if request.param == "sam":
        return sam_users()
    synthesized = request.getfixturevalue("synthesized")
    return cdk_users(synthesized["iam"][1].to_json())


# -- servers -------------------------------------------------------------------------------


@dataclass
class Store:
    server: RedisProcess
    cluster: bool

    def admin(self) -> Any:
        return self.server.client()


def _start_one_node_cluster(stack: contextlib.ExitStack) -> RedisProcess:
    server = start_server(
        stack,
        name="cluster",
        args=[*PUBSUB_DEFAULT, "--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
    )
    with server.client() as admin:
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 20
        while "cluster_state:ok" not in _text(admin.execute_command("CLUSTER", "INFO")):
            if time.monotonic() > deadline:
                raise RuntimeError("the one-node cluster did not reach cluster_state:ok")
            time.sleep(0.02)
    return server


@pytest.fixture(scope="module")
def cluster_server() -> Iterator[RedisProcess]:
    with contextlib.ExitStack() as stack:
        try:
            yield _start_one_node_cluster(stack)
        except BinaryMissing as exc:
            pytest.skip(str(exc))


@pytest.fixture(params=["standalone", "cluster"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "cluster":
        server = request.getfixturevalue("cluster_server")
        yield Store(server, cluster=True)
        with server.client() as admin:  # leave the shared cluster as it was
            admin.flushall()
            for user in admin.acl_users():
                if _text(user) != "default":
                    admin.acl_deluser(user)
            admin.acl_log_reset()
        return
    with contextlib.ExitStack() as stack:
        try:
            server = start_server(stack, name="acl7", args=PUBSUB_DEFAULT)
        except BinaryMissing as exc:
            pytest.skip(str(exc))
        yield Store(server, cluster=False)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def create_user(store: Store, user: CacheUser) -> str:
    """``ACL SETUSER`` with the exact access string, plus a local password; returns it."""
    password = secrets.token_hex(12)
    with store.admin() as admin:
        admin.execute_command("ACL", "SETUSER", user.user_id, *user.access_string.split())
        admin.execute_command("ACL", "SETUSER", user.user_id, f">{password}")
        # The server really starts users with no channel: the access string must grant it.
        assert _text(admin.config_get("acl-pubsub-default")["acl-pubsub-default"]) == (
            "resetchannels"
        )
    return password


def acl_denials(store: Store) -> list[dict[str, Any]]:
    with store.admin() as admin:
        entries = admin.acl_log()
    return [{k: _text(v) for k, v in entry.items()} for entry in entries]


# -- clients -------------------------------------------------------------------------------


def sync_config(store: Store, user: CacheUser, password: str, mode: str) -> SyncConfig:
    return SyncConfig(
        enabled=True,
        backend="redis",
        mode=mode,
        redis_host=store.server.host,
        redis_port=store.server.port,
        redis_username=user.user_id,
        redis_password=SecretStr(password),
        redis_cluster=store.cluster,
        redis_socket_timeout=2.0,
        redis_socket_connect_timeout=2.0,
        key_prefix=user.key_prefix,
        channel=user.channel,
        worker_id=f"w-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def make_client(fake_llm: FakeLLMServer) -> Iterator[Callable[[SyncConfig], Any]]:
    from flexiai import FlexiAI

    made: list[Any] = []

    def make(sync: SyncConfig) -> Any:
        config = FlexiAIConfig(
            providers=[
                provider_config(fake_llm, "openai", priority=1, timeout=2.0),
                provider_config(fake_llm, "anthropic", priority=2, timeout=2.0),
            ],
            sync=sync,
            circuit_breaker=CircuitBreakerConfig(failure_threshold=2, recovery_timeout=600),
            retry=RetryConfig(max_retries=0),
        )
        client = FlexiAI(config)
        made.append(client)
        return client

    yield make
    for client in reversed(made):
        client.close()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def openai_state(client: Any) -> str:
    return str(client.get_provider_status()["openai"]["state"]).upper()


# -- the test ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pubsub", "snapshot"])
def test_the_breaker_opens_fleet_wide_under_the_deployed_users(
    route_users: dict[str, CacheUser],
    store: Store,
    make_client: Callable[[SyncConfig], Any],
    fake_llm: FakeLLMServer,
    mode: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("FLEXIAI_")]:
        monkeypatch.delenv(name)  # flexiai status reads them: only the flags count here
    app, status = route_users["generate"], route_users["status"]
    assert app.user_id != status.user_id, "the status route must not share the app user"
    assert (app.key_prefix, app.channel) == (status.key_prefix, status.channel)
    app_password = create_user(store, app)
    status_password = create_user(store, status)

    # Two GenerateFunction workers; a third, BreakerStatusFunction's, reads only.
    first = make_client(sync_config(store, app, app_password, mode))
    second = make_client(sync_config(store, app, app_password, mode))
    reader = make_client(sync_config(store, status, status_password, mode))
    for client in (first, second, reader):
        assert openai_state(client) == "CLOSED"

    fake_llm.down("openai")
    for _ in range(2):  # failure_threshold failures in a row, all on the first worker
        assert first.generate("hi").provider == "anthropic"
    assert fake_llm.count("openai") == 2
    assert openai_state(first) == "OPEN"

    # The other worker sees it open and fails over without calling the dead provider.
    wait_for(lambda: openai_state(second) == "OPEN", "the second worker to see OPEN")
    assert second.generate("hi").provider == "anthropic"
    assert fake_llm.count("openai") == 2

    # The status route's user reads the shared breaker and the store's health.
    wait_for(lambda: openai_state(reader) == "OPEN", "the status reader to see OPEN")
    assert reader._sync_manager.health_check() is True
    assert _flexiai_status(store, status, status_password, capsys)["openai"] == "OPEN"

    assert acl_denials(store) == [], "a function's user was refused a command"

    # ... and can change nothing: no write, no publish, no script.
    _assert_read_only(store, status, status_password, reader, second)


def _flexiai_status(
    store: Store, user: CacheUser, password: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, str]:
    """``flexiai status --json`` as this user (SCAN, MGET, TIME, PTTL, TYPE): state per
    provider."""
    import json

    from flexiai.cli import main

    url = f"redis://{user.user_id}:{password}@{store.server.host}:{store.server.port}/0"
    argv = ["status", "--json", "--redis-url", url, "--key-prefix", user.key_prefix]
    argv += ["--channel", user.channel, *(["--cluster"] if store.cluster else [])]
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return {row["provider"]: str(row["state"]).upper() for row in json.loads(out)}


def _assert_read_only(
    store: Store, status: CacheUser, password: str, reader: Any, worker: Any
) -> None:
    import redis
    from redis.exceptions import NoPermissionError, ResponseError

    prefix = f"{{{status.key_prefix}}}" if store.cluster else status.key_prefix
    key = f"{prefix}:state:openai"
    with redis.Redis(
        host=store.server.host,
        port=store.server.port,
        username=status.user_id,
        password=password,
        protocol=2,
        socket_timeout=5,
    ) as as_status:
        assert as_status.get(key) is not None  # it reads the record ...
        writes: list[Callable[[], Any]] = [  # ... and can write nothing
            lambda: as_status.set(key, "{}"),
            lambda: as_status.delete(key),
            lambda: as_status.publish(status.channel, "{}"),
            lambda: as_status.eval("return 1", 0),
            lambda: as_status.evalsha("0" * 40, 0),
            lambda: as_status.script_load("return 1"),
        ]
        for attempt in writes:
            with pytest.raises((NoPermissionError, ResponseError), match=r"(?i)permission"):
                attempt()
    # Through the library too: the status route cannot reset a breaker for the fleet.
    with contextlib.suppress(Exception):
        reader.reset_circuit_breakers("openai")
    assert openai_state(worker) == "OPEN"
    refused = {entry["username"] for entry in acl_denials(store)}
    assert refused == {status.user_id}
