"""The fake LLM server itself: scripts, counters, down/up, shutdown and the control API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from flexiai.testing import Drop, Error, FakeLLMServer, Malformed, Reply, Slow


def _chat(
    client: httpx.Client, server: FakeLLMServer, name: str, text: str = "hi"
) -> httpx.Response:
    return client.post(
        f"{server.base_url(name, 'openai')}/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": text}]},
    )


def _content(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def test_a_script_is_consumed_in_order_then_the_default_answers(fake_llm: FakeLLMServer) -> None:
    fake_llm.script("openai", [Error(500), Reply("second"), Error(429, retry_after=3)])

    with httpx.Client() as client:
        statuses = [_chat(client, fake_llm, "openai") for _ in range(4)]

    assert [r.status_code for r in statuses] == [500, 200, 429, 200]
    assert _content(statuses[1]) == "second"
    assert statuses[2].headers["retry-after"] == "3"
    assert _content(statuses[3]) == "openai says: hi"
    assert fake_llm.pending("openai") == 0


def test_set_default_changes_what_an_empty_script_does(fake_llm: FakeLLMServer) -> None:
    fake_llm.set_default("openai", Error(503, message="maintenance"))
    fake_llm.script("openai", [Reply("one good answer")])

    with httpx.Client() as client:
        first, second = _chat(client, fake_llm, "openai"), _chat(client, fake_llm, "openai")

    assert _content(first) == "one good answer"
    assert second.status_code == 503
    assert second.json()["error"]["message"] == "maintenance"


def test_requests_are_recorded_per_provider_and_returned_as_copies(
    fake_llm: FakeLLMServer,
) -> None:
    with httpx.Client() as client:
        _chat(client, fake_llm, "openai", "first")
        _chat(client, fake_llm, "openai-backup", "elsewhere")
        _chat(client, fake_llm, "openai", "second")

    recorded = fake_llm.requests("openai")
    recorded[0].json["messages"].clear()  # a copy: the server's record is untouched
    recorded.clear()

    again = fake_llm.requests("openai")
    assert [r.json["messages"][0]["content"] for r in again] == ["first", "second"]
    assert (fake_llm.count("openai"), fake_llm.count("openai-backup")) == (2, 1)
    assert fake_llm.count("never-called") == 0


def test_down_answers_503_until_up_and_leaves_the_script_waiting(
    fake_llm: FakeLLMServer,
) -> None:
    fake_llm.script("openai", [Reply("after recovery")])
    fake_llm.down("openai")

    with httpx.Client() as client:
        while_down = [_chat(client, fake_llm, "openai").status_code for _ in range(3)]
        fake_llm.up("openai")
        after = _chat(client, fake_llm, "openai")

    assert while_down == [503, 503, 503]
    assert _content(after) == "after recovery"
    assert fake_llm.count("openai") == 4


def test_reset_forgets_scripts_defaults_down_flags_and_requests(fake_llm: FakeLLMServer) -> None:
    fake_llm.script("openai", [Error(500)])
    fake_llm.set_default("openai", Error(500))
    fake_llm.down("anthropic")
    with httpx.Client() as client:
        _chat(client, fake_llm, "openai")

    fake_llm.reset()

    assert fake_llm.count("openai") == 0
    with httpx.Client() as client:
        assert _chat(client, fake_llm, "openai").status_code == 200
        assert _chat(client, fake_llm, "anthropic").status_code == 200


def test_connections_are_counted_once_each_however_many_requests_they_carry(
    fake_llm: FakeLLMServer,
) -> None:
    before = fake_llm.connections_accepted()
    with httpx.Client() as kept_alive:
        for _ in range(3):
            assert _chat(kept_alive, fake_llm, "openai").status_code == 200
    with httpx.Client() as another:
        assert _chat(another, fake_llm, "openai").status_code == 200
        fake_llm.reset()  # forgets what was asked, not what connected
        read = another.get(f"{fake_llm.url}/_control/connections").json()

    assert fake_llm.connections_accepted() - before == 2
    assert read == {"accepted": fake_llm.connections_accepted()}


def test_unknown_paths_answer_404(fake_llm: FakeLLMServer) -> None:
    with httpx.Client() as client:
        outside = client.post(f"{fake_llm.url}/v1/chat/completions", json={})
        unknown_api = client.post(f"{fake_llm.url}/p/openai/v1/embeddings", json={})

    assert (outside.status_code, unknown_api.status_code) == (404, 404)
    assert fake_llm.count("openai") == 1  # a routed request is recorded even when unanswerable


def test_malformed_sends_the_exact_body_and_drop_sends_nothing(fake_llm: FakeLLMServer) -> None:
    fake_llm.script("openai", [Malformed("<html>oops"), Drop()])

    with httpx.Client() as client:
        junk = _chat(client, fake_llm, "openai")
        with pytest.raises(httpx.RemoteProtocolError):
            _chat(client, fake_llm, "openai")

    assert (junk.status_code, junk.text) == (200, "<html>oops")


def test_stop_ends_a_slow_reply_in_flight_promptly() -> None:
    server = FakeLLMServer().start()
    server.script("openai", [Slow(60)])
    outcome: list[BaseException] = []

    def call() -> None:
        with httpx.Client(timeout=30) as client:
            try:
                _chat(client, server, "openai")
            except httpx.HTTPError as exc:
                outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    while server.count("openai") == 0:
        time.sleep(0.01)
    server.stop()
    caller.join(timeout=10)

    assert not caller.is_alive()
    assert len(outcome) == 1  # the caller saw the connection go away, not a reply


def test_base_url_follows_each_apis_path_convention(fake_llm: FakeLLMServer) -> None:
    assert fake_llm.base_url("openai") == f"{fake_llm.url}/p/openai/v1"
    assert fake_llm.base_url("openai-backup") == f"{fake_llm.url}/p/openai-backup/v1"
    assert fake_llm.base_url("claude", "anthropic") == f"{fake_llm.url}/p/claude"
    assert fake_llm.base_url("primary", "openai") == f"{fake_llm.url}/p/primary/v1"


def test_importing_flexiai_testing_pulls_in_no_http_client() -> None:
    code = (
        "import sys, flexiai.testing; "
        "print(sorted(m for m in ('httpx', 'boto3', 'botocore', 'pydantic') if m in sys.modules))"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_control_api_steers_a_server_running_in_another_process() -> None:
    command = [
        sys.executable,
        "-m",
        "flexiai.testing.fake_llm",
        "--port",
        "0",
        "--providers",
        "openai,claude=anthropic",
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            lines = [process.stdout.readline().split() for _ in range(2)]
            chat = f"{url}/p/openai/v1/chat/completions"
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

            with httpx.Client(timeout=5) as client:
                assert client.post(chat, json=body).status_code == 200
                assert client.post(f"{url}/_control/openai/down").json()["down"] is True
                down = client.post(chat, json=body)
                assert client.post(f"{url}/_control/openai/up").json()["down"] is False
                up = client.post(chat, json=body)
                count = client.get(f"{url}/_control/openai/count").json()["count"]
                client.post(f"{url}/_control/reset")
                after_reset = client.get(f"{url}/_control/openai/count").json()["count"]

            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert url.startswith("http://127.0.0.1:")
    assert lines == [["openai", f"{url}/p/openai/v1"], ["claude", f"{url}/p/claude"]]
    assert (down.status_code, up.status_code) == (503, 200)
    assert up.json()["choices"][0]["message"]["content"] == "openai says: hi"
    assert (count, after_reset) == (3, 0)
    assert returncode == 0


@pytest.mark.slow
def test_the_module_runs_as_a_script_that_stops_on_sigint() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "flexiai.testing.fake_llm"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            with httpx.Client(timeout=5) as client:
                health = client.get(f"{url}/_control/health").json()
            os.kill(process.pid, signal.SIGINT)
            returncode = process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert health == {"ok": True}
    assert returncode == 0
