"""Cold start: what a fresh Python process pays to import flexiai, build a client, import a
Lambda handler and serve its first invocation, next to a bare interpreter and pydantic.

Every case runs in fresh processes (``repeats`` each, after one discarded warm-up that fills
the bytecode caches), interleaved round by round so drift hits all cases alike; the figure
is the median wall time of the whole process, interpreter start-up included:

* ``bare python``: ``python -c pass``, the floor;
* ``pydantic baseline``: import pydantic and validate a small model;
* ``import flexiai``;
* ``flexiai client (3 providers)``: import, ``load_config()`` from ``FLEXIAI_*`` variables
  naming three providers, build ``FlexiAI`` (which opens no connection);
* ``import openai`` / ``import anthropic``: the SDKs flexiai replaces, when installed;
* ``handler import``: ``handlers/generate.py`` (Powertools + flexiai's middleware);
* ``handler first invocation``: import it and serve one ``events/generate.json`` event: the
  client is built, every breaker is read from a real ``redis-server`` (snapshot mode, as on
  Lambda) and a FakeLLMServer provider answers;
* ``handler first invocation, no Tracer``: the same handler, events and client without
  Powertools' Tracer (Logger, Metrics, the event handler and flexiai's middleware as
  shipped): the difference is what the X-Ray SDK costs;
* ``openai SDK handler first invocation``: the same handler written with the official SDK,
  when installed.

Targets (issue 2): the client row at most 1.5x the pydantic baseline, and at most 1/8 of
``import openai``.

    python bench/cold_start.py [--repeats N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):  # the checkout, and _common when imported by run_all
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

COMMAND = "python bench/cold_start.py --repeats 10"
HANDLERS = ROOT / "handlers"
EVENT = ROOT / "events" / "generate.json"
PYDANTIC_TARGET = 1.5
OPENAI_TARGET = 1 / 8

Row = dict[str, Any]

_PYDANTIC = """\
from pydantic import BaseModel
class Item(BaseModel):
    name: str
    price: float = 0.0
    tags: list[str] = []
Item(name="x", price=1.5, tags=["a"])
"""

_CLIENT = """\
from flexiai import FlexiAI, load_config
FlexiAI(load_config()).close()
"""

_HANDLER_IMPORT = f"""\
import json, sys, time
started = time.perf_counter()
sys.path.insert(0, {str(HANDLERS)!r})
import generate
print("BENCH:" + json.dumps({{"import_ms": (time.perf_counter() - started) * 1000}}))
"""

_HANDLER_INVOKE = f"""\
import json, sys, time
started = time.perf_counter()
sys.path.insert(0, {str(HANDLERS)!r})
import generate
imported = time.perf_counter()
from flexiai.aws.context import LocalLambdaContext
event = json.loads(open({str(EVENT)!r}).read())
response = generate.handler(event, LocalLambdaContext("bench", timeout=30))
done = time.perf_counter()
assert response["statusCode"] == 200, response
from flexiai.aws import close_clients
close_clients()
print("BENCH:" + json.dumps({{"import_ms": (imported - started) * 1000,
                              "invoke_ms": (done - imported) * 1000}}))
"""

_NO_TRACER_HANDLER_INVOKE = f"""\
import json, os, time
started = time.perf_counter()
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from flexiai.aws import flexiai_handler
from flexiai.aws.http_events import generate_api
logger = Logger()
metrics = Metrics(namespace=os.environ["POWERTOOLS_METRICS_NAMESPACE"])
app = generate_api()

@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics(capture_cold_start_metric=True)
@flexiai_handler
def handler(event, context):
    return app.resolve(event, context)

imported = time.perf_counter()
from flexiai.aws.context import LocalLambdaContext
event = json.loads(open({str(EVENT)!r}).read())
response = handler(event, LocalLambdaContext("bench", timeout=30))
done = time.perf_counter()
assert response["statusCode"] == 200, response
from flexiai.aws import close_clients
close_clients()
print("BENCH:" + json.dumps({{"import_ms": (imported - started) * 1000,
                              "invoke_ms": (done - imported) * 1000}}))
"""

_OPENAI_HANDLER_INVOKE = f"""\
import json, os, time
started = time.perf_counter()
from aws_lambda_powertools import Logger
from openai import OpenAI
logger = Logger()
client = OpenAI(base_url=os.environ["FLEXIAI_PROVIDER_1_BASE_URL"],
                api_key=os.environ["FLEXIAI_PROVIDER_1_API_KEY"], max_retries=2, timeout=30)

@logger.inject_lambda_context
def handler(event, context):
    body = json.loads(event["body"])
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{{"role": "user", "content": body["prompt"]}}])
    return {{"statusCode": 200, "body": json.dumps({{"content": answer.choices[0].message.content}})}}

imported = time.perf_counter()
from flexiai.aws.context import LocalLambdaContext
event = json.loads(open({str(EVENT)!r}).read())
response = handler(event, LocalLambdaContext("bench", timeout=30))
done = time.perf_counter()
assert response["statusCode"] == 200, response
print("BENCH:" + json.dumps({{"import_ms": (imported - started) * 1000,
                              "invoke_ms": (done - imported) * 1000}}))
"""


class _Case:
    def __init__(
        self, name: str, code: str | None, env: dict[str, str] | None = None, note: str = ""
    ) -> None:
        self.name = name
        self.code = code  # None: not runnable here, reported with ``note``
        self.env = env or {}
        self.note = note
        self.times: list[float] = []
        self.inner: list[dict[str, float]] = []


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEXIAI_", "POWERTOOLS_"))}
    env.pop("AWS_LAMBDA_FUNCTION_NAME", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode caches on, as in a deployed package
    return env


def _three_providers() -> dict[str, str]:
    env: dict[str, str] = {}
    for index, (name, model) in enumerate(
        [
            ("openai", "gpt-4o-mini"),
            ("anthropic", "claude-3-5-haiku-latest"),
            ("gemini", "gemini-2.0-flash"),
        ],
        start=1,
    ):
        env[f"FLEXIAI_PROVIDER_{index}_NAME"] = name
        env[f"FLEXIAI_PROVIDER_{index}_MODEL"] = model
        env[f"FLEXIAI_PROVIDER_{index}_API_KEY"] = f"sk-bench-{name}"
        env[f"FLEXIAI_PROVIDER_{index}_BASE_URL"] = f"http://127.0.0.1:9/{name}"  # never called
    return env


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@contextmanager
def _lambda_stack(stack: ExitStack) -> Iterator[tuple[dict[str, str] | None, str]]:
    """A FakeLLMServer and a redis-server for the handler cases, or (None, why not)."""
    if shutil.which("redis-server") is None:
        yield None, "skipped: no redis-server binary"
        return
    if not (_installed("redis") and _installed("flexiai.circuit_breaker.stores.redis")):
        yield None, "skipped: the Redis sync backend (flexiai[redis]) is not available"
        return
    if not _installed("aws_lambda_powertools"):
        yield None, "skipped: aws-lambda-powertools is not installed"
        return
    from _common import redis_server

    from flexiai.testing import FakeLLMServer

    fake = stack.enter_context(FakeLLMServer())
    url = stack.enter_context(redis_server())
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    env = {
        "AWS_LAMBDA_FUNCTION_NAME": "bench-generate",  # sync mode auto -> snapshot
        # As on Lambda with active tracing: the X-Ray SDK (Powertools' Tracer) takes its
        # Lambda mode from LAMBDA_TASK_ROOT; off Lambda it builds a botocore client for
        # centralized sampling at import (150-400 ms here) that a function never pays.
        # Subsegments go to the daemon address over UDP on loopback, as on Lambda.
        "LAMBDA_TASK_ROOT": str(HANDLERS),
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "POWERTOOLS_SERVICE_NAME": "bench",
        "POWERTOOLS_METRICS_NAMESPACE": "FlexiAIBench",
        "FLEXIAI_PROVIDER_1_NAME": "openai",
        "FLEXIAI_PROVIDER_1_MODEL": "gpt-4o-mini",
        "FLEXIAI_PROVIDER_1_API_KEY": "sk-bench",
        "FLEXIAI_PROVIDER_1_BASE_URL": fake.base_url("openai"),
        "FLEXIAI_SYNC_ENABLED": "true",
        "FLEXIAI_SYNC_REDIS_HOST": host,
        "FLEXIAI_SYNC_REDIS_PORT": port,
    }
    yield env, f"snapshot from redis-server on :{port}, FakeLLMServer provider"


def _run_once(case: _Case, base: dict[str, str]) -> tuple[float, dict[str, float]]:
    assert case.code is not None
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", case.code],
        env={**base, **case.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = (time.perf_counter() - started) * 1000
    if result.returncode != 0:
        raise RuntimeError(f"{case.name} failed:\n{result.stderr[-2000:]}")
    inner: dict[str, float] = {}
    for line in result.stdout.splitlines():
        if line.startswith("BENCH:"):
            inner = json.loads(line[len("BENCH:") :])
    return elapsed, inner


def run(repeats: int = 10) -> list[Row]:
    """Measure every case; one row per case (see the module docstring)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    base = _base_env()
    with ExitStack() as stack:
        lambda_env, lambda_note = stack.enter_context(_lambda_stack(stack))
        cases = [
            _Case("bare python", "pass"),
            _Case("pydantic baseline", _PYDANTIC),
            _Case("import flexiai", "import flexiai"),
            _Case(
                "flexiai client (3 providers)",
                _CLIENT,
                _three_providers(),
                "load_config() from FLEXIAI_* + FlexiAI(); no connection",
            ),
        ]
        cases.extend(
            _Case(f"import {module}", f"import {module}")
            if _installed(module)
            else _Case(f"import {module}", None, note="not installed")
            for module in ("openai", "anthropic")
        )
        if lambda_env is None:
            cases.append(_Case("handler import", None, note=lambda_note))
            cases.append(_Case("handler first invocation", None, note=lambda_note))
            cases.append(_Case("handler first invocation, no Tracer", None, note=lambda_note))
        else:
            cases.append(_Case("handler import", _HANDLER_IMPORT, lambda_env))
            cases.append(
                _Case("handler first invocation", _HANDLER_INVOKE, lambda_env, lambda_note)
            )
            cases.append(
                _Case(
                    "handler first invocation, no Tracer",
                    _NO_TRACER_HANDLER_INVOKE,
                    lambda_env,
                    "the same without Powertools' Tracer (the X-Ray SDK)",
                )
            )
        name = "openai SDK handler first invocation"
        if lambda_env is not None and _installed("openai"):
            cases.append(_Case(name, _OPENAI_HANDLER_INVOKE, lambda_env, "same event, same server"))
        else:
            cases.append(_Case(name, None, note="not installed" if lambda_env else lambda_note))

        runnable = [c for c in cases if c.code is not None]
        for round_ in range(repeats + 1):  # round 0 warms the bytecode caches
            for case in runnable:
                elapsed, inner = _run_once(case, base)
                if round_:
                    case.times.append(elapsed)
                    case.inner.append(inner)

    bare = statistics.median(cases[0].times)
    pydantic = statistics.median(cases[1].times)
    rows: list[Row] = []
    for case in cases:
        if not case.times:
            rows.append(
                {
                    "name": case.name,
                    "median_ms": None,
                    "ratio_vs_bare": None,
                    "ratio_vs_pydantic": None,
                    "note": case.note,
                }
            )
            continue
        median = statistics.median(case.times)
        note = case.note
        if case.inner and case.inner[0]:
            parts = [
                f"{key.removesuffix('_ms')} {statistics.median(i[key] for i in case.inner):.0f} ms"
                for key in case.inner[0]
            ]
            note = "; ".join(filter(None, [note, "in-process: " + ", ".join(parts)]))
        rows.append(
            {
                "name": case.name,
                "median_ms": round(median, 1),
                "ratio_vs_bare": round(median / bare, 2),
                "ratio_vs_pydantic": round(median / pydantic, 2),
                "note": note,
            }
        )
    return rows


def _verdicts(rows: list[Row]) -> list[str]:
    by_name = {r["name"]: r for r in rows}
    client = by_name["flexiai client (3 providers)"]
    bare = by_name["bare python"]["median_ms"]
    pydantic = by_name["pydantic baseline"]["median_ms"]
    lines = []
    ratio = client["ratio_vs_pydantic"]
    net = (client["median_ms"] - bare) / max(pydantic - bare, 1e-9)
    lines.append(
        f"flexiai client vs pydantic baseline: {ratio:.2f}x whole process, {net:.2f}x net of "
        f"interpreter start-up (target <= {PYDANTIC_TARGET}x): "
        + ("met" if ratio <= PYDANTIC_TARGET else "NOT met")
    )
    openai = by_name["import openai"]
    if openai["median_ms"] is None:
        lines.append("flexiai client vs import openai: openai is not installed (target <= 1/8)")
    else:
        share = client["median_ms"] / openai["median_ms"]
        lines.append(
            f"flexiai client vs import openai: {share:.3f} (target <= {OPENAI_TARGET:.3f}): "
            + ("met" if share <= OPENAI_TARGET else "NOT met")
        )
    return lines


def _table(rows: list[Row]) -> str:
    bare = rows[0]["median_ms"]
    header = ("case", "median", "net of bare", "x bare", "x pydantic", "note")
    lines = []
    for r in rows:
        if r["median_ms"] is None:
            lines.append((r["name"], "-", "-", "-", "-", r["note"]))
            continue
        lines.append(
            (
                r["name"],
                f"{r['median_ms']:.1f} ms",
                f"{r['median_ms'] - bare:.1f} ms",
                f"{r['ratio_vs_bare']:.2f}x",
                f"{r['ratio_vs_pydantic']:.2f}x",
                r["note"],
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header[:-1])]
    out = []
    for line in (header, *lines):
        cells = [cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)]
        out.append("  ".join([*cells, line[-1]]).rstrip())
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="fresh processes per case")
    args = parser.parse_args(argv)
    rows = run(args.repeats)
    print(
        f"cold start, {args.repeats} fresh processes per case, median wall time "
        f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs)\n"
    )
    print(_table(rows))
    print()
    for line in _verdicts(rows):
        print(line)
    print(f"\nreproduce: {COMMAND}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
