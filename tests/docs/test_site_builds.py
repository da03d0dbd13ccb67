"""`mkdocs build --strict` succeeds and warns about nothing: every page is in the
navigation, every link and anchor resolves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.docs.markdown import ROOT


def test_the_site_builds_strictly_without_a_warning(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        # The theme's banner about its own end of life is news, not a problem of the docs.
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert not re.search(r"^(WARNING|ERROR)\b", log, re.M), log[-3000:]
    assert (site / "index.html").is_file()
    assert (site / "multi-worker-guide" / "index.html").is_file()
