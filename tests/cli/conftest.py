"""Running ``flexiai`` commands in tests: in-process for speed, as a subprocess when the
test is about the process itself (exit on a signal, children left behind)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from flexiai.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FLEXIAI_* variable of the machine's reaches a command (it could name 6379)."""
    for name in list(os.environ):
        if name.startswith("FLEXIAI_"):
            monkeypatch.delenv(name)


@pytest.fixture
def flexiai(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """``flexiai(*argv)`` runs the command in this process and returns its exit status and
    output."""

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "flexiai.cli", *argv]


def run_command(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLEXIAI_")}
    environ.update(env or {})
    return subprocess.run(
        command(*argv), env=environ, capture_output=True, text=True, timeout=timeout
    )


def processes_with_tmpdir(tmpdir: str) -> list[tuple[int, str]]:
    """Live processes started with ``TMPDIR=tmpdir`` in their environment, or working in a
    directory under it, and their command lines. (valkey-server rewrites its command line
    and environment to set its title, but it works in the directory it was given.)"""
    marker = f"TMPDIR={tmpdir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if not cmdline:  # a zombie: it is gone, only not reaped yet
                continue
            inherited = marker in (entry / "environ").read_bytes().split(b"\0")
            cwd = str((entry / "cwd").readlink())
        except OSError:
            continue
        if inherited or cwd.startswith(tmpdir + os.sep):
            found.append((int(entry.name), cmdline.strip()))
    return found
