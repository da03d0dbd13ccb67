"""bench/cold_start.py stays runnable and importable (as a future bench/run_all.py will)."""

from __future__ import annotations

import importlib.util

import pytest

from tests.aws.conftest import REPO

pytestmark = pytest.mark.slow


def test_run_returns_one_row_per_case_with_ratios() -> None:
    spec = importlib.util.spec_from_file_location("cold_start", REPO / "bench" / "cold_start.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    rows = module.run(repeats=1)
    names = [r["name"] for r in rows]
    assert names[:4] == [
        "bare python",
        "pydantic baseline",
        "import flexiai",
        "flexiai client (3 providers)",
    ]
    assert {"import openai", "import anthropic", "handler first invocation"} <= set(names)
    for row in rows:
        assert set(row) == {"name", "median_ms", "ratio_vs_bare", "ratio_vs_pydantic", "note"}
    bare, pydantic, _, client = rows[:4]
    assert bare["ratio_vs_bare"] == 1.0
    assert pydantic["ratio_vs_pydantic"] == 1.0
    assert client["median_ms"] > bare["median_ms"]
    first_call = next(r for r in rows if r["name"] == "handler first invocation")
    if first_call["median_ms"] is None:  # no redis-server here
        assert first_call["note"].startswith("skipped:")
    else:
        assert "in-process: import" in first_call["note"]
