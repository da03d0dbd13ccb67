"""bench/cold_start.py stays runnable and importable (as bench/run_all.py imports it).

A smoke test of the bench's shape only: which rows, which fields, which lines it prints.
It asserts nothing about the figures themselves, which a busy machine moves at will; the
targets are the bench's to report, not the test suite's to enforce.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

import pytest

from tests.aws.conftest import REPO

pytestmark = pytest.mark.slow

FIELDS = {"name", "median_ms", "ratio_vs_bare", "ratio_vs_pydantic", "note"}


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cold_start", REPO / "bench" / "cold_start.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_run_prints_a_row_per_case_the_verdicts_and_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = _load()
    runs: list[list[dict[str, Any]]] = []
    measure = module.run

    def run(repeats: int) -> list[dict[str, Any]]:
        runs.append(measure(repeats))
        return runs[-1]

    monkeypatch.setattr(module, "run", run)
    assert module.main(["--repeats", "1"]) == 0
    (rows,) = runs

    names = [r["name"] for r in rows]
    assert names[:4] == [
        "bare python",
        "pydantic baseline",
        "import flexiai",
        "flexiai client (3 providers)",
    ]
    assert {"import openai", "import anthropic", "handler first invocation"} <= set(names)
    assert len(set(names)) == len(names)
    for row in rows:
        assert set(row) == FIELDS, row["name"]
        measured = [row["median_ms"], row["ratio_vs_bare"], row["ratio_vs_pydantic"]]
        if row["median_ms"] is None:  # not runnable here: the note says why
            assert measured == [None, None, None], row
            assert row["note"], row["name"]
        else:
            assert all(isinstance(value, float) for value in measured), row
    for row in rows[:4]:
        assert row["median_ms"] is not None, f"{row['name']} always runs"
    bare, pydantic = rows[:2]
    assert bare["ratio_vs_bare"] == 1.0
    assert pydantic["ratio_vs_pydantic"] == 1.0
    first_call = next(r for r in rows if r["name"] == "handler first invocation")
    if first_call["median_ms"] is None:  # no redis-server or Powertools here
        assert first_call["note"].startswith("skipped:")
    else:
        assert "in-process: import" in first_call["note"]

    out = capsys.readouterr().out
    for name in names:
        assert name in out
    assert "flexiai client vs pydantic baseline:" in out
    assert "flexiai client vs import openai:" in out
    assert "reproduce: python bench/cold_start.py" in out
