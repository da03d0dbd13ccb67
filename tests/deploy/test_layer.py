"""layer/: a make target per makefile-built resource; requirements that track pyproject."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from flexiai_dev.cloudformation import load_template

REPO_ROOT = Path(__file__).resolve().parents[2]
LAYER = REPO_ROOT / "layer"
SAM_VENV = Path(os.environ.get("SAM_VENV", REPO_ROOT / ".venv-sam"))

#: Shipped by the Powertools layer (built with aws-lambda-powertools[all]), not by ours.
FROM_POWERTOOLS_LAYER = {"pydantic", "pydantic-settings", "aws-lambda-powertools"}


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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "machine"),
    [("build-FlexiAILayer", "x86_64"), ("build-FlexiAILayerArm64", "aarch64")],
)
def test_layer_builds_cp312_wheels_without_what_the_powertools_layer_ships(
    tmp_path: Path, target: str, machine: str
) -> None:
    """A real build from PyPI: python/ holds flexiai, redis and a cp312 hiredis for the
    target's architecture, no pydantic."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
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
    assert not list(python.rglob("__pycache__"))


@pytest.mark.slow
def test_sam_build_needs_neither_docker_nor_python312(tmp_path: Path) -> None:
    """`sam build` on a copy of the repo with stub handlers builds the layer and both functions."""
    sam = SAM_VENV / "bin" / "sam"
    if not sam.exists():
        pytest.skip(f"{sam} is missing: run scripts/sam-validate.sh --prepare")
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
