"""layer/: a make target per makefile-built resource; requirements that track pyproject."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from flexiai_dev.cloudformation import load_template
from flexiai_dev.lambda_runtime import find_python

REPO_ROOT = Path(__file__).resolve().parents[2]
LAYER = REPO_ROOT / "layer"
SAM_VENV = Path(os.environ.get("SAM_VENV", REPO_ROOT / ".venv-sam"))

#: Run by the layer's python3.12: every .py under python/ has a hash-based, unchecked .pyc
#: for this interpreter whose hash is its source's, and whose code names its path on Lambda.
#: Prints the offenders, one per line.
CHECK_BYTECODE = """
import importlib.util, marshal, pathlib, sys
root = pathlib.Path(sys.argv[1])
for source in sorted(root.rglob("*.py")):
    pyc = pathlib.Path(importlib.util.cache_from_source(str(source)))
    if not pyc.is_file():
        print("no .pyc:", source.relative_to(root))
        continue
    data = pyc.read_bytes()
    flags = int.from_bytes(data[4:8], "little")
    if data[:4] != importlib.util.MAGIC_NUMBER or flags != 0b01:
        print("not python3.12 unchecked-hash:", pyc.relative_to(root))
    elif data[8:16] != importlib.util.source_hash(source.read_bytes()):
        print("stale (hash differs from the source):", pyc.relative_to(root))
    elif marshal.loads(data[16:]).co_filename != "/opt/python/" + source.relative_to(root).as_posix():
        print("not compiled for /opt/python:", pyc.relative_to(root))
for orphan in root.rglob("*.pyc"):
    if orphan.parent.name != "__pycache__":
        print("a .pyc outside __pycache__:", orphan.relative_to(root))
"""

#: Shipped by the Powertools layer (built with aws-lambda-powertools[all]), not by ours.
FROM_POWERTOOLS_LAYER = {"pydantic", "pydantic-settings", "aws-lambda-powertools"}


def _bytecode_offenders(python312: str, root: Path) -> str:
    check = subprocess.run(
        [python312, "-I", "-c", CHECK_BYTECODE, str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    return check.stdout


def _compile_bytecode(
    root: Path, version: str, bytecode_python: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BYTECODE_PYTHON"}
    if bytecode_python is not None:
        env["BYTECODE_PYTHON"] = bytecode_python
    return subprocess.run(
        ["sh", str(LAYER / "compile-bytecode.sh"), str(root), version],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def _requirements(lines: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs}


def _layer_requirements() -> dict[str, Requirement]:
    text = (LAYER / "requirements.txt").read_text(encoding="utf-8")
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return _requirements([line for line in lines if line])


def _runtime_requirements() -> dict[str, Requirement]:
    """What `pip install flexiai[redis]` needs: the layer's job (Powertools comes separately)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return _requirements(project["dependencies"] + project["optional-dependencies"]["redis"])


def test_layer_requirements_are_flexiai_redis_dependencies_minus_the_powertools_layer() -> None:
    runtime = _runtime_requirements()
    layer = _layer_requirements()
    assert set(layer) == set(runtime) - FROM_POWERTOOLS_LAYER
    for name, requirement in layer.items():
        assert requirement.specifier == runtime[name].specifier, (
            f"{name}: layer/requirements.txt says {requirement.specifier}, "
            f"pyproject.toml says {runtime[name].specifier}"
        )


def test_makefile_has_a_target_for_every_makefile_built_resource() -> None:
    """`sam build` runs `make build-<LogicalId>` for each resource with BuildMethod makefile."""
    template = load_template(REPO_ROOT / "template.yaml")
    built = sorted(
        logical_id
        for logical_id, resource in template["Resources"].items()
        if resource.get("Metadata", {}).get("BuildMethod") == "makefile"
    )
    assert {"FlexiAILayerX8664", "FlexiAILayerArm64"} <= set(built)
    makefile = (LAYER / "Makefile").read_text(encoding="utf-8")
    targets = {
        target
        for line in makefile.splitlines()
        if (match := re.match(r"^([\w .-]+):(?!=)", line))
        for target in match.group(1).split()
    }
    assert {f"build-{logical_id}" for logical_id in built} <= targets
    assert "build-FlexiAILayer" in targets  # the documented by-hand target (x86_64)
    for logical_id in built:
        resource = template["Resources"][logical_id]
        if resource["Type"] == "AWS::Serverless::Function":
            assert resource["Metadata"]["ContextPath"] == "layer"
        else:
            assert resource["Properties"]["ContentUri"].rstrip("/") == "layer"


def _sources(root: Path) -> Path:
    python = root / "python"
    (python / "pkg").mkdir(parents=True)
    (python / "pkg" / "__init__.py").write_text("from pkg.mod import VALUE\n")
    (python / "pkg" / "mod.py").write_text("VALUE = 1\n")
    (python / "single.py").write_text("def f():\n    return 2\n")
    return python


def test_compile_bytecode_writes_reproducible_unchecked_hash_pyc_for_opt_python(
    tmp_path: Path,
) -> None:
    python312 = find_python("3.12")
    if python312 is None:
        pytest.skip("no python3.12: the layer's bytecode is compiled by the runtime's Python")
    first, second = _sources(tmp_path / "a"), _sources(tmp_path / "b")
    for root in (first, second):
        result = _compile_bytecode(root, "3.12")
        assert result.returncode == 0, result.stdout + result.stderr
    assert _bytecode_offenders(python312, first) == ""
    compiled = sorted(p.relative_to(first) for p in first.rglob("*.pyc"))
    assert sorted(p.name for p in compiled) == [
        "__init__.cpython-312.pyc",
        "mod.cpython-312.pyc",
        "single.cpython-312.pyc",
    ]
    # Another build directory, the same bytes: nothing of the build's own path is recorded.
    assert all((first / p).read_bytes() == (second / p).read_bytes() for p in compiled)
    # The check the layer build test relies on sees a source changed after compiling, and
    # a source never compiled.
    (first / "pkg" / "mod.py").write_text("VALUE = 2\n")
    (first / "late.py").write_text("")
    assert _bytecode_offenders(python312, first).splitlines() == [
        "no .pyc: late.py",
        "stale (hash differs from the source): pkg/__pycache__/mod.cpython-312.pyc",
    ]


def test_compile_bytecode_fails_naming_bytecode_python_without_the_runtimes_python(
    tmp_path: Path,
) -> None:
    python = _sources(tmp_path)
    missing = _compile_bytecode(python, "3.99")
    assert missing.returncode != 0
    assert "no python3.99 was found" in missing.stderr
    assert "BYTECODE_PYTHON" in missing.stderr
    wrong = _compile_bytecode(python, "3.99", bytecode_python=sys.executable)
    assert wrong.returncode != 0
    assert f"BYTECODE_PYTHON={sys.executable} is not a python3.99" in wrong.stderr
    assert not list(python.rglob("*.pyc"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "machine"),
    [("build-FlexiAILayer", "x86_64"), ("build-FlexiAILayerArm64", "aarch64")],
)
def test_layer_builds_cp312_wheels_without_what_the_powertools_layer_ships(
    tmp_path: Path, target: str, machine: str
) -> None:
    """A real build from PyPI: python/ holds flexiai, redis and a cp312 hiredis for the
    target's architecture, no pydantic, and python3.12 bytecode for every source."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    python312 = find_python("3.12")
    if python312 is None:
        pytest.skip("no python3.12: the layer's bytecode is compiled by the runtime's Python")
    out = tmp_path / "artifacts"
    result = subprocess.run(
        [
            "make",
            "--makefile",
            str(LAYER / "Makefile"),
            target,
            f"ARTIFACTS_DIR={out}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    python = out / "python"
    assert (python / "flexiai").is_dir()
    assert list(python.glob("flexiai-*.dist-info"))
    assert (python / "redis").is_dir()
    (extension,) = (python / "hiredis").glob("*.so")
    assert extension.name.endswith(f".cpython-312-{machine}-linux-gnu.so")
    assert not (python / "pydantic").exists(), "pydantic must come from the Powertools layer"
    assert not (python / "bin").exists()
    # Bytecode for the runtime's Python only (Lambda's /opt is read-only: without it, every
    # cold start compiles flexiai, httpx and redis), and none left by the host's pip.
    caches = {pyc.name.split(".")[-2] for pyc in python.rglob("__pycache__/*.pyc")}
    assert caches == {"cpython-312"}
    assert _bytecode_offenders(python312, python) == ""


@pytest.mark.slow
def test_sam_build_needs_no_docker(tmp_path: Path) -> None:
    """`sam build` on a copy of the repo with stub handlers builds the layer and both functions
    (a python3.12 compiles the layer's bytecode, as SAM's own Python builder would need it)."""
    sam = SAM_VENV / "bin" / "sam"
    if not sam.exists():
        pytest.skip(f"{sam} is missing: run scripts/sam-validate.sh --prepare")
    if find_python("3.12") is None:
        pytest.skip("no python3.12: the layer's bytecode is compiled by the runtime's Python")
    for name in ("template.yaml", "pyproject.toml"):
        shutil.copy2(REPO_ROOT / name, tmp_path / name)
    for name in ("layer", "flexiai"):
        shutil.copytree(
            REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "build")
        )
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    for module in ("generate", "breaker_status"):
        (handlers / f"{module}.py").write_text("def handler(event, context):\n    return {}\n")
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run(
        [str(sam), "build"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    build = tmp_path / ".aws-sam" / "build"
    assert (build / "GenerateFunction" / "generate.py").is_file()
    assert (build / "BreakerStatusFunction" / "breaker_status.py").is_file()
    # Both layers are built (make cannot be told the Architecture parameter); each for its own.
    for layer, machine in (("FlexiAILayerX8664", "x86_64"), ("FlexiAILayerArm64", "aarch64")):
        python = build / layer / "python"
        assert (python / "flexiai").is_dir()
        (extension,) = (python / "hiredis").glob("*.so")
        assert extension.name.endswith(f"-{machine}-linux-gnu.so"), layer
        assert (python / "flexiai" / "__pycache__" / "client.cpython-312.pyc").is_file(), layer
