"""``flexiai demo`` as a user runs it: a subprocess that needs no services and no keys, and
that leaves no process and no temporary directory behind, whether it ends or is stopped.

Every process the demo starts (its valkey-server, its workers) inherits the demo's
environment, so a private ``TMPDIR`` finds them all, and their temporary directories.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from flexiai_dev.servers import RedisProcess, free_port
from tests.cli.conftest import command, processes_with_tmpdir, run_command

pytestmark = pytest.mark.slow

#: How long a stopped demo may take to exit before the test gives up on it: a guard
#: against a hang, far above what a busy machine needs (it once needed over 30 s).
HANG_GUARD = 300

VERDICT = re.compile(r"wasted fewer calls on the dead provider: (\d+) vs (\d+) per-process")
NOISY = re.compile(
    r"While openai was noisy \((\d+)% of its calls failed\), the shared breaker stayed "
    r"closed: openai answered ([\d.]+)% of requests"
)


def assert_the_shared_breaker_stayed_closed_while_noisy(out: str, noise: int, workers: int) -> None:
    """The noisy phase: announced, narrated, in the table, and summed up."""
    text = " ".join(out.split())
    assert f"openai turns NOISY: {noise}% of its calls fail" in text
    assert f"its breaker stayed CLOSED on all {workers} workers" in text  # the shared run
    assert f"noisy ({noise}% errors): openai's share" in text
    assert re.search(rf"noisy \({noise}% errors\): its breaker [│| ]*stayed CLOSED", text)
    verdict = NOISY.search(text)
    assert verdict, out
    assert int(verdict.group(1)) == noise
    assert 0 < float(verdict.group(2)) <= 100


def private_tmp(tmp_path: Path) -> Path:
    directory = tmp_path / "tmp"
    directory.mkdir()
    return directory


def assert_nothing_left(tmp: Path) -> None:
    deadline = time.monotonic() + 5  # a killed child can take a moment to be reaped
    while processes_with_tmpdir(str(tmp)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with_tmpdir(str(tmp)) == []
    assert list(tmp.iterdir()) == []


def test_the_demo_needs_nothing_shows_the_story_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    tmp = private_tmp(tmp_path)
    chart = tmp_path / "timeline.png"

    result = run_command("demo", "--duration", "3", "--chart", str(chart), env={"TMPDIR": str(tmp)})

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "started valkey-server" in out
    for line in ("openai goes DOWN", "openai's breaker open", "openai goes UP", "failback"):
        assert line in out
    assert_the_shared_breaker_stayed_closed_while_noisy(out, 5, 8)
    verdict = VERDICT.search(" ".join(out.split()))
    assert verdict, out
    shared, per_process = map(int, verdict.groups())
    assert shared < per_process
    assert "probes at recovery" in out
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert_nothing_left(tmp)


@pytest.mark.redis_server
def test_the_demo_uses_an_existing_redis_in_snapshot_mode(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    tmp = private_tmp(tmp_path)

    result = run_command(
        "demo",
        "--duration",
        "2.5",
        "--workers",
        "4",
        "--mode",
        "snapshot",
        "--noise",
        "10",
        "--redis-url",
        redis_server.url,
        env={"TMPDIR": str(tmp)},
    )

    assert result.returncode == 0, result.stderr
    assert "started valkey-server" not in result.stdout
    assert_the_shared_breaker_stayed_closed_while_noisy(result.stdout, 10, 4)
    verdict = VERDICT.search(" ".join(result.stdout.split()))
    assert verdict, result.stdout
    shared, per_process = map(int, verdict.groups())
    assert shared < per_process
    prefix = re.search(r"--key-prefix (demo-[0-9a-f]+)", result.stdout)
    assert prefix
    with redis_server.client() as client:
        assert client.exists(f"{prefix.group(1)}:state:openai")
    assert_nothing_left(tmp)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stopping_the_demo_midway_leaves_nothing_behind(tmp_path: Path, signum: int) -> None:
    tmp = private_tmp(tmp_path)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLEXIAI_")}
    process = subprocess.Popen(
        command("demo", "--duration", "20", "--workers", "4"),
        env={**environ, "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(processes_with_tmpdir(str(tmp))) < 6:  # demo, valkey-server, 4 workers
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the demo never started its fleet"
            time.sleep(0.05)
        time.sleep(3.0)  # the workers are warmed up and sending requests by now
        process.send_signal(signum)
        _, err = process.communicate(timeout=HANG_GUARD)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == (130 if signum == signal.SIGINT else 128 + signum), err
    assert "Traceback" not in err
    assert_nothing_left(tmp)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--redis-url", "notaurl"], "--redis-url: redis_url must start with"),
        (["--redis-url", "refused"], "--redis-url: cannot reach the server"),
        (["--duration", "0.5"], "--duration must be between"),
        (["--workers", "0"], "--workers must be between"),
        (["--noise", "150"], "--noise must be a percentage between 0 and 100"),
        (["--chart", "/nonexistent-flexiai-dir/timeline.png"], "--chart: no such directory"),
    ],
)
def test_demo_errors_are_one_line(tmp_path: Path, argv: list[str], expected: str) -> None:
    tmp = private_tmp(tmp_path)
    argv = [f"redis://127.0.0.1:{free_port()}/0" if a == "refused" else a for a in argv]

    result = run_command("demo", *argv, env={"TMPDIR": str(tmp)})

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert expected in result.stderr
    assert_nothing_left(tmp)
