"""Lambda cold start on the real runtime: awslambdaric in python3.12, the built layers.

Each variant runs in ``--runtimes`` fresh execution environments (``flexiai_dev.
lambda_runtime``: a new runtime process each), interleaved round by round so drift hits all
alike. Per environment: the init phase (process start to the runtime's first poll: the
interpreter, awslambdaric, the handler module's imports), the first invocation, one warm
invocation, and the process's RSS after the first invocation. Same event
(``events/generate.json``), same fake OpenAI-compatible server, Powertools' layer stood in
for by ``aws-lambda-powertools[all]`` built for python3.12 (with its bytecode, as pip installs
it), and no ``.pyc`` written at run time (as on Lambda's read-only file system):

* ``floor``: bench/lambda_floor/floor_handler.py, Powertools Logger + one httpx client;
* ``floor + Tracer, Metrics``: bench/lambda_floor/floor_observed_handler.py, the same with
  the Powertools utilities the shipped handlers use (Tracer, correlation id, Metrics): not
  a target, but it separates what observability costs from what flexiai costs;
* ``generate, sync off``: handlers/generate.py with ``FLEXIAI_SYNC_ENABLED=false``;
* ``generate, redis snapshot``: the same with snapshot sync on a real redis-server;
* ``openai SDK``: bench/lambda_openai/openai_handler.py (the SDK in a layer of its own).

``--causes`` adds peers that split the generate handler's distance to the floor into its
causes, each peer the one before plus one thing (bench/lambda_causes/): ``+ pydantic`` (the
observed floor with a pydantic model on the request path), ``+ pydantic, event handler``
(routed by Powertools' ``APIGatewayHttpResolver``, as flexiai.aws.http_events does) and
``+ pydantic, event handler, redis`` (one redis-py MGET per invocation). The report then
lists what each step adds to init+first and to RSS; what is left is flexiai's own code.

The flexiai layer is ``layer/Makefile``'s, which ships python3.12 bytecode
(``layer/compile-bytecode.sh``); the report says when a given layer has none. The floor takes
httpx from that layer too, so it gets the same bytecode.

Targets (issue 13): init + first invocation at most 1.3x the floor with sync off and 1.5x
with the snapshot; RSS after the first invocation at most 1.2x the floor's. ``--importtime``
adds the biggest imports (``python -X importtime`` in the runtime) of each variant, and
apart those its invocations did: work a handler defers to its first call, which the init
column does not show.

    python bench/lambda_cold_start.py [--runtimes 10] [--layer DIR] [--importtime] [--causes]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COMMAND = "python bench/lambda_cold_start.py --runtimes 10"
EVENT = ROOT / "events" / "generate.json"
TARGETS = {"generate, sync off": 1.3, "generate, redis snapshot": 1.5}
RSS_TARGET = 1.2
FLOOR = "floor"
OBSERVED_FLOOR = "floor + Tracer, Metrics"
WITH_PYDANTIC = "+ pydantic"
WITH_EVENT_HANDLER = "+ pydantic, event handler"
WITH_REDIS = "+ pydantic, event handler, redis"
SYNC_OFF = "generate, sync off"
SNAPSHOT = "generate, redis snapshot"
#: --causes: what each cause adds, as (cause, variants added, variants taken away): each
#: peer is the one before it plus one thing, so each difference isolates that thing.
CAUSES = (
    ("Tracer, Metrics", [OBSERVED_FLOOR], [FLOOR]),
    ("pydantic", [WITH_PYDANTIC], [OBSERVED_FLOOR]),
    ("Powertools event handler", [WITH_EVENT_HANDLER], [WITH_PYDANTIC]),
    ("flexiai (sync off)", [SYNC_OFF], [WITH_EVENT_HANDLER]),
    ("redis-py", [WITH_REDIS], [WITH_EVENT_HANDLER]),
    ("flexiai's snapshot sync", [SNAPSHOT, WITH_EVENT_HANDLER], [SYNC_OFF, WITH_REDIS]),
)


@dataclass
class Variant:
    name: str
    code: Path
    handler: str
    layers: list[Path]
    variables: dict[str, str]
    init_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    warm_ms: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)

    def cold_ms(self) -> list[float]:
        return [i + f for i, f in zip(self.init_ms, self.first_ms, strict=True)]


def _spec(variant: Variant) -> Any:
    from flexiai_dev.cloudformation import FunctionSpec

    return FunctionSpec(
        logical_id=variant.name.split(",")[0].replace(" ", ""),
        function_name="bench",
        handler=variant.handler,
        code_uri=variant.code,
        runtime="python3.12",
        timeout=30,
        memory_size=512,
        log_group=None,
    )


@contextlib.contextmanager
def _built_layer(given: str | None, python: str) -> Iterator[Path]:
    """``given``, else the ``sam build`` output's, else one built now by layer/Makefile."""
    if given:
        yield Path(given)
        return
    built = ROOT / ".aws-sam" / "build" / "FlexiAILayerX8664"
    if (built / "python" / "flexiai").is_dir():
        yield built
        return
    with tempfile.TemporaryDirectory(prefix="flexiai-layer-") as tmp:
        print("building the flexiai layer (layer/Makefile, as sam build does)...", file=sys.stderr)
        subprocess.run(
            [
                "make",
                "--makefile",
                str(ROOT / "layer" / "Makefile"),
                "build-FlexiAILayerX8664",
                f"ARTIFACTS_DIR={tmp}",
                f"PYTHON={sys.executable}",
                f"BYTECODE_PYTHON={python}",
            ],
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        yield Path(tmp)


def _one_runtime(variant: Variant, python: str, log: Any, options: tuple[str, ...] = ()) -> None:
    from flexiai_dev.lambda_runtime import LambdaRuntime

    event = EVENT.read_bytes()
    with LambdaRuntime(
        _spec(variant),
        python=python,
        layers=variant.layers,
        variables=variant.variables,
        region="us-east-1",
        log=log,
        python_options=options,
        host_environment={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    ) as runtime:
        first = runtime.invoke(event)
        warm = runtime.invoke(event)
    for invocation in (first, warm):
        document = invocation.payload(30)
        if invocation.failed or document.get("statusCode") != 200:
            raise RuntimeError(f"{variant.name}: {json.dumps(document)[:500]}")
    assert first.init_ms is not None
    variant.init_ms.append(first.init_ms)
    variant.first_ms.append(first.duration_ms)
    variant.warm_ms.append(warm.duration_ms)
    variant.rss_mb.append(first.rss_mb)


@dataclass
class ImportProfile:
    cumulative: list[tuple[str, float]]  # the biggest top-level imports
    by_package: list[tuple[str, float]]  # the packages' own time, wherever imported from
    total_ms: float  # every module's own time
    first_invoke: list[tuple[str, float]]  # the biggest top-level imports after the init
    first_invoke_ms: float  # every module's own time after the init


def _import_costs(variant: Variant, python: str, top: int = 8) -> ImportProfile:
    """One cold start under ``-X importtime``: the biggest top-level imports (cumulative ms),
    and the packages that cost most wherever they are imported from (the sum of their
    modules' own ms): pydantic, imported by flexiai.models, is not a top-level import.

    The runtime's ``START`` line, written once the init is over, splits the log: what is
    imported after it was imported by the invocations, so a handler that defers work to
    its first call shows it there."""
    with tempfile.TemporaryFile("w+") as log:
        _one_runtime(variant, python, log, ("-X", "importtime"))
        log.seek(0)
        text = log.read()
    costs: dict[str, float] = {}
    packages: dict[str, float] = {}
    after_init: dict[str, float] = {}
    after_init_ms = 0.0
    initialized = False
    for line in text.splitlines():
        initialized = initialized or line.startswith("START RequestId:")
        match = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)", line)
        if not match:
            continue
        module = match.group(4)
        package = module.split(".")[0]
        own_ms = int(match.group(1)) / 1000
        packages[package] = packages.get(package, 0) + own_ms
        top_level = len(match.group(3)) <= 1
        if top_level:
            costs[module] = costs.get(module, 0) + int(match.group(2)) / 1000
        if initialized:
            after_init_ms += own_ms
            if top_level:
                after_init[module] = after_init.get(module, 0) + int(match.group(2)) / 1000
    for name in [n for n in costs if n.startswith("encodings") or n in ("site", "awslambdaric")]:
        costs.pop(name, None)
    return ImportProfile(
        cumulative=sorted(costs.items(), key=lambda kv: -kv[1])[:top],
        by_package=sorted(packages.items(), key=lambda kv: -kv[1])[:top],
        total_ms=sum(packages.values()),
        first_invoke=sorted(after_init.items(), key=lambda kv: -kv[1])[:top],
        first_invoke_ms=after_init_ms,
    )


def _has_bytecode(layer: Path) -> bool:
    """Whether the layer carries python3.12 bytecode for flexiai (layer/Makefile's does)."""
    return (layer / "python" / "flexiai" / "__pycache__" / "client.cpython-312.pyc").is_file()


def run(runtimes: int, layer: str | None, importtime: bool, causes: bool) -> dict[str, Any]:
    from flexiai.testing import FakeLLMServer
    from flexiai_dev.lambda_runtime import find_python, package_layer, powertools_layer
    from flexiai_dev.servers import LocalRedis

    python = find_python()
    if python is None:
        raise SystemExit("no python3.12 on PATH or in pyenv: the Lambda runtime needs it")
    import importlib.metadata

    powertools = powertools_layer(python, "powertools")
    openai_layer = package_layer(python, f"openai=={importlib.metadata.version('openai')}")
    with (
        _built_layer(layer, python) as flexiai,
        FakeLLMServer() as fake,
        LocalRedis(shutil.which("redis-server")) as redis_server,
    ):
        provider = {
            "POWERTOOLS_SERVICE_NAME": "bench",
            "FLEXIAI_PROVIDER_1_NAME": "openai",
            "FLEXIAI_PROVIDER_1_MODEL": "gpt-4o-mini",
            "FLEXIAI_PROVIDER_1_API_KEY": "sk-bench-not-a-secret",
            "FLEXIAI_PROVIDER_1_BASE_URL": fake.base_url("openai"),
        }
        host, port = redis_server.url.removeprefix("redis://").split("/")[0].split(":")
        snapshot = {
            "FLEXIAI_SYNC_ENABLED": "true",
            "FLEXIAI_SYNC_BACKEND": "redis",
            "FLEXIAI_SYNC_MODE": "snapshot",
            "FLEXIAI_SYNC_REDIS_HOST": host,
            "FLEXIAI_SYNC_REDIS_PORT": port,
        }
        variants = [
            Variant(
                FLOOR,
                ROOT / "bench" / "lambda_floor",
                "floor_handler.handler",
                [powertools, flexiai],
                provider,
            ),
            Variant(
                OBSERVED_FLOOR,
                ROOT / "bench" / "lambda_floor",
                "floor_observed_handler.handler",
                [powertools, flexiai],
                provider,
            ),
            Variant(
                SYNC_OFF,
                ROOT / "handlers",
                "generate.handler",
                [powertools, flexiai],
                {**provider, "FLEXIAI_SYNC_ENABLED": "false"},
            ),
            Variant(
                SNAPSHOT,
                ROOT / "handlers",
                "generate.handler",
                [powertools, flexiai],
                {**provider, **snapshot},
            ),
            Variant(
                "openai SDK",
                ROOT / "bench" / "lambda_openai",
                "openai_handler.handler",
                [powertools, openai_layer],
                provider,
            ),
        ]
        if causes:
            peers = ROOT / "bench" / "lambda_causes"
            variants[2:2] = [
                Variant(
                    WITH_PYDANTIC,
                    peers,
                    "pydantic_handler.handler",
                    [powertools, flexiai],
                    provider,
                ),
                Variant(
                    WITH_EVENT_HANDLER,
                    peers,
                    "event_handler_handler.handler",
                    [powertools, flexiai],
                    provider,
                ),
                Variant(
                    WITH_REDIS,
                    peers,
                    "redis_handler.handler",
                    [powertools, flexiai],
                    {**provider, **snapshot},
                ),
            ]
        with Path(os.devnull).open("w") as log:
            for variant in variants:  # one discarded round: page cache, pip caches
                _one_runtime(variant, python, log)
                for series in (variant.init_ms, variant.first_ms, variant.warm_ms, variant.rss_mb):
                    series.clear()
            for _ in range(runtimes):
                for variant in variants:
                    _one_runtime(variant, python, log)
        imports = {v.name: _import_costs(v, python) for v in variants} if importtime else {}
        compiled = _has_bytecode(flexiai)
    return {"variants": variants, "imports": imports, "python": python, "compiled": compiled}


def report(result: dict[str, Any], runtimes: int) -> list[str]:
    variants: list[Variant] = result["variants"]
    floor = next(v for v in variants if v.name == FLOOR)
    observed = next((v for v in variants if v.name == OBSERVED_FLOOR), None)
    med = statistics.median
    width = max(26, *(len(v.name) + 2 for v in variants))
    lines = [
        f"Lambda cold start: awslambdaric in {result['python']}, {runtimes} fresh runtimes per "
        "variant, medians (ratio vs the floor); flexiai layer "
        + (
            "with python3.12 bytecode" if result["compiled"] else "WITHOUT bytecode (an old build?)"
        ),
        f"{'variant':<{width}}{'init':>16}{'first invoke':>16}{'init+first':>16}{'warm':>14}"
        f"{'RSS after 1st':>18}",
    ]

    def cell(values: list[float], floor_values: list[float], unit: str = "ms") -> str:
        return f"{med(values):8.1f} {unit} {med(values) / med(floor_values):4.2f}x"

    lines += [
        f"{v.name:<{width}}{cell(v.init_ms, floor.init_ms):>16}"
        f"{cell(v.first_ms, floor.first_ms):>16}{cell(v.cold_ms(), floor.cold_ms()):>16}"
        f"{cell(v.warm_ms, floor.warm_ms):>14}{cell(v.rss_mb, floor.rss_mb, 'MB'):>18}"
        for v in variants
    ]
    for v in variants:
        if v.name in TARGETS:
            ratio = med(v.cold_ms()) / med(floor.cold_ms())
            target = TARGETS[v.name]
            verdict = "met" if ratio <= target else "NOT met"
            lines.append(
                f"{v.name}: init+first {ratio:.2f}x the floor (target <= {target}x): {verdict}"
            )
            rss = med(v.rss_mb) / med(floor.rss_mb)
            verdict = "met" if rss <= RSS_TARGET else "NOT met"
            lines.append(f"{v.name}: RSS {rss:.2f}x the floor (target <= {RSS_TARGET}x): {verdict}")
            if observed is not None:
                lines.append(
                    f"{v.name}: against {OBSERVED_FLOOR!r} (no target): init+first "
                    f"{med(v.cold_ms()) / med(observed.cold_ms()):.2f}x, "
                    f"RSS {med(v.rss_mb) / med(observed.rss_mb):.2f}x"
                )
    lines += _causes(variants)
    for name, profile in result["imports"].items():
        total = profile.total_ms
        cumulative = ", ".join(f"{module} {ms:.0f} ms" for module, ms in profile.cumulative)
        lines.append(f"imports of {name} (-X importtime, cumulative): {cumulative}")
        packages = ", ".join(
            f"{package} {ms:.0f} ms ({ms / total:.0%})" for package, ms in profile.by_package
        )
        lines.append(f"imports of {name} (by package, share of all {total:.0f} ms): {packages}")
        if profile.first_invoke:
            later = ", ".join(f"{module} {ms:.0f} ms" for module, ms in profile.first_invoke)
            lines.append(
                f"imports of {name} after its init ({profile.first_invoke_ms:.0f} ms of all "
                f"{total:.0f} ms, cumulative): {later}"
            )
    lines.append(f"command: {COMMAND}")
    return lines


def _causes(variants: list[Variant]) -> list[str]:
    """What each --causes step adds to init+first and RSS (sums and differences of medians)."""
    by_name = {v.name: v for v in variants}
    if WITH_PYDANTIC not in by_name:
        return []
    med = statistics.median

    def total(names: list[str], series: str) -> float:
        return sum(
            med(by_name[n].cold_ms() if series == "cold" else by_name[n].rss_mb) for n in names
        )

    lines = ["what the distance to the floor is made of (--causes; differences of medians):"]
    for cause, added, taken in CAUSES:
        ms = total(added, "cold") - total(taken, "cold")
        mb = total(added, "rss") - total(taken, "rss")
        how = " + ".join(repr(n) for n in added) + " - " + " - ".join(repr(n) for n in taken)
        lines.append(f"  {cause:<26}{ms:+8.1f} ms init+first{mb:+7.1f} MB RSS   ({how})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtimes", type=int, default=10, help="fresh runtimes per variant")
    parser.add_argument("--layer", help="a built flexiai layer (default: .aws-sam/build's)")
    parser.add_argument("--importtime", action="store_true", help="list the biggest imports")
    parser.add_argument(
        "--causes", action="store_true", help="add peers that split the gap into its causes"
    )
    args = parser.parse_args()
    result = run(args.runtimes, args.layer, args.importtime, args.causes)
    print("\n".join(report(result, args.runtimes)))


if __name__ == "__main__":
    main()
