#!/usr/bin/env bash
# Validate template.yaml with `sam validate --lint`, needing neither AWS credentials nor a
# configured region.
#
# aws-sam-cli pins old versions of boto3, click and cfn-lint, so it lives in its own virtual
# environment (.venv-sam, gitignored), created here on first use.
#
#   scripts/sam-validate.sh            create .venv-sam if missing, then validate
#   scripts/sam-validate.sh --prepare  only create .venv-sam (for a CI set-up step);
#                                      --prepare-only is the same
#
# Environment: PYTHON (interpreter for the venv, default python3), SAM_VENV (default
# <repo>/.venv-sam), SAM_CLI_SPEC (pip requirement, default below).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SAM_VENV:-$ROOT/.venv-sam}"
PYTHON="${PYTHON:-python3}"
SAM_CLI_SPEC="${SAM_CLI_SPEC:-aws-sam-cli>=1.170,<2}"

if [ ! -x "$VENV/bin/sam" ]; then
    echo "sam-validate: creating $VENV with $SAM_CLI_SPEC" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "$SAM_CLI_SPEC"
fi

case "${1:-}" in
    --prepare | --prepare-only) exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--prepare]" >&2; exit 2 ;;
esac

# A dummy region: validation is offline, but the CLI insists on knowing one.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export SAM_CLI_TELEMETRY=0
cd "$ROOT"
exec "$VENV/bin/sam" validate --lint --template template.yaml
