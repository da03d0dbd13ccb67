"""``flexiai demo`` explains itself (issue 14, item 4): a legend for the breaker's words, a
headline with the costs (both fleets fail over; the difference is wasted calls and
waiting), a chart with smoothed rates that do not drop to 0 at the end, "interrupted" on
Ctrl-C, and ``scripts/demo`` saying how to run ``flexiai`` again.

The text and the chart are checked on recorded runs built here (fast, exact); one short
real run and the signals go through real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flexiai_dev import demo
from flexiai_dev.fleet import Call, FleetResult, RequestRecord, outage_spec
from tests.cli.conftest import command, processes_with_tmpdir, run_command
from tests.cli.test_demo import assert_nothing_left

ROOT = Path(__file__).resolve().parents[2]
#: How long a stopped demo may take to exit before the test gives up on it: a guard
#: against a hang, far above what a busy machine needs (it once needed over 30 s).
HANG_GUARD = 300
PROVIDERS = [(name, f"http://127.0.0.1:9/p/{name}") for name in demo.PROVIDERS]


def recorded(sync: str, wasted: int, *, workers: int = 4, rate: float = 10.0) -> FleetResult:
    """A 10-second run in which every worker sends ``rate`` requests a second; while the
    primary is down, the first ``wasted`` requests call it (and fail over), the rest skip it."""
    spec = outage_spec(
        PROVIDERS,
        duration=10.0,
        down_at=demo.DOWN_AT,
        up_at=demo.UP_AT,
        workers=workers,
        rate=rate,
        sync=sync,
        redis_url="redis://127.0.0.1:9/0",
    )
    down, up = 3.5, 6.5
    records = []
    left = wasted
    for worker in range(workers):
        t = worker / (workers * rate)
        while t < spec.duration:
            if down <= t < up:
                calls: tuple[Call, ...] = (Call("anthropic", t, 200, "CLOSED"),)
                took = 0.005
                if left:
                    left -= 1
                    calls = (Call("openai", t, 503, "CLOSED"), *calls)
                    took = 0.015
                provider = "anthropic"
            else:
                calls, provider, took = (Call("openai", t, 200, "CLOSED"),), "openai", 0.005
            records.append(RequestRecord(worker, t, t + took, True, provider, calls))
            t += 1 / rate
    return FleetResult(spec, records, [], [], {}, 0.0)


def test_the_legend_says_what_each_word_means() -> None:
    first, *lines = demo.legend_text().splitlines()
    meaning = dict(line.strip().split("  ", 1) for line in lines)
    meaning = {term.strip(): text.strip() for term, text in meaning.items()}

    assert first == "How to read it:"
    assert meaning["CLOSED"].startswith("healthy: calls flow to the provider")
    assert meaning["OPEN"].startswith("the provider is skipped")
    assert meaning["HALF_OPEN"].startswith("after recovery_timeout, one probe is allowed")
    assert {"breaker", "probe", "failback", "wasted call", "noisy"} <= set(meaning)
    # the live table shows meanings, in colours that say the same
    assert demo._STATE_CELL == {
        "CLOSED": ("calls flow", "green"),
        "OPEN": ("SKIPPED", "bold red"),
        "HALF_OPEN": ("probing", "yellow"),
    }


def test_the_headline_says_both_fail_over_and_what_per_process_cost() -> None:
    shared, local = recorded("pubsub", wasted=3), recorded("off", wasted=12)

    lines = demo.headline_text(shared, local).splitlines()

    assert lines[0] == (
        "HEADLINE: openai down for 3.0s; both fleets failed over, 0 failed user requests in "
        "either run."
    )
    assert lines[2].split()[:4] == ["wasted", "calls", "3", "12"]
    assert lines[5].split()[:4] == ["requests", "slowed", "3", "12"]
    assert lines[6].split()[:5] == ["median", "wait", "added", "10", "ms"]
    assert lines[-1].startswith(
        "The difference is cost, not failures: the per-process fleet made 9 more calls to "
        "the dead openai (4.0x), so 9 more user requests waited for a failed call"
    )
    assert "up to 18s more of users' waiting" in lines[-1]  # 9 x the 2s call timeout


def test_the_smoothed_rate_is_flat_for_steady_traffic_up_to_the_charts_end() -> None:
    result = recorded("off", wasted=0)
    end = demo.chart_end(result)
    window = demo.chart_window(result.spec)
    starts = [r.t0 for r in result.records]
    centres = [window / 2 + i * (end - window) / 99 for i in range(100)]

    rates = demo._rate(starts, centres, window)

    assert end == max(starts)  # trimmed to the last request, not the nominal duration
    assert min(rates) >= 0.9 * 40 and max(rates) <= 1.1 * 40  # 4 workers x 10/s, no drop


def test_the_chart_is_written_as_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "demo.png"

    demo._chart(str(path), [recorded("pubsub", wasted=3), recorded("off", wasted=12)])

    assert path.read_bytes().startswith(b"\x89PNG")


# -- real processes ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_short_real_run_shows_the_legend_the_headline_and_the_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    chart = tmp_path / "demo.png"

    result = run_command(
        "demo", "--duration", "2", "--workers", "2", "--no-live", "--chart", str(chart)
    )

    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "How to read it:" in out
    assert "CLOSED healthy: calls flow to the provider" in out
    assert "HALF_OPEN after recovery_timeout, one probe is allowed through" in out
    assert "HEADLINE: openai down for" in out
    assert "The difference is cost, not failures" in out
    assert chart.read_bytes().startswith(b"\x89PNG")


def wait_for_fleet(process: subprocess.Popen[str], tmp: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while len(processes_with_tmpdir(str(tmp))) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the demo never started its fleet"
        time.sleep(0.05)
    time.sleep(1.0)  # the workers are sending requests by now


@pytest.mark.slow
def test_ctrl_c_prints_interrupted_and_exits_130(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLEXIAI_")}
    process = subprocess.Popen(
        command("demo", "--duration", "30", "--workers", "2", "--no-live"),
        env={**environ, "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_fleet(process, tmp, 4)  # demo, valkey-server, 2 workers
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=HANG_GUARD)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in err
    assert_nothing_left(tmp)


# -- scripts/demo --------------------------------------------------------------------------------


@pytest.fixture
def ready_venv(tmp_path: Path) -> Path:
    """A virtualenv scripts/bootstrap finds up to date (so nothing is installed): the test
    interpreter, and a ``flexiai`` that runs this checkout's code."""
    import hashlib

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    flexiai = venv / "bin" / "flexiai"
    flexiai.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m flexiai.cli "$@"\n')
    flexiai.chmod(0o755)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".flexiai-installed").write_text(f"{digest}\ndemo,chart\n")
    return venv


def script(venv: Path, *argv: str, tmp: Path) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLEXIAI_")}
    return subprocess.Popen(
        [str(ROOT / "scripts" / "demo"), *argv],
        env={**environ, "VENV": str(venv), "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def test_scripts_demo_says_how_to_run_flexiai_again_and_keeps_the_exit_status(
    ready_venv: Path, tmp_path: Path
) -> None:
    process = script(ready_venv, "--duration", "0.5", tmp=tmp_path)
    out, err = process.communicate(timeout=120)

    assert process.returncode == 2  # the demo's own status for a bad argument
    assert out == ""  # nothing was installed, so nothing from pip or bootstrap
    assert "flexiai demo: --duration must be between" in err
    assert f". {ready_venv}/bin/activate\n  flexiai demo --chart demo.png" in err
    assert f"{ready_venv}/bin/flexiai demo --chart demo.png" in err


@pytest.mark.slow
def test_ctrl_c_in_scripts_demo_says_interrupted_and_how_to_run_again(
    ready_venv: Path, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    process = script(ready_venv, "--duration", "30", "--workers", "2", "--no-live", tmp=tmp)
    try:
        wait_for_fleet(process, tmp, 4)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        _, err = process.communicate(timeout=HANG_GUARD)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    assert process.returncode == 130
    assert "interrupted" in err.splitlines()
    assert "To run flexiai again" in err
    assert "Traceback" not in err
    assert_nothing_left(tmp)
