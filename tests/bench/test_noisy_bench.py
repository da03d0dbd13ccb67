"""bench/noisy.py stays runnable, and bench/run_all.py runs it.

A smoke test of the bench's shape only: which lines and rows it prints, for which variants
and error rates. It asserts nothing about the figures, which a busy machine moves at will
(and ``--quick`` fleets are too small to mean much): the targets are the bench's to report,
not the test suite's to enforce.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.redis_server]

REPO = Path(__file__).resolve().parents[2]
LABELS = ("flexiai pub/sub", "flexiai snapshot", "flexiai per-process", "pybreaker + Redis")
RATES = ("2 %", "20 %", "50 %", "100 %")
ROW = re.compile(r"^(2 workers, (?P<variant>[^,]+), (?P<what>[^:]+)): (?P<figure>.+?)\s{2,}")


def run_bench(*argv: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLEXIAI_")}
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "noisy.py"), *argv],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=110,
    )


def test_a_quick_run_prints_the_matrix_every_figure_per_variant_and_the_command() -> None:
    result = run_bench("--quick")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("primary's share of answers")
    assert lines[1].split() == ["variant", *" ".join(RATES).split()]
    for label, line in zip(LABELS, lines[2:6], strict=True):
        assert line.startswith(f"2 x {label}")
    header = next(line for line in lines if line.startswith("figure"))
    assert header.split() == ["figure", "value", "floor/peer", "ratio", "target", "pass?"]
    rows: dict[str, set[str]] = {label: set() for label in LABELS}
    for line in lines:
        match = ROW.match(line)
        if match:
            rows[match["variant"]].add(f"{match['what']}: {match['figure']}")
    for label in LABELS:
        figures = rows[label]
        for rate in RATES:
            assert f"{rate} errors: primary's share of answers" in figures, (label, rate)
            assert (
                f"{rate} errors: first failure until the whole fleet skips the primary" in figures
            )
        assert "100 % errors: calls wasted on the dead primary" in figures
        assert any(
            f.startswith("healthy: Redis commands sent per worker per second") for f in figures
        )
        assert any(f.startswith("healthy: Redis commands executed per worker") for f in figures)
    assert lines[-1] == "reproduce: python bench/noisy.py --quick"


def test_a_wrong_variant_is_one_line_on_stderr() -> None:
    result = run_bench("--variants", "pubsub,nope")

    assert result.returncode == 2
    assert "--variants: unknown nope" in result.stderr


def test_run_all_runs_the_noisy_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    before = set(sys.modules)
    try:
        import run_all

        benchmarks: list[Any] = run_all._benchmarks("redis://127.0.0.1:1/0")
    finally:  # bench modules have top-level names (fleet, noisy): take them back out
        bench = str(REPO / "bench")
        for name in set(sys.modules) - before:
            if str(getattr(sys.modules[name], "__file__", "")).startswith(bench):
                del sys.modules[name]
    assert "noisy" in [name for name, _, _ in benchmarks]
