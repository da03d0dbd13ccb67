"""`python -m build` makes a wheel and an sdist that pass `twine check --strict`, carry the
package data (py.typed and every Lua script, wherever it lives in the package), the licence
and the changelog, and declare the metadata pyproject.toml promises.

The build runs on a copy of the checkout, in the isolated environment `build` makes from
[build-system] (so a stale setuptools in .venv cannot hide a wrong `requires`), and leaves
nothing behind in the checkout.
"""

from __future__ import annotations

import email.parser
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "flexiai"

#: Never part of a build's input: virtualenvs, caches, earlier build outputs, CDK output.
_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    "node_modules",
    "cdk.out",
    ".aws-sam",
    ".*_cache",
)


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("build", reason="`build` is in the dev extra")
    pytest.importorskip("twine", reason="`twine` is in the dev extra")
    work = tmp_path_factory.mktemp("packaging")
    src = work / "src"
    shutil.copytree(REPO, src, ignore=_IGNORE)
    out = work / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = list(out.glob("flexiai-*.whl"))
    sdists = list(out.glob("flexiai-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def _package_data() -> set[str]:
    """py.typed and every .lua file under flexiai/, as paths relative to the repository."""
    lua = {p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*.lua")}
    assert lua, "the Redis store's Lua scripts are missing from flexiai/"
    return lua | {"flexiai/py.typed"}


def test_twine_check_strict_passes_on_the_wheel_and_the_sdist(dists: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dists.values())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_wheel_carries_the_package_data_and_the_licence(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
    assert _package_data() <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)
    assert not [n for n in names if n.startswith(("tests/", "bench/", "infra/", "handlers/"))]


def test_the_sdist_carries_the_package_data_licence_and_changelog(
    dists: dict[str, Path],
) -> None:
    with tarfile.open(dists["sdist"]) as sdist:
        root, *_ = sdist.getnames()
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert root.startswith("flexiai-")
    assert _package_data() <= names
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "PKG-INFO"} <= names


def test_the_metadata_declares_licence_classifiers_keywords_and_dependencies(
    dists: dict[str, Path],
) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        (metadata_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(wheel.read(metadata_name).decode())
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["License"] is None, "the deprecated License field is gone"
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")], (
        "an SPDX license expression replaces license classifiers"
    )
    assert "circuit-breaker" in metadata["Keywords"].split(",")
    core = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert any(r.startswith("redis") for r in core), core
    assert not any(r.startswith("hiredis") for r in core), "hiredis stays optional"
    assert metadata["Description-Content-Type"] == "text/markdown"


def test_the_readme_install_lines_name_real_extras_and_the_wheel_the_build_makes(
    dists: dict[str, Path],
) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Install") : readme.index("## Quick start")]
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    named = {
        extra.strip()
        for group in re.findall(r"pip install \S*?\[([\w,-]+)\]", section)
        for extra in group.split(",")
    }
    assert named, "the README's install lines name no extras"
    assert named <= set(project["optional-dependencies"]), named
    wheels = set(re.findall(r"dist/(flexiai-\S+?\.whl)", section))
    assert wheels == {dists["wheel"].name}, wheels


# -- a fresh virtualenv with nothing but the wheel (issue 12: redis is a core dependency) --------

FRESH_VENV_SCRIPT = """
import importlib.util, json, sys
from flexiai import FlexiAI
from flexiai.models import CircuitBreakerConfig, FlexiAIConfig, ProviderConfig, SyncConfig

fake, redis_url = sys.argv[1], sys.argv[2]
providers = [
    ProviderConfig(name="openai", api_key="sk-fresh-SECRET", model="gpt-4o-mini", priority=1,
                   base_url=fake + "/p/openai/v1"),
    ProviderConfig(name="anthropic", api_key="sk-ant-fresh-SECRET",
                   model="claude-3-5-haiku-latest", priority=2,
                   base_url=fake + "/p/anthropic"),
]
config = FlexiAIConfig(
    providers=providers,
    sync=SyncConfig(enabled=True, backend="redis", redis_url=redis_url, mode="snapshot"),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=2),
)
with FlexiAI(config) as client:
    answers = [client.generate("hi").provider for _ in range(4)]
    status = client.get_provider_status()["openai"]
    print(json.dumps({
        "answers": answers,
        "state": str(status["state"]),
        "hiredis": importlib.util.find_spec("hiredis") is not None,
        "redis_from": importlib.util.find_spec("redis").origin,
    }))
"""


@pytest.fixture(scope="module")
def fresh_venv(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv where only `pip install <the wheel>` ran (dependencies from the index)."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         str(dists["wheel"])],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return python


def test_a_fresh_virtualenv_with_only_the_wheel_shares_breakers_through_redis(
    fresh_venv: Path, redis_server: Any, fake_llm: Any
) -> None:
    fake_llm.down("openai")
    proc = subprocess.run(
        [str(fresh_venv), "-c", FRESH_VENV_SCRIPT, fake_llm.url, redis_server.url],
        capture_output=True,
        text=True,
        cwd=fresh_venv.parent,  # not the checkout: flexiai must come from the venv
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["answers"] == ["anthropic"] * 4
    assert "OPEN" in result["state"]
    assert not result["hiredis"], "hiredis is optional: the core install must not pull it in"
    assert str(fresh_venv.parents[1]) in result["redis_from"]
    # the breaker is in the shared store, where every other worker reads it
    import redis

    stored = redis.Redis.from_url(redis_server.url, decode_responses=True).get(
        "flexiai:state:openai"
    )
    assert isinstance(stored, str) and json.loads(stored)["state"] == "OPEN"
    assert "SECRET" not in proc.stderr
