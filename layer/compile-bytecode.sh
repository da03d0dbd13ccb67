#!/bin/sh
# Compiles every .py under a built layer's python/ directory to python3.12 bytecode, in place.
#
# Why: Lambda mounts layers read-only under /opt, so a layer without .pyc files makes the
# interpreter compile flexiai, httpx and redis from source at every cold start and throw the
# result away (bench/lambda_cold_start.py measures what that costs). Bytecode is specific to
# the interpreter's minor version, so it must be written by a python3.12, the runtime's.
#
# How: `compileall --invalidation-mode unchecked-hash` writes hash-based .pyc files that the
# import system uses without looking at the sources' mtimes (which the zip of a layer does not
# keep anyway), and `-s DIR -p /opt/python` records the path the code has on Lambda, not this
# build's temporary directory, so two builds of the same sources give the same bytes.
#
# Usage: compile-bytecode.sh PYTHON_DIR [VERSION]
# The interpreter is $BYTECODE_PYTHON if set, else the first python<VERSION> on PATH, else one
# under pyenv ($PYENV_ROOT/versions/<VERSION>.*); VERSION defaults to 3.12. Fails, naming
# BYTECODE_PYTHON, when none is found: a layer without bytecode is slower, not broken, but it
# must not be shipped by accident.
set -eu

target=${1:?usage: compile-bytecode.sh PYTHON_DIR [VERSION]}
version=${2:-3.12}

is_version() {
	[ -n "$1" ] && "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null \
		| grep -qx "$version"
}

python=${BYTECODE_PYTHON:-}
if [ -n "$python" ]; then
	if ! is_version "$python"; then
		echo "compile-bytecode.sh: BYTECODE_PYTHON=$python is not a python$version" >&2
		exit 1
	fi
else
	for candidate in "$(command -v "python$version" || true)" \
		"${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python"$version"; do
		if is_version "$candidate"; then
			python=$candidate
			break
		fi
	done
fi
if [ -z "$python" ]; then
	echo "compile-bytecode.sh: the layer ships python$version bytecode, and no python$version" \
		"was found on PATH or under pyenv; set BYTECODE_PYTHON to one" >&2
	exit 1
fi

"$python" -m compileall -q -j 0 --invalidation-mode unchecked-hash \
	-s "$target" -p /opt/python "$target"
