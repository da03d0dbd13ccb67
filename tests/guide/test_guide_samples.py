"""Every code sample of the deployment guide runs as written.

Each runs in a private network namespace (see netns_runner.py) where 127.0.0.1:6379 is a
redis-server of the test's own and the only change to a sample is a ``base_url`` pointing
at the fake LLM server (plus a filled-in ``providers=[...]`` where the guide elides it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

RUNNER = Path(__file__).with_name("netns_runner.py")
FAKE = "http://127.0.0.1:8900/p/openai/v1"


def _netns_available() -> str | None:
    if shutil.which("unshare") is None or shutil.which("redis-server") is None:
        return "needs unshare and redis-server"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return None if probe.returncode == 0 else "cannot create a network namespace here"


_SKIP = _netns_available()
pytestmark = [
    pytest.mark.skipif(_SKIP is not None, reason=_SKIP or ""),
    pytest.mark.redis_server,
]


def run(
    samples: list[str],
    *,
    redis: str | None = None,
    password: str | None = None,
    env: dict[str, str] | None = None,
    drive: str = "",
    down: list[str] | None = None,
) -> dict[str, Any]:
    spec = {
        "samples": samples,
        "redis": redis,
        "redis_password": password,
        "env": env or {},
        "drive": drive,
        "down": down or [],
    }
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, str(RUNNER), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["stderr"] = proc.stderr
    return out


def test_basic_configuration() -> None:
    out = run(
        ["basic_configuration.py"],
        redis="plain",
        drive=(
            "r = client.generate(prompt='Hello')\n"
            "RESULT = {'provider': r.provider, 'healthy': client._sync_manager.backend.health_check(),"
            " 'mode': client._sync_manager.mode}\n"
            "client.close()\n"
        ),
    )
    assert out["result"] == {"provider": "openai", "healthy": True, "mode": "pubsub"}


def test_redis_with_authentication_survives_an_unreachable_redis() -> None:
    out = run(
        ["_imports.py", "redis_with_authentication.py"],
        drive=(
            f"c = FlexiAI(FlexiAIConfig(providers=[ProviderConfig(name='openai', api_key='k', "
            f"model='gpt-4', base_url='{FAKE}')], sync=sync))\n"
            "RESULT = {'provider': c.generate(prompt='Hi').provider,"
            " 'healthy': c._sync_manager.backend.health_check(),"
            " 'ssl': sync.redis_ssl, 'repr_has_password': 'your-redis-password' in repr(sync)}\n"
            "c.close()\n"
        ),
    )
    assert out["result"] == {
        "provider": "openai",
        "healthy": False,
        "ssl": True,
        "repr_has_password": False,
    }


def test_custom_worker_id() -> None:
    out = run(
        ["_imports.py", "custom_worker_id.py"],
        redis="plain",
        drive=(
            f"c = FlexiAI(FlexiAIConfig(providers=[ProviderConfig(name='openai', api_key='k', "
            f"model='gpt-4', base_url='{FAKE}')], sync=sync))\n"
            "c.generate(prompt='Hi')\n"
            "RESULT = c._sync_manager.worker_id\n"
            "c.close()\n"
        ),
    )
    assert out["result"] == "web-worker-1"


def test_custom_key_prefix_channel_and_ttl() -> None:
    out = run(
        ["_imports.py", "custom_prefix_and_channel.py"],
        redis="plain",
        down=["openai"],
        drive=(
            "import json, redis\n"
            f"c = FlexiAI(FlexiAIConfig(providers=[ProviderConfig(name='openai', api_key='k', "
            f"model='gpt-4', base_url='{FAKE}')], sync=sync))\n"
            "r = redis.Redis(port=6379, decode_responses=True)\n"
            "p = r.pubsub(); p.subscribe('myapp:flexiai:events'); p.get_message(timeout=1)\n"
            "try:\n    c.generate(prompt='Hi')\nexcept Exception:\n    pass\n"
            "msg = p.get_message(timeout=2)\n"
            "RESULT = {'ttl': r.ttl('myapp:flexiai:state:openai'),"
            " 'state': json.loads(r.get('myapp:flexiai:state:openai'))['state'],"
            " 'event': json.loads(msg['data'])['type']}\n"
            "p.close(); r.close(); c.close()\n"
        ),
    )
    assert 7100 < out["result"]["ttl"] <= 7200
    assert out["result"]["state"] == "CLOSED"  # 3 failures (1 try + 2 retries) of 5
    assert out["result"]["event"] == "FAILURE"


def test_environment_variables() -> None:
    env = {
        "FLEXIAI_SYNC_ENABLED": "true",
        "FLEXIAI_SYNC_BACKEND": "redis",
        "FLEXIAI_SYNC_REDIS_HOST": "redis.example.com",
        "FLEXIAI_SYNC_REDIS_PORT": "6379",
        "FLEXIAI_SYNC_REDIS_PASSWORD": "your-password",
        "FLEXIAI_SYNC_REDIS_SSL": "true",
        "FLEXIAI_PROVIDER_1_NAME": "openai",
        "FLEXIAI_PROVIDER_1_API_KEY": "sk-test",
        "FLEXIAI_PROVIDER_1_MODEL": "gpt-4",
        "FLEXIAI_PROVIDER_1_BASE_URL": FAKE,
    }
    out = run(
        ["environment_variables.py"],
        env=env,
        drive=(
            "RESULT = {'provider': client.generate(prompt='Hi').provider,"
            " 'host': config.sync.redis_host, 'ssl': config.sync.redis_ssl}\nclient.close()\n"
        ),
    )
    assert out["result"] == {"provider": "openai", "host": "redis.example.com", "ssl": True}


def test_scenario1_gunicorn_uvicorn_app() -> None:
    out = run(
        ["_imports.py", "scenario1_app.py"],
        redis="plain",
        drive="RESULT = client.generate(prompt='Hi').content\nclient.close()\n",
    )
    assert out["result"] == "openai says: Hi"


def test_scenario3_serverless_with_tls_and_password() -> None:
    env = {"REDIS_HOST": "localhost", "REDIS_PORT": "6379", "REDIS_PASSWORD": "s3cret-pw"}
    out = run(
        ["_imports.py", "scenario3_serverless.py"],
        redis="tls",
        password="s3cret-pw",
        env=env,
        drive=(
            "resp = handler({}, None)\n"
            "RESULT = {'content': resp.content,"
            " 'healthy': client._sync_manager.backend.health_check()}\n"
            "client.close()\n"
        ),
    )
    assert out["result"] == {
        "content": "openai says: Translate to French: Hello world",
        "healthy": True,
    }


def test_scenario4_development_without_redis() -> None:
    out = run(
        ["_imports.py", "scenario4_development.py"],
        drive=(
            "a = FlexiAI(config=disabled_config); b = FlexiAI(config=config)\n"
            "RESULT = [a._sync_manager is None, a.generate(prompt='x').provider,"
            " b._sync_manager.backend.name, b.generate(prompt='y').provider]\n"
            "a.close(); b.close()\n"
        ),
    )
    assert out["result"] == [True, "openai", "memory", "openai"]


def test_graceful_shutdown_health_checks_and_diagnosis() -> None:
    out = run(
        [
            "basic_configuration.py",
            "graceful_shutdown.py",
            "health_checks.py",
            "troubleshooting_diagnosis.py",
        ],
        redis="plain",
        drive="RESULT = response.content\n",
    )
    assert out["result"] == "openai says: Hello"
    lines = out["stdout"].splitlines()
    # health_checks.py and the diagnosis run on the closed client of the manual-cleanup block
    assert lines[0] in ("Sync backend healthy", "Sync backend unavailable")
    assert lines[1].startswith("StateSyncManager(")
    assert lines[3] != ""


def test_application_metrics_log_lines_match_the_guide() -> None:
    out = run(
        ["application_metrics.py", "basic_configuration.py"],
        redis="plain",
        down=["openai"],
        drive=(
            "from flexiai.exceptions import AllProvidersFailedError\n"
            "for _ in range(5):\n"
            "    try:\n"
            "        client.generate(prompt='Hello')\n"
            "    except AllProvidersFailedError:\n"
            "        pass\n"
            "RESULT = client.get_provider_status()['openai']['state']\n"
            "client.close()\n"
        ),
    )
    assert out["result"] == "OPEN"
    log = out["stderr"]
    assert "INFO:flexiai.client:Sync manager initialized (backend: redis)" in log
    assert "INFO:flexiai.sync.manager:Worker " in log
    assert "INFO:flexiai.circuit_breaker:Circuit opened for provider openai" in log
    assert "INFO:flexiai.sync.manager:Broadcasting state change: openai OPENED" in log


def test_example1_fastapi_with_multiple_workers() -> None:
    pytest.importorskip("fastapi")
    out = run(
        ["example1_fastapi.py"],
        redis="plain",
        drive=(
            "from fastapi.testclient import TestClient\n"
            "with TestClient(app) as tc:\n"
            "    gen = tc.post('/generate', params={'prompt': 'hi'}).json()\n"
            "    health = tc.get('/health').json()\n"
            "RESULT = {'gen': gen, 'health': health, 'closed': client._closed}\n"
        ),
    )
    assert out["result"] == {
        "gen": {"response": "openai says: hi"},
        "health": {"status": "healthy", "sync_enabled": True, "sync_healthy": True},
        "closed": True,
    }


def test_example2_lambda_with_elasticache_tls() -> None:
    env = {"ELASTICACHE_ENDPOINT": "localhost", "OPENAI_API_KEY": "sk-test"}
    out = run(
        ["example2_lambda_elasticache.py"],
        redis="tls",
        env=env,
        drive=("RESULT = lambda_handler({'prompt': 'Bonjour'}, None)\n"),
    )
    body = out["result"]["body"]
    assert out["result"]["statusCode"] == 200
    assert body["response"] == "openai says: Bonjour"
    assert body["provider"] == "openai"
    assert body["worker_id"]
