"""No document points outside the repository, and no relative link is broken.

Checked in README.md and every page under docs/: Markdown links, reference definitions,
HTML links and bare URLs, in prose and in code alike. Loopback URLs (the fake provider
server) and Redis URLs are settings, not links, and stay allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.docs.markdown import ROOT, anchor, headings, pages, prose

_URL = re.compile(r"\b(?:[a-z][a-z0-9+.-]*://|www\.)[^\s)\]>\"'`]*", re.I)
_LOCAL = re.compile(r"^(?:rediss?|unix)://|^https?://(?:127\.0\.0\.1|localhost|0\.0\.0\.0)[:/]")
_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_DEFINITION = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_HREF = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)

PAGES = pages()


def _ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _targets(path: Path) -> list[str]:
    text = prose(path)
    return [*_LINK.findall(text), *_DEFINITION.findall(text), *_HREF.findall(text)]


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_no_url_leaves_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    outside = [u for u in _URL.findall(text) if not _LOCAL.match(u)]
    outside += [t for t in _targets(page) if re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]
    assert outside == []


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_relative_links_point_at_files_and_headings_that_exist(page: Path) -> None:
    broken = []
    for target in _targets(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # reported by the test above
        path_part, _, fragment = unquote(target).partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
            continue
        known = {anchor(title) for _, title in headings(resolved)} if resolved.is_file() else set()
        if fragment and resolved.suffix == ".md" and fragment not in known:
            broken.append(target)
    assert broken == []


def test_the_readme_cites_nothing_outside_the_repository() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "shared/reference" not in readme
    assert not re.search(r"(?<![\w.])(?:/work/|\.\./)", readme)


def test_the_readme_keeps_the_two_commands_for_a_fresh_machine() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert (
        "./scripts/demo      # set up, then watch 8 workers ride out a provider outage "
        "(no keys, no services)\n"
        "./scripts/test      # set up, then run ruff, mypy --strict and the whole test suite\n"
    ) in readme
