"""Every code block of the docs runs or, for shell commands, names things that exist.

Python blocks run page by page, in order and in one namespace, as a reader would paste
them, inside a private network namespace (block_runner.py) where 127.0.0.1:6379 is a
redis-server of the test's own and providers are the fake LLM server; the page's
`export NAME=value` shell lines set the environment in between, as in the reader's shell.
A Python block followed directly by a ```text block must print exactly that text.

Shell blocks are only checked cheaply: each command is one a user has (an allow-list of
common tools) or one this repository provides (a script that exists, a `flexiai`
subcommand, a module that imports), and every file they name exists.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flexiai.config import ENVIRONMENT_VARIABLES, PROVIDER_VARIABLE
from tests.docs.markdown import DOCS, ROOT, Block, blocks, pages

RUNNER = Path(__file__).with_name("block_runner.py")

# Tools a reader has or installs; the docs may tell them to run these.
EXTERNAL_COMMANDS = {
    "apt-get", "aws", "awscurl", "brew", "cat", "cd", "cdk", "cfn-lint", "docker", "export",
    "curl", "gunicorn", "kubectl", "make", "mkdocs", "pip", "redis-cli", "redis-server", "sam",
    "source", "sudo", "systemctl", "uvicorn",
}  # fmt: skip
# Names the docs misspell on purpose, to show the error.
MISSPELT_ON_PURPOSE = {"FLEXIAI_SYNC_ENABLD"}


def _steps(page: Path) -> list[tuple[Block, dict[str, Any]]]:
    """The page's Python blocks and export lines, in page order."""
    steps: list[tuple[Block, dict[str, Any]]] = []
    for block in blocks(page):
        if block.lang == "python":
            steps.append((block, {"where": block.where, "python": block.code}))
        elif block.lang in ("bash", "sh", "shell"):
            exported = dict(
                word.split("=", 1)
                for command in _commands(block)
                if command.startswith("export ")
                for word in shlex.split(command)[1:]
            )
            if exported:
                steps.append((block, {"where": block.where, "export": exported}))
    return steps


def _python_pages() -> list[Path]:
    return [p for p in sorted(DOCS.rglob("*.md")) if any(b.lang == "python" for b in blocks(p))]


def _netns_problem() -> str | None:
    if shutil.which("unshare") is None or shutil.which("redis-server") is None:
        return "needs unshare and redis-server"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return None if probe.returncode == 0 else "cannot create a network namespace here"


@pytest.mark.redis_server
@pytest.mark.parametrize("page", _python_pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_python_blocks_run_as_written(page: Path) -> None:
    problem = _netns_problem()
    if problem:
        pytest.skip(problem)
    steps = _steps(page)
    code = [block for block, step in steps if "python" in step]
    spec = {"steps": [step for _, step in steps]}
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, str(RUNNER), json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    failed = result["failed"]
    assert failed is None, f"{steps[failed['step']][0].where}\n{failed['error']}"
    assert len(result["outputs"]) == len(code)
    for block, printed in zip(code, result["outputs"], strict=True):
        if block.output is not None:
            assert printed == block.output, block.where


def _commands(block: Block) -> list[str]:
    """The commands of a shell block: continuations joined, comments, heredoc bodies and
    prompts' output dropped."""
    commands: list[str] = []
    heredoc_end: str | None = None
    pending = ""
    for line in block.code.splitlines():
        if heredoc_end is not None:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        line = pending + line
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        stripped = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not stripped:
            continue
        marker = re.search(r"<<-?'?\"?(\w+)", stripped)
        if marker:
            heredoc_end = marker[1]
        commands.append(stripped)
    return commands


@functools.cache
def _help(*subcommand: str) -> str:
    """`flexiai [SUBCOMMAND] --help`, or "" when it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "flexiai.cli", *subcommand, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return proc.stdout if proc.returncode == 0 else ""


def _problems(command: str, subcommands: set[str]) -> list[str]:
    words = shlex.split(command.split("|")[0].split("&&")[0].split(">")[0])
    while words and re.fullmatch(r"\w+=\S*", words[0]):  # VAR=value command
        words = words[1:]
    if not words:
        return []
    head, args = words[0], words[1:]
    problems: list[str] = []
    if head == "flexiai":
        if not args or args[0] not in subcommands:
            problems.append(f"`flexiai {args[0] if args else ''}` is not a subcommand")
        else:
            usage = _help(args[0])
            options = [a.split("=")[0] for a in args[1:] if a.startswith("--")]
            problems += [f"`flexiai {args[0]}` has no {o}" for o in options if o not in usage]
    elif head.endswith("python") or head.endswith("python3"):
        if args[:1] == ["-m"]:
            module = args[1]
            if module not in ("pip", "build") and importlib.util.find_spec(module) is None:
                problems.append(f"no module {module}")
        elif args and args[0].endswith(".py") and not (ROOT / args[0]).is_file():
            problems.append(f"no file {args[0]}")
    elif "/" in head:
        if not (ROOT / head).is_file():
            problems.append(f"no script {head}")
    elif head not in EXTERNAL_COMMANDS:
        problems.append(f"unknown command {head!r} (add it to EXTERNAL_COMMANDS if it is real)")
    for arg in args:
        # Files of this repository that the command names.
        named = re.fullmatch(r"(\./)?(bench|scripts|events|examples|docs|tests|handlers)/\S+", arg)
        if named and not (ROOT / arg).exists():
            problems.append(f"no file {arg}")
    return list(dict.fromkeys(problems))


def test_shell_commands_name_things_that_exist() -> None:
    subcommands = set(re.findall(r"^    ([\w-]+)\s", _help(), re.M))
    assert {"status", "demo"} <= subcommands, _help()
    checked, problems = 0, []
    for page in pages():
        for block in blocks(page):
            if block.lang not in ("bash", "sh", "shell"):
                continue
            for command in _commands(block):
                checked += 1
                problems += [f"{block.where}: {p}" for p in _problems(command, subcommands)]
    assert checked > 10, "the shell-block reader found almost nothing"
    assert problems == []


def test_yaml_blocks_parse() -> None:
    found = [b for p in pages() for b in blocks(p) if b.lang in ("yaml", "yml")]
    for block in found:
        assert list(yaml.safe_load_all(block.code)), block.where


def test_every_flexiai_variable_named_is_real() -> None:
    unknown = []
    for page in pages():
        text = page.read_text(encoding="utf-8").replace("{N}", "1")
        for name in set(re.findall(r"\bFLEXIAI_[A-Z0-9_]*[A-Z0-9]\b", text)):
            known = name in ENVIRONMENT_VARIABLES or PROVIDER_VARIABLE.match(name)
            if not known and name not in MISSPELT_ON_PURPOSE:
                unknown.append(f"{page.relative_to(ROOT)}: {name}")
    assert sorted(unknown) == []


def test_the_readme_quick_start_is_the_getting_started_one() -> None:
    """README.md and docs/getting-started.md show the same quick start (the README's is
    also run on its own by tests/core/test_readme.py)."""
    readme = [b.code for b in blocks(ROOT / "README.md") if b.lang == "python"]
    docs = [b.code for b in blocks(DOCS / "getting-started.md") if b.lang == "python"]
    assert readme == docs[:1]
