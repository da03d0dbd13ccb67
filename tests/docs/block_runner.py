"""Run one page's Python blocks, in order and in one namespace, in a private network
namespace where 127.0.0.1:6379 is a redis-server of the test's own and the fake LLM server
listens on 127.0.0.1:8900.

    unshare --net python block_runner.py SPEC_JSON

SPEC: {"steps": [{"where": "docs/x.md:12", "python": code} or {"where": ..., "export":
{name: value}}, ...]}: the page's Python blocks and, in page order, the `export NAME=value`
lines of its shell blocks, which set the environment as they would in the reader's shell
(with $VARIABLES expanded). The pages read provider settings the way a service does, from
the environment: OPENAI_API_KEY and OPENAI_BASE_URL (and the same for ANTHROPIC_), which
this runner points at the fake server. Prints one JSON line: {"outputs": [stdout of each
Python step run], "failed": null | {"step": i, "error": traceback}}.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.guide.netns_runner import FAKE_PORT, start_redis  # noqa: E402

FAKE = f"http://127.0.0.1:{FAKE_PORT}"
ENVIRONMENT = {
    "OPENAI_API_KEY": "sk-docs-test",
    "OPENAI_BASE_URL": f"{FAKE}/p/openai/v1",
    "ANTHROPIC_API_KEY": "sk-ant-docs-test",
    "ANTHROPIC_BASE_URL": f"{FAKE}/p/anthropic",
}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from flexiai.testing import FakeLLMServer

    workdir = Path(tempfile.mkdtemp(prefix="flexiai-docs-"))
    redis = start_redis("plain", None, workdir)
    os.environ.update(ENVIRONMENT)
    os.chdir(workdir)  # whatever a block writes lands in the temporary folder
    outputs: list[str] = []
    failed: dict[str, Any] | None = None
    try:
        with FakeLLMServer(port=FAKE_PORT):
            namespace: dict[str, Any] = {"__name__": "__docs__"}
            for n, step in enumerate(spec["steps"]):
                if "export" in step:
                    for name, value in step["export"].items():
                        os.environ[name] = os.path.expandvars(value)
                    continue
                out = io.StringIO()
                try:
                    with contextlib.redirect_stdout(out):
                        # The pages' blocks run as written: that is this runner's purpose.
                        exec(compile(step["python"], step["where"], "exec"), namespace)  # noqa: S102
                except BaseException:
                    failed = {"step": n, "error": traceback.format_exc()}
                    break
                finally:
                    outputs.append(out.getvalue())
    finally:
        redis.kill()
        redis.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return {"outputs": outputs, "failed": failed}


def main() -> None:
    from subprocess import run as run_process

    run_process(["ip", "link", "set", "lo", "up"], check=True)
    result = run(json.loads(sys.argv[1]))
    print(json.dumps(result))
    sys.stdout.flush()
    # A block may leave a client open; its threads must not keep the namespace alive.
    os._exit(0)


if __name__ == "__main__":
    main()
