"""What the docs tests read in a Markdown file: fenced code blocks, links and headings.

Deliberately small: the pages are this project's own, so a fence is three backticks at any
indentation, and a link is ``[text](target)``, ``<a href="...">``, ``[label]: target`` or a
bare URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    output: str | None  # the ```text block right after this one, if any

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """README.md and every page of the site."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    raw: list[tuple[int, int, str, str]] = []  # (open line, close line, lang, code)
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent = len(opening["indent"])
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        raw.append((i + 1, j + 1, opening["lang"], "\n".join(body) + "\n"))
        i = j + 1
    found: list[Block] = []
    for n, (start, end, lang, code) in enumerate(raw):
        output = None
        if n + 1 < len(raw) and raw[n + 1][2] == "text":
            between = lines[end : raw[n + 1][0] - 1]
            if all(not line.strip() for line in between):
                output = raw[n + 1][3]
        found.append(Block(path, start, lang, code, output))
    return found


def prose(path: Path) -> str:
    """The file without its fenced blocks and inline code spans."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^[ \t]*```.*?^[ \t]*```[ \t]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def headings(path: Path) -> list[tuple[int, str]]:
    """(level, title) of every heading outside code blocks."""
    return [
        (len(m[1]), m[2].strip())
        for m in re.finditer(r"^(#{1,6})\s+(.+?)\s*#*\s*$", prose(path), re.M)
    ]


def anchor(title: str) -> str:
    """The id Python-Markdown's toc (and GitHub) give a heading, for plain-text titles."""
    slug = re.sub(r"[^\w\s-]", "", title.replace("`", "")).strip().lower()
    return re.sub(r"[\s]+", "-", slug)
