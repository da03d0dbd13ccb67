"""Run deployment-guide samples exactly as written, inside a private network namespace.

The guide hard-codes ``localhost:6379`` and hosts such as ``redis.example.com``. In a
namespace of our own (``unshare --net``), 127.0.0.1:6379 is a redis-server this runner
starts, the fake LLM server listens on 127.0.0.1:8900, and no other host resolves, so the
samples run unchanged without touching the machine's own Redis or the network.

    unshare --net python netns_runner.py SPEC_JSON

SPEC: {"samples": [...files...], "redis": "plain"|"tls"|null, "redis_password": str|null,
       "down": [provider names], "env": {...}, "drive": "python code run after the samples,
       which sets RESULT"}. Prints one JSON line: {"result": ..., "stdout": ...}.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
FAKE_PORT = 8900


def start_redis(kind: str, password: str | None, workdir: Path) -> subprocess.Popen[bytes]:
    args = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]
    if password:
        args += ["--requirepass", password]
    if kind == "tls":
        ca, cert, key = make_certs(workdir)
        args += [
            "--port",
            "0",
            "--tls-port",
            "6379",
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
        ]
        os.environ["SSL_CERT_FILE"] = str(ca)  # the samples pass no CA: trust ours by default
    else:
        args += ["--port", "6379"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    cli = ["redis-cli", "-p", "6379"] + (
        ["--tls", "--cacert", os.environ["SSL_CERT_FILE"]] if kind == "tls" else []
    )
    if password:
        cli += ["--no-auth-warning", "-a", password]
    while time.monotonic() < deadline:
        if subprocess.run([*cli, "ping"], capture_output=True).stdout.strip() == b"PONG":
            return proc
        time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


def make_certs(workdir: Path) -> tuple[Path, Path, Path]:
    ca_key, ca, key, csr, cert = (
        workdir / n for n in ("ca.key", "ca.pem", "s.key", "s.csr", "s.pem")
    )
    ext = workdir / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run: Callable[..., subprocess.CompletedProcess[bytes]] = lambda *a: subprocess.run(  # noqa: E731
        a, check=True, capture_output=True
    )
    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "1",
        "-subj",
        "/CN=flexiai-test-ca",
    )
    run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=localhost",
    )
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "1",
        "-extfile",
        str(ext),
    )
    return ca, cert, key


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    workdir = Path(tempfile.mkdtemp(prefix="flexiai-guide-"))
    redis = None
    try:
        if spec.get("redis"):
            redis = start_redis(spec["redis"], spec.get("redis_password"), workdir)
        os.environ.update(spec.get("env", {}))
        from flexiai.testing import FakeLLMServer

        with FakeLLMServer(port=FAKE_PORT) as fake:
            for name in spec.get("down", []):
                fake.down(name)
            out = io.StringIO()
            namespace: dict[str, Any] = {"__name__": "__guide_sample__", "fake": fake}
            with contextlib.redirect_stdout(out):
                for sample in spec["samples"]:
                    code = (HERE / "samples" / sample).read_text()
                    # The guide's samples run as written: that is this runner's purpose.
                    exec(compile(code, sample, "exec"), namespace)  # noqa: S102
                if spec.get("drive"):
                    exec(compile(spec["drive"], "drive", "exec"), namespace)  # noqa: S102
            print(
                json.dumps(
                    {"result": namespace.get("RESULT"), "stdout": out.getvalue()}, default=str
                )
            )
    finally:
        if redis is not None:
            redis.kill()
            redis.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
