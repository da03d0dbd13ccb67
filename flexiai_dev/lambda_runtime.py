"""One Lambda execution environment on this machine: the real runtime, no Docker.

A function's built code and layers run under ``awslambdaric`` (the AWS Lambda Runtime
Interface Client, the same bootstrap AWS's own Python images use) in a ``python3.12``
process, talking to a local Runtime API (``flexiai_dev.lambda_api``). As on Lambda:

- ``sys.path`` is the task root (the function's code), then each layer's ``python`` and
  ``python/lib/python3.12/site-packages`` (later layers first, as later layers overwrite
  earlier ones in ``/opt``), then the runtime's own packages (awslambdaric and boto3, as in
  ``/var/runtime``). The interpreter runs with ``-S``: nothing from its own site-packages
  leaks in, so a dependency missing from the layers fails the import, as it would on Lambda.
- The environment is built from scratch: the function's variables, the ``AWS_LAMBDA_*``
  set, ``AWS_EXECUTION_ENV``, ``LAMBDA_TASK_ROOT``, the region, and the caller's credentials.
- No bytecode is written (``/var/task`` and ``/opt`` are read-only on Lambda): code shipped
  without ``.pyc`` files is compiled at every cold start, there as here.
- The timeout is enforced: a run past it is stopped (the process is killed) and the next
  invocation starts a new environment (a cold start).

Not emulated: the memory limit (only reported, as ``Max Memory Used`` from the process's
peak RSS), the 10 s init limit, the read-only file system, extensions.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from flexiai_dev.cloudformation import FunctionSpec, LayerRef
from flexiai_dev.lambda_api import Outcome, PendingEvent, RuntimeAPI

__all__ = [
    "AWSLAMBDARIC_PIN",
    "Invocation",
    "LambdaRuntime",
    "RuntimeUnavailable",
    "find_python",
    "lambda_variables",
    "layer_directories",
    "package_layer",
    "runtime_packages",
]

#: The Runtime Interface Client (4.x: init errors go to /init/error; wheels for cp312).
#: pyproject.toml's dev extra carries the same pin (tests/aws/test_lambda_runtime.py checks).
AWSLAMBDARIC_PIN = "awslambdaric==4.2.2"
#: What the python3.12 runtime has in /var/runtime besides the client.
RUNTIME_EXTRAS = ("boto3",)
PYTHON_VERSION = "3.12"
_INIT_GRACE = 10.0  # seconds an init may take on top of the timeout before it counts as hung
_POLL = 0.05


class RuntimeUnavailable(RuntimeError):
    """The Lambda runtime cannot be set up (say why, so the caller can tell the user)."""


# -- the interpreter and the runtime's packages ------------------------------------------------


def find_python(version: str = PYTHON_VERSION) -> str | None:
    """The real executable of a ``python<version>`` on PATH or in pyenv, or ``None``.

    A pyenv shim is resolved to the interpreter behind it, so start-up times are the
    interpreter's own."""
    candidates: list[str] = []
    if found := shutil.which(f"python{version}"):
        candidates.append(found)
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += [
        str(p)
        for p in sorted(
            (pyenv_root / "versions").glob(f"{version}.*/bin/python{version}"), reverse=True
        )
    ]
    probe = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.executable)"
    for candidate in candidates:
        try:
            result = subprocess.run(
                [candidate, "-c", probe],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue  # e.g. a pyenv shim for a version that is not selected
        found_version, _, executable = result.stdout.strip().partition("\n")
        if result.returncode == 0 and found_version == version and executable:
            return executable
    return None


def tools_dir() -> Path:
    """The per-machine tool cache that scripts/_tools.sh uses too."""
    if given := os.environ.get("FLEXIAI_TOOLS_DIR"):
        return Path(given)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "flexiai-tools"


def _install_once(
    directory: Path, python: str, requirements: Sequence[str], why: str, *, under: str = ""
) -> Path:
    """``pip install --target`` ``requirements`` for ``python`` into ``directory``, once per
    machine (a stamp marks a finished install; a lock keeps two installs apart)."""
    stamp = directory / ".flexiai-complete"
    if stamp.is_file():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    with (directory.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file():
            return directory
        print(
            f"flexiai: installing {' '.join(requirements)} for {why} into {directory} "
            "(once per machine)",
            file=sys.stderr,
        )
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".installing."))
        target = tmp / under if under else tmp  # a layer's packages go in its python/
        result = subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "--target",
                str(target),
                *requirements,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeUnavailable(
                f"installing {' '.join(requirements)} failed: {result.stderr.strip()[-800:]}"
            )
        (tmp / ".flexiai-complete").write_text(" ".join(requirements) + "\n")
        shutil.rmtree(directory, ignore_errors=True)
        tmp.rename(directory)
    return directory


def runtime_packages(python: str) -> Path:
    """A directory with awslambdaric and boto3 for ``python`` (Lambda's /var/runtime)."""
    name = re.sub(r"[^A-Za-z0-9.=_-]", "_", AWSLAMBDARIC_PIN)
    directory = tools_dir() / f"lambda-runtime-{name}-py{PYTHON_VERSION}"
    return _install_once(
        directory, python, [AWSLAMBDARIC_PIN, *RUNTIME_EXTRAS], "the Lambda runtime"
    )


def package_layer(python: str, requirement: str) -> Path:
    """A layer directory (``python/`` inside) holding ``requirement`` for ``python``."""
    name = re.sub(r"[^A-Za-z0-9.=_-]", "_", requirement)
    return _install_once(
        tools_dir() / f"layer-{name}-py{PYTHON_VERSION}",
        python,
        [requirement],
        "a layer",
        under="python",
    )


def powertools_layer(python: str, reference: str) -> Path:
    """A local stand-in for AWS's published Powertools layer (``aws-lambda-powertools[all]``,
    what AWS builds it from): the version the reference names, else the one installed here."""
    match = re.search(r"/(\d+\.\d+\.\d+)", reference)
    try:
        version = match.group(1) if match else importlib.metadata.version("aws-lambda-powertools")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeUnavailable(
            f"layer {reference!r}: name a version, or install aws-lambda-powertools here"
        ) from None
    directory = tools_dir() / f"layer-powertools-{version}-py{PYTHON_VERSION}"
    return _install_once(
        directory,
        python,
        [f"aws-lambda-powertools[all]=={version}"],
        "the Powertools layer",
        under="python",
    )


def layer_directories(spec: FunctionSpec, python: str) -> tuple[list[Path], list[str]]:
    """Each layer as a local directory (what Lambda extracts to /opt), in order, and notes.

    A layer of the template must be built (``sam build``); AWS's Powertools layer is stood in
    for by a local build of the same package; any other published layer cannot be fetched."""
    notes: list[str] = []
    return [_layer_directory(spec, layer, python, notes) for layer in spec.layers], notes


def _layer_directory(spec: FunctionSpec, layer: LayerRef, python: str, notes: list[str]) -> Path:
    if layer.directory is not None:
        if not (layer.directory / "python").is_dir() and layer.built_by_sam:
            raise RuntimeUnavailable(
                f"layer {layer.name} of {spec.logical_id} is not built: run `sam build` "
                "(flexiai invoke runs its output in .aws-sam/build, as sam local invoke does)"
            )
        return layer.directory
    reference = layer.reference or layer.name
    if "powertools" in reference.lower():
        directory = powertools_layer(python, reference)
        notes.append(f"layer {reference} stood in for by {directory} (sam would download it)")
        return directory
    raise RuntimeUnavailable(
        f"layer {reference} of {spec.logical_id} is published elsewhere and flexiai invoke "
        "cannot download it (sam local invoke would)"
    )


# -- one execution environment -----------------------------------------------------------------


def lambda_variables(spec: FunctionSpec, region: str) -> dict[str, str]:
    """The variables Lambda sets for every function (the ``AWS_LAMBDA_*`` family)."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{spec.timeout:g}",
        "AWS_LAMBDA_FUNCTION_HANDLER": spec.handler,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group or f"/aws/lambda/{spec.function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]local",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }


#: Variables of the caller's shell the function gets: where to find credentials (as sam
#: passes the caller's credentials), and what a process needs to run at all.
_PASSED_FROM_SHELL = (
    "PATH",
    "LANG",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL",
)


@dataclass(frozen=True, slots=True)
class Invocation:
    """One invocation as Lambda reports it."""

    request_id: str
    #: What the runtime posted; ``None`` when the run was stopped (``timed_out``) or the
    #: runtime died (``exit_status``).
    outcome: Outcome | None
    duration_ms: float
    #: Set on a cold start: from the process's start to its first poll for an event.
    init_ms: float | None
    max_memory_mb: int
    rss_mb: float
    timed_out: bool = False
    exit_status: int | None = None

    @property
    def failed(self) -> bool:
        return self.outcome is None or self.outcome.kind != "response"

    def payload(self, timeout: float) -> Any:
        """What ``sam local invoke`` prints on stdout: the response, or an error document."""
        if self.timed_out:
            return {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"RequestId: {self.request_id} Error: "
                f"Task timed out after {timeout:.2f} seconds",
            }
        if self.outcome is None:
            return {
                "errorType": "Runtime.ExitError",
                "errorMessage": f"RequestId: {self.request_id} Error: "
                f"Runtime exited with error: exit status {self.exit_status}",
            }
        return self.outcome.document()


class LambdaRuntime:
    """A warm-or-cold execution environment for one function: ``invoke`` starts the runtime
    process when there is none (a cold start, with an init phase) and reuses it after."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        python: str,
        layers: Sequence[Path],
        variables: Mapping[str, str],
        region: str,
        log: IO[str] | None = None,
        python_options: Sequence[str] = (),
        host_environment: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self._python = python
        self._packages = runtime_packages(python)
        self._layers = list(layers)
        self._variables = dict(variables)
        self._region = region
        self._log = log if log is not None else sys.stderr
        self._python_options = list(python_options)
        self._shell = os.environ if host_environment is None else host_environment
        self._process: subprocess.Popen[bytes] | None = None
        self._api: RuntimeAPI | None = None
        self._started_at = 0.0

    # -- lifecycle --

    def _environment(self, api: RuntimeAPI) -> dict[str, str]:
        site = f"lib/python{PYTHON_VERSION}/site-packages"
        path = [str(self.spec.code_uri)]
        for layer in reversed(self._layers):  # a later layer overwrites an earlier one
            path += [str(layer / "python" / site), str(layer / "python")]
        path.append(str(self._packages))
        env = {name: self._shell[name] for name in _PASSED_FROM_SHELL if name in self._shell}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.update(
            {
                "TZ": ":UTC",
                "LAMBDA_TASK_ROOT": str(self.spec.code_uri),
                "LAMBDA_RUNTIME_DIR": str(self._packages),
                "AWS_EXECUTION_ENV": f"AWS_Lambda_python{PYTHON_VERSION}",
                "AWS_LAMBDA_RUNTIME_API": api.address,
                "_HANDLER": self.spec.handler,
                "PYTHONPATH": os.pathsep.join(path),
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
                **lambda_variables(self.spec, self._region),
                **self._variables,
            }
        )
        return env

    def _start(self) -> None:
        api = RuntimeAPI()
        command = [
            self._python,
            "-S",
            *self._python_options,
            "-m",
            "awslambdaric",
            self.spec.handler,
        ]
        self._started_at = time.perf_counter()
        self._process = subprocess.Popen(
            command,
            cwd=self.spec.code_uri,
            env=self._environment(api),
            stdin=subprocess.DEVNULL,
            stdout=self._log.fileno() if _has_fileno(self._log) else subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if self._process.stdout is not None:  # a log stream with no file: copy lines over
            threading.Thread(
                target=_copy_lines, args=(self._process.stdout, self._log), daemon=True
            ).start()
        self._api = api

    def close(self) -> None:
        """Stop the runtime process (the environment's end)."""
        process, api = self._process, self._api
        self._process, self._api = None, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if api is not None:
            api.close()

    def __enter__(self) -> LambdaRuntime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- invoking --

    def invoke(self, event: bytes) -> Invocation:
        """Run one event; prints START/END/REPORT (and a timeout line) to the log stream."""
        cold = self._process is None or self._process.poll() is not None
        if cold:
            self.close()
            self._start()
        assert self._process is not None
        assert self._api is not None
        process, api = self._process, self._api
        request_id = str(uuid.uuid4())
        init_ms: float | None = None
        if cold:
            init_error = self._wait(
                lambda: api.wait_initialized(_POLL),
                process,
                self.spec.timeout + _INIT_GRACE,
                init=True,
            )
            init_ms = ((api.first_poll_at or time.perf_counter()) - self._started_at) * 1000
            if init_error is not None or api.first_poll_at is None:
                hung = init_error is None and process.poll() is None  # init ran out of time
                return self._finish(request_id, init_error, 0.0, init_ms, process, timed_out=hung)
        deadline = time.time() + self.spec.timeout
        api.invoke(
            PendingEvent(
                request_id=request_id,
                body=event,
                deadline_ms=int(deadline * 1000),
                function_arn=f"arn:aws:lambda:{self._region}:123456789012:function:"
                f"{self.spec.function_name}",
            )
        )
        started = time.perf_counter()
        print(f"START RequestId: {request_id} Version: $LATEST", file=self._log, flush=True)
        outcome = self._wait(
            lambda: api.wait_outcome(request_id, _POLL), process, self.spec.timeout, init=False
        )
        picked = api.picked_up_at.pop(request_id, started)
        end = outcome.at if outcome is not None else time.perf_counter()
        timed_out = outcome is None and process.poll() is None
        duration = (end - picked) * 1000
        if timed_out:
            duration = self.spec.timeout * 1000
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            print(
                f"{stamp} {request_id} Task timed out after {self.spec.timeout:.2f} seconds",
                file=self._log,
                flush=True,
            )
        return self._finish(request_id, outcome, duration, init_ms, process, timed_out=timed_out)

    def _wait(
        self,
        poll: Callable[[], Outcome | None],
        process: subprocess.Popen[bytes],
        limit: float,
        *,
        init: bool,
    ) -> Outcome | None:
        """Call ``poll`` until it gives an outcome (or init is over), the process dies or
        ``limit`` seconds pass."""
        give_up = time.perf_counter() + limit
        while time.perf_counter() < give_up:
            try:
                outcome = poll()
            except TimeoutError:
                outcome = None
            else:
                if init or outcome is not None:
                    return outcome
            if process.poll() is not None:
                with contextlib.suppress(TimeoutError):
                    return poll()  # what it posted just before it exited
                return None
        return None

    def _finish(
        self,
        request_id: str,
        outcome: Outcome | None,
        duration_ms: float,
        init_ms: float | None,
        process: subprocess.Popen[bytes],
        *,
        timed_out: bool,
    ) -> Invocation:
        peak_kb, rss_kb = _memory_kb(process.pid)
        exit_status = None
        if outcome is None or outcome.kind == "init_error" or timed_out:
            self.close()  # the environment is not reused after an init failure or a timeout
            exit_status = process.returncode
        invocation = Invocation(
            request_id=request_id,
            outcome=outcome,
            duration_ms=duration_ms,
            init_ms=init_ms,
            max_memory_mb=max(1, round(peak_kb / 1024)),
            rss_mb=rss_kb / 1024,
            timed_out=timed_out,
            exit_status=exit_status,
        )
        print(f"END RequestId: {request_id}", file=self._log)
        report = (
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {max(1, int(-(-duration_ms // 1)))} ms\t"
            f"Memory Size: {self.spec.memory_size} MB\t"
            f"Max Memory Used: {invocation.max_memory_mb} MB"
        )
        if init_ms is not None:
            report += f"\tInit Duration: {init_ms:.2f} ms"
        print(report, file=self._log, flush=True)
        return invocation


def _copy_lines(source: IO[bytes], log: IO[str]) -> None:
    for line in source:
        log.write(line.decode(errors="replace"))
        log.flush()


def _has_fileno(stream: IO[str]) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _memory_kb(pid: int) -> tuple[int, int]:
    """(peak RSS, current RSS) of ``pid`` in KiB, from /proc; (0, 0) where there is none."""
    peak = rss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return peak, rss
