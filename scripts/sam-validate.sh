#!/usr/bin/env bash
# Validate template.yaml with `sam validate --lint`, needing neither AWS credentials nor a
# configured region.
#
# aws-sam-cli pins old versions of boto3, click and cfn-lint, so it lives in its own
# virtual environment, installed once per machine and pinned version under
# ~/.cache/flexiai-tools and shared by every clone (scripts/_tools.sh): <repo>/.venv-sam/bin/sam
# links to it. A .venv-sam that is a virtualenv of its own is used as it is.
#
#   scripts/sam-validate.sh            install the SAM CLI if missing, then validate
#   scripts/sam-validate.sh --prepare  only install it (for a set-up step);
#                                      --prepare-only is the same
#
# Environment: PYTHON (interpreter for the venv, default python3), SAM_VENV (default
# <repo>/.venv-sam), SAM_CLI_SPEC (pip requirement, default the pin in scripts/_tools.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/_tools.sh
. "$ROOT/scripts/_tools.sh"
VENV="${SAM_VENV:-$ROOT/.venv-sam}"
PYTHON="${PYTHON:-python3}"

case "${1:-}" in
    --prepare | --prepare-only) prepare_only=1 ;;
    "") prepare_only=0 ;;
    *) echo "usage: $0 [--prepare]" >&2; exit 2 ;;
esac

ensure_sam_cli "$PYTHON" "$VENV"
[ "$prepare_only" = 1 ] && exit 0

# A dummy region: validation is offline, but the CLI insists on knowing one.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export SAM_CLI_TELEMETRY=0
cd "$ROOT"
exec "$VENV/bin/sam" validate --lint --template template.yaml
