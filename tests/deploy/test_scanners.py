"""checkov and cfn-guard (the AWS Control Tower rules) find nothing in template.yaml or in the
CDK synth, except what a resource's Metadata suppresses, each suppression with its reason:

    Metadata:
      checkov: {skip: [{id: CKV_AWS_158, comment: "<why>"}]}
      guard: {SuppressedRules: [<rule>], Reasons: {<rule>: "<why>"}}

template.yaml is scanned as written (checkov reads SAM) and, for cfn-guard, after the SAM
transform (samtranslator from the aws-sam-cli environment), since the Control Tower rules
read only the CloudFormation types SAM generates. CDK and SAM suppress the same findings on
the same kinds of resources (infra/flexiai_infra/_scanners.py).

The scanners are not Python dependencies of the project: scripts/bootstrap installs them
once per machine under ``~/.cache/flexiai-tools`` (scripts/_tools.sh pins their versions)
and links them into the clone. Each test skips, saying how to get the tool, when it is
missing:

- checkov: ``$CHECKOV``, ``checkov`` on PATH, or ``.venv-checkov/bin/checkov`` (a link to the
  shared virtualenv);
- cfn-guard and the rules: ``$CFN_GUARD_VALIDATOR_DIR``, or ``node_modules`` of the npm package
  ``@cdklabs/cdk-validator-cfnguard`` under ``.venv-cfnguard`` (a link to the shared install),
  ``~/.cache/flexiai-cfnguard``, the repository or npm's global root;
- samtranslator: the SAM CLI's virtualenv, ``$SAM_VENV`` (default ``.venv-sam``, made by
  scripts/bootstrap or scripts/sam-validate.sh).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flexiai_dev.cloudformation import load_template
from tests.deploy.conftest import REPO_ROOT

TEMPLATE = REPO_ROOT / "template.yaml"
SAM_VENV = Path(os.environ.get("SAM_VENV", REPO_ROOT / ".venv-sam"))
VALIDATOR_PACKAGE = Path("node_modules") / "@cdklabs" / "cdk-validator-cfnguard"
CHECKOV_HINT = "checkov is not installed: run scripts/bootstrap (or set $CHECKOV)"
GUARD_HINT = "cfn-guard is not installed: run scripts/bootstrap (or set $CFN_GUARD_VALIDATOR_DIR)"

# A SAM template that samtranslator can take offline: local code paths become S3 URIs, and
# each function's Metadata (its suppressions) is copied to the resources generated from it.
_TRANSLATE = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies:
    def load(self):
        return {}

template = yaml_parse(open(sys.argv[1]).read())
for resource in template.get("Resources", {}).values():
    props = resource.get("Properties") or {}
    for key in ("CodeUri", "ContentUri"):
        if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
            props[key] = "s3://bucket/" + props[key].strip("/")
pseudo = {"AWS::Region": "us-east-1", "AWS::Partition": "aws", "AWS::AccountId": "123456789012"}
out = transform(template, pseudo, NoManagedPolicies(), passthrough_metadata=True)
json.dump(out, open(sys.argv[2], "w"), indent=1, default=str)
"""


# -- finding the tools -----------------------------------------------------------------------


def checkov() -> str:
    for candidate in (
        os.environ.get("CHECKOV"),
        shutil.which("checkov"),
        str(REPO_ROOT / ".venv-checkov" / "bin" / "checkov"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip(CHECKOV_HINT)


def cfn_guard() -> tuple[Path, Path]:
    """(the cfn-guard binary, the Control Tower rules directory) of the npm package."""
    roots = [os.environ.get("CFN_GUARD_VALIDATOR_DIR")]
    roots += [
        str(REPO_ROOT / ".venv-cfnguard" / VALIDATOR_PACKAGE),
        str(Path.home() / ".cache" / "flexiai-cfnguard" / VALIDATOR_PACKAGE),
        str(REPO_ROOT / VALIDATOR_PACKAGE),
    ]
    npm = shutil.which("npm")
    if npm:
        result = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            roots.append(
                str(Path(result.stdout.strip()) / VALIDATOR_PACKAGE.relative_to("node_modules"))
            )
    system = "macos" if platform.system() == "Darwin" else "ubuntu"
    machine = {"arm64": "aarch64", "aarch64": "aarch64"}.get(platform.machine(), "x86_64")
    for root in filter(None, roots):
        binary = Path(root) / "bin" / system / machine / "cfn-guard"
        rules = Path(root) / "rules" / "control-tower" / "cfn-guard"
        if binary.is_file() and rules.is_dir():
            return binary, rules
    pytest.skip(GUARD_HINT)


def _sam_python() -> Path:
    """The interpreter of the SAM CLI's virtualenv (which holds samtranslator): SAM_VENV's
    own, or the one beside the ``sam`` that SAM_VENV/bin/sam links to (scripts/_tools.sh)."""
    for python in (
        SAM_VENV / "bin" / "python",
        (SAM_VENV / "bin" / "sam").resolve().parent / "python",
    ):
        if python.is_file():
            return python
    pytest.skip(f"no SAM CLI (samtranslator) under {SAM_VENV}: run scripts/sam-validate.sh")


def sam_transformed(tmp_path: Path) -> Path:
    python = _sam_python()
    out = tmp_path / "template.sam.json"
    script = tmp_path / "translate.py"
    script.write_text(_TRANSLATE)
    result = subprocess.run(
        [str(python), str(script), str(TEMPLATE), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


# -- running them ------------------------------------------------------------------------------


def run_checkov(*templates: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(failed "CHECK resource" lines, skipped checks) over ``templates``."""
    command = [checkov(), "--framework", "cloudformation", "--compact"]
    command += ["--skip-download", "--output", "json"]
    for template in templates:
        command += ["--file", str(template)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        # No telemetry, no network: checkov still works, without its online guidelines.
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": ""},
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    reports = json.loads(result.stdout)
    if isinstance(reports, dict):
        reports = [reports]
    failed, skipped = [], []
    for report in reports:
        if report.get("check_type") not in (None, "cloudformation"):
            continue
        results = report.get("results", {})
        failed += [
            f"{c['check_id']} {c['resource']} ({Path(c['file_path']).name})"
            for c in results.get("failed_checks", [])
        ]
        skipped += results.get("skipped_checks", [])
    assert reports and any("results" in r for r in reports), result.stdout[-3000:]
    return failed, skipped


def run_guard(template: Path) -> list[str]:
    """Unsuppressed Control Tower findings: "rule [CT id] resource" lines."""
    binary, rules = cfn_guard()
    result = subprocess.run(
        [
            *(str(binary), "validate", "--rules", str(rules), "--data", str(template)),
            *("--show-summary", "none", "--output-format", "json", "--structured"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    # 0: compliant, 19: findings; anything else is cfn-guard failing.
    assert result.returncode in (0, 19), result.stdout[-2000:] + result.stderr[-2000:]
    data = (
        load_template(template) if template.suffix != ".json" else json.loads(template.read_text())
    )
    resources = data["Resources"]
    findings = set()
    for report in json.loads(result.stdout):
        for item in report["not_compliant"]:
            rule = item["Rule"]["name"]
            text = json.dumps(item)
            control = ",".join(sorted(set(re.findall(r"\[(CT\.[A-Z0-9.]+)\]", text))))
            for logical_id in set(re.findall(r'"path": "/Resources/([^/"]+)', text)) or {"?"}:
                metadata = resources.get(logical_id, {}).get("Metadata", {})
                if rule in metadata.get("guard", {}).get("SuppressedRules", []):
                    continue
                findings.add(f"{rule} [{control}] {logical_id}")
    return sorted(findings)


def _comment(skipped: dict[str, Any]) -> str:
    return str(skipped.get("check_result", {}).get("suppress_comment") or "")


def suppressions(template: dict[str, Any]) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Logical id -> ({checkov id: comment}, {guard rule: reason}) from the Metadata."""
    found = {}
    for logical_id, resource in template["Resources"].items():
        metadata = resource.get("Metadata", {})
        skips = {s["id"]: s.get("comment", "") for s in metadata.get("checkov", {}).get("skip", [])}
        guard = metadata.get("guard", {})
        reasons = guard.get("Reasons", {})
        rules = {rule: reasons.get(rule, "") for rule in guard.get("SuppressedRules", [])}
        if skips or rules:
            found[logical_id] = (skips, rules)
    return found


def assert_every_suppression_has_a_reason(template: dict[str, Any]) -> None:
    for logical_id, (skips, rules) in suppressions(template).items():
        for key, reason in {**skips, **rules}.items():
            assert len(reason.split()) >= 5, f"{logical_id}: {key} is suppressed without a reason"


# -- SAM -----------------------------------------------------------------------------------


def test_checkov_finds_nothing_in_the_sam_template() -> None:
    failed, skipped = run_checkov(TEMPLATE)
    assert failed == []
    assert skipped, "no suppression was applied: is checkov reading the Metadata?"
    assert all(_comment(s) for s in skipped)


def test_cfn_guard_control_tower_rules_find_nothing_in_the_sam_template(tmp_path: Path) -> None:
    assert run_guard(TEMPLATE) == []
    assert run_guard(sam_transformed(tmp_path)) == []


def test_sam_suppressions_have_reasons() -> None:
    assert_every_suppression_has_a_reason(load_template(TEMPLATE))


# -- CDK -----------------------------------------------------------------------------------


def _cdk_templates(synthesized: dict[str, Any]) -> list[Path]:
    directory: Path = synthesized["assembly_dir"]
    templates = sorted(directory.glob("*.template.json"))
    assert {t.name for t in templates} == {
        "FlexiAIIam.template.json",
        "FlexiAIPlain.template.json",
        "FlexiAIOptions.template.json",
    }
    return templates


@pytest.mark.cdk
def test_checkov_finds_nothing_in_the_cdk_synth(synthesized: dict[str, Any]) -> None:
    failed, skipped = run_checkov(*_cdk_templates(synthesized))
    assert failed == []
    assert skipped and all(_comment(s) for s in skipped)


@pytest.mark.cdk
def test_cfn_guard_control_tower_rules_find_nothing_in_the_cdk_synth(
    synthesized: dict[str, Any],
) -> None:
    findings = [f for t in _cdk_templates(synthesized) for f in run_guard(t)]
    assert findings == []


@pytest.mark.cdk
def test_cdk_and_sam_suppress_the_same_findings_for_the_same_reasons(
    synthesized: dict[str, Any],
) -> None:
    """Per kind of resource, the same checks with the same reasons (SAM functions add the
    two guard rules that SAM's own shapes need: see ``sam_function``)."""
    from infra.flexiai_infra._scanners import SUPPRESSIONS

    cdk = synthesized["iam"][1].to_json()
    assert_every_suppression_has_a_reason(cdk)
    kinds = {
        "AWS::Logs::LogGroup": ["log_group"],
        "AWS::Lambda::Function": ["function"],
        "AWS::Lambda::Permission": ["permission"],
        "AWS::SecretsManager::Secret": ["secret"],
        "AWS::SNS::Topic": ["topic"],
        "AWS::Serverless::Function": ["function", "sam_function"],
    }

    def expected(type_: str) -> tuple[dict[str, str], dict[str, str]]:
        skips: dict[str, str] = {}
        rules: dict[str, str] = {}
        for kind in kinds[type_]:
            skips.update(SUPPRESSIONS[kind]["checkov"])
            rules.update(SUPPRESSIONS[kind]["guard"])
        return skips, rules

    for name, template in (("cdk", cdk), ("sam", load_template(TEMPLATE))):
        found = suppressions(template)
        types = {template["Resources"][k]["Type"] for k in found}
        assert types <= set(kinds), name
        for logical_id, pair in found.items():
            assert pair == expected(template["Resources"][logical_id]["Type"]), logical_id
