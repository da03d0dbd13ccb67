"""The README's quick start runs as written, against the fake server it tells you to start."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
RUNNER = ROOT / "tests" / "guide" / "netns_runner.py"


def quick_start_code() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Quick start")
    section = readme[start : readme.index("\n## ", start)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    code: str = blocks[0]
    return code


def test_quick_start_runs_as_written(tmp_path: Path) -> None:
    if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    sample = tmp_path / "quick_start.py"
    sample.write_text(quick_start_code())
    # The runner serves the fake LLM on 127.0.0.1:8900 inside a private network namespace,
    # as the README's first command does.
    spec: dict[str, Any] = {
        "samples": [str(sample)],
        "redis": None,
        "env": {},
        "drive": "",
        "down": [],
    }
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, str(RUNNER), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["stdout"].strip() == "openai says: Translate to French: Hello world openai 1"
