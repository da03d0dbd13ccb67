"""Run an ASGI app under gunicorn with uvicorn workers for a test, and stop it cleanly.

Every wait is bounded and says what it waited for; nothing here measures time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
#: Bounds on waits for a busy machine: start-up of 4 workers, and a graceful stop.
START_SECONDS = 120.0
STOP_SECONDS = 60.0


@dataclass
class Gunicorn:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def http(self) -> httpx.Client:
        """A client that opens a new connection per request, so that every worker of the
        master's shared socket may accept it (keep-alive would pin one worker)."""
        return httpx.Client(base_url=self.url, headers={"connection": "close"}, timeout=30)

    def stop(self) -> int:
        """SIGTERM, as a process manager stops it; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(STOP_SECONDS)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def gunicorn(
    app: str, tmp_path: Path, env: Mapping[str, str], *, workers: int = 4, preload: bool
) -> Iterator[Gunicorn]:
    port = _free_port()
    log = tmp_path / "gunicorn.log"
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        app,
        "--workers",
        str(workers),
        "--worker-class",
        "uvicorn_worker.UvicornWorker",
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "20",
        # gunicorn 23+ opens ~/.gunicorn/gunicorn.ctl by default: one path for every test.
        "--no-control-socket",
        *(["--preload"] if preload else []),
    ]
    with _serving(args, port, log, env) as server:
        yield server


@contextlib.contextmanager
def uvicorn(
    app: str, tmp_path: Path, env: Mapping[str, str], *, workers: int
) -> Iterator[Gunicorn]:
    """``uvicorn --workers``: a supervisor that *spawns* each worker, a fresh interpreter
    that imports the app itself (nothing is inherited by a fork)."""
    port = _free_port()
    log = tmp_path / "uvicorn.log"
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--timeout-graceful-shutdown",
        "20",
    ]
    with _serving(args, port, log, env) as server:
        yield server


@contextlib.contextmanager
def _serving(
    args: list[str], port: int, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[Gunicorn]:
    # The test's own import path first (a worktree run with PYTHONPATH=$PWD), then the repo.
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*paths, str(ROOT)]),
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(args, cwd=ROOT, env=environment, stdout=out, stderr=out)
    server = Gunicorn(process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_until_serving(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_until_serving(server: Gunicorn) -> None:
    give_up = time.monotonic() + START_SECONDS
    while time.monotonic() < give_up:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited early:\n{server.log.read_text()[-4000:]}")
        try:
            with server.http() as http:
                if http.get("/health").status_code == 200:
                    return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the server did not answer /health:\n{server.log.read_text()[-4000:]}")
