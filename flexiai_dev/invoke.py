"""``flexiai invoke``: run a Lambda function from a SAM template on the real Lambda runtime,
without Docker.

    flexiai invoke GenerateFunction --event events/generate.json [--env-vars env.json]
        [--template T] [--parameter-overrides 'A=x B=y'] [--region R] [--profile P] [--debug]

As ``sam local invoke``: the template is ``.aws-sam/build/template.yaml`` when ``sam build``
made one, else ``template.yaml``; the built code and layers run under ``awslambdaric`` in a
``python3.12`` process against a local Runtime API (``flexiai_dev.lambda_runtime``), with the
template's handler, timeout, memory and environment (``Globals.Function`` included).
``--env-vars`` takes SAM's file (``Parameters`` for every function, ``<LogicalId>`` for one)
and, as SAM, passes only the variables the template declares for the function.
``--parameter-overrides`` takes both of SAM's forms; an unknown name is an error.

The response (or Lambda's error document) is printed as JSON on stdout, exit status 0 (1 on
an error or a timeout); the function's output and the START/END/REPORT lines go to stderr.

Where it differs from sam: AWS's Powertools layer is stood in for by a local build of the same
package, other published layers cannot be fetched; ``--profile`` reaches the function as
``AWS_PROFILE``. With no ``python3.12`` (or ``--in-process``) the handler runs in this process
with this environment's packages and no layers, which it says in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shlex
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from flexiai.cli import CommandError

__all__ = ["add_arguments", "parse_parameter_overrides", "run"]

_FALLBACK_TEMPLATES = (
    ".aws-sam/build/template.yaml",
    "template.yaml",
    "template.yml",
    "template.json",
)


def add_arguments(parser: argparse.ArgumentParser, command_name: str) -> None:
    parser.add_argument("function", metavar="FUNCTION_LOGICAL_ID", help="e.g. GenerateFunction")
    parser.add_argument(
        "-e", "--event", help="JSON file with the event ('-' reads stdin; default: {})"
    )
    add_template_arguments(parser)
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the handler in this Python, with this environment's packages and no layers",
    )


def add_template_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``invoke`` and ``start-api`` share with ``sam local``."""
    parser.add_argument(
        "-n", "--env-vars", help="JSON file of variables in SAM's format (Parameters, LogicalId)"
    )
    parser.add_argument(
        "-t",
        "--template",
        help="SAM template (default: .aws-sam/build/template.yaml, else template.yaml)",
    )
    parser.add_argument(
        "--parameter-overrides",
        nargs="+",
        default=[],
        metavar="OVERRIDE",
        help="template parameters, as sam: 'A=x B=y' or 'ParameterKey=A,ParameterValue=x'",
    )
    parser.add_argument("--region", help="the function's AWS_REGION (and AWS::Region)")
    parser.add_argument("--profile", help="passed to the function as AWS_PROFILE")
    parser.add_argument("--debug", action="store_true", help="say what is run, and how")


def run(args: argparse.Namespace) -> int:
    from flexiai_dev.cloudformation import invocation_environment

    template = _template_path(args.template)
    spec, env_vars = load_function(args, template, args.function)
    event = _read_event(args.event)
    variables, notes = invocation_environment(spec, env_vars, shell=_shell(args))
    for note in notes:
        print(f"flexiai invoke: {note}", file=sys.stderr)
    region = _region(args, variables)
    if not args.in_process:
        from flexiai_dev.lambda_runtime import find_python

        python = find_python()
        if python is not None:
            return _run_on_lambda_runtime(args, spec, variables, region, python, event)
        print(
            "flexiai invoke: no python3.12 found (PATH, pyenv): running in this process, "
            "with this Python's packages instead of the layers",
            file=sys.stderr,
        )
    return _run_in_process(spec, variables, region, event)


def load_function(args: argparse.Namespace, template: Path, logical_id: str) -> tuple[Any, Any]:
    """The function's spec and the env-vars file, with the template's parameters checked."""
    from flexiai_dev.cloudformation import (
        TemplateError,
        parameter_names,
        read_env_vars_file,
        read_function,
    )

    try:
        overrides = parse_parameter_overrides(args.parameter_overrides, parameter_names(template))
        spec = read_function(
            template, logical_id, parameter_overrides=overrides, region=args.region
        )
        env_vars = read_env_vars_file(args.env_vars) if args.env_vars else {}
    except TemplateError as exc:
        raise CommandError(str(exc)) from None
    if args.debug:
        # Names only: a template's or env file's values may be secrets.
        print(
            f"flexiai: {template} {logical_id}: handler {spec.handler}, code {spec.code_uri}, "
            f"timeout {spec.timeout:g} s, memory {spec.memory_size} MB, "
            f"variables {sorted(spec.declared)}",
            file=sys.stderr,
        )
    return spec, env_vars


def _shell(args: argparse.Namespace) -> dict[str, str]:
    shell = dict(os.environ)
    if args.profile:
        shell["AWS_PROFILE"] = args.profile
    if args.region:
        shell.pop("AWS_REGION", None)
    return shell


def _region(args: argparse.Namespace, variables: Mapping[str, str]) -> str:
    return str(
        args.region or variables.get("AWS_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    )


def _run_on_lambda_runtime(
    args: argparse.Namespace,
    spec: Any,
    variables: dict[str, str],
    region: str,
    python: str,
    event: Any,
) -> int:
    from flexiai_dev.lambda_runtime import LambdaRuntime, RuntimeUnavailable, layer_directories

    try:
        layers, notes = layer_directories(spec, python)
        for note in notes:
            print(f"flexiai invoke: {note}", file=sys.stderr)
        if args.debug:
            print(f"flexiai invoke: {python} under awslambdaric, layers {layers}", file=sys.stderr)
        with LambdaRuntime(
            spec,
            python=python,
            layers=layers,
            variables=variables,
            region=region,
            host_environment=_shell(args),
        ) as runtime:
            invocation = runtime.invoke(json.dumps(event).encode())
    except RuntimeUnavailable as exc:
        raise CommandError(str(exc)) from None
    sys.stderr.flush()
    print(json.dumps(invocation.payload(spec.timeout)))
    return 1 if invocation.failed else 0


def _run_in_process(spec: Any, variables: dict[str, str], region: str, event: Any) -> int:
    from flexiai.aws.context import LocalLambdaContext
    from flexiai_dev.lambda_runtime import lambda_variables

    lambda_vars = lambda_variables(spec, region)
    module_name, _, function_name = spec.handler.rpartition(".")
    module_name = module_name.replace("/", ".")
    real_stdout = sys.stdout
    # The function's prints, logs and EMF go to stderr; stdout carries only the response.
    with (
        _environment({**lambda_vars, **variables}),
        _import_path(spec.code_uri),
        contextlib.redirect_stdout(sys.stderr),
    ):
        try:
            handler = _load_handler(module_name, function_name)  # the init phase
        except _LambdaError as exc:
            handler, outcome = None, _Outcome()
            outcome.error = exc
            outcome.done.set()
        # The invocation's clock starts after init, as on Lambda.
        context = LocalLambdaContext(
            spec.function_name,
            timeout=spec.timeout,
            memory_limit_in_mb=spec.memory_size,
            region=region,
            log_group_name=lambda_vars["AWS_LAMBDA_LOG_GROUP_NAME"],
        )
        if handler is not None:
            outcome = _call_with_timeout(handler, event, context, spec.timeout)
        if outcome.done.is_set():  # else the handler still runs: _report ends the process
            _close_flexiai_clients()
    return _report(outcome, context, spec.timeout, real_stdout)


# -- inputs ------------------------------------------------------------------------------------


def _template_path(given: str | None) -> Path:
    if given:
        path = Path(given)
        if not path.is_file():
            raise CommandError(f"template {given!r} not found")
        return path
    for name in _FALLBACK_TEMPLATES:
        if Path(name).is_file():
            return Path(name)
    raise CommandError("no template.yaml here; pass --template PATH")


def parse_parameter_overrides(items: Sequence[str], known: Sequence[str]) -> dict[str, str]:
    """SAM's two forms, in one or several arguments: ``A=x B='y z'`` (shell quoting) and
    ``ParameterKey=A,ParameterValue=x``. A name the template does not have is an error."""
    overrides: dict[str, str] = {}
    for item in items:
        try:
            tokens = shlex.split(item)
        except ValueError as exc:
            raise CommandError(f"--parameter-overrides: {item!r}: {exc}") from None
        for token in tokens:
            if token.startswith("ParameterKey="):
                key_part, sep, value_part = token.partition(",ParameterValue=")
                key, value = key_part.removeprefix("ParameterKey="), value_part
            else:
                key, sep, value = token.partition("=")
            if not sep or not key:
                raise CommandError(
                    f"--parameter-overrides: {token!r} is neither Key=Value nor "
                    "ParameterKey=Key,ParameterValue=Value"
                )
            if key not in known:
                raise CommandError(
                    f"--parameter-overrides: the template has no parameter {key!r} "
                    f"(its parameters: {', '.join(known) or 'none'})"
                )
            overrides[key] = value
    return overrides


def _read_event(path: str | None) -> Any:
    if path is None:
        return {}
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CommandError(f"cannot read event {path!r}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError:
        raise CommandError(f"event {path!r} is not valid JSON") from None


# -- running -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set the function's variables; hide FLEXIAI_* ones it does not declare. Restored after."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("FLEXIAI_") and name not in variables:
            del os.environ[name]
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _import_path(code_uri: Path) -> Iterator[None]:
    sys.path.insert(0, str(code_uri))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(code_uri))


class _LambdaError(Exception):
    """An error the Lambda runtime reports with its own type (import errors and the like)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _load_handler(module_name: str, function_name: str) -> Any:
    for name in [m for m in sys.modules if m == module_name or m.startswith(module_name + ".")]:
        del sys.modules[name]  # a fresh import, as in a new execution environment
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        traceback.print_exc()
        raise _LambdaError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        ) from None
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise _LambdaError(
            "Runtime.HandlerNotFound",
            f"Handler '{function_name}' missing on module '{module_name}'",
        )
    return handler


class _Outcome:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


def _call_with_timeout(handler: Any, event: Any, context: Any, timeout: float) -> _Outcome:
    """Run the handler in a thread so a run past the timeout can be reported, as Lambda does."""
    outcome = _Outcome()

    def target() -> None:
        try:
            outcome.result = handler(event, context)
        except BaseException as exc:
            outcome.error = exc
            traceback.print_exc()
        finally:
            outcome.done.set()

    thread = threading.Thread(target=target, name="lambda-handler", daemon=True)
    thread.start()
    outcome.done.wait(timeout)
    return outcome


def _close_flexiai_clients() -> None:
    """Close the clients the middleware built, as an execution environment's end would."""
    middleware = sys.modules.get("flexiai.aws.middleware")
    if middleware is not None:
        with contextlib.suppress(Exception):
            middleware.close_clients()


def _report(outcome: _Outcome, context: Any, timeout: float, stdout: Any) -> int:
    if not outcome.done.is_set():
        message = f"{context.aws_request_id} Task timed out after {timeout:.2f} seconds"
        print(message, file=sys.stderr)
        print(json.dumps({"errorMessage": message, "errorType": "Sandbox.Timedout"}), file=stdout)
        stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # the handler thread is still running: end the process, like Lambda
    if outcome.error is not None:
        exc = outcome.error
        error_type = getattr(exc, "error_type", None) or type(exc).__name__
        document = {
            "errorMessage": str(exc),
            "errorType": error_type,
            "requestId": context.aws_request_id,
            "stackTrace": traceback.format_tb(exc.__traceback__),
        }
        print(json.dumps(document), file=stdout)
        return 1
    try:
        text = json.dumps(outcome.result)
    except (TypeError, ValueError) as exc:
        document = {
            "errorMessage": f"Unable to marshal response: {exc}",
            "errorType": "Runtime.MarshalError",
            "requestId": context.aws_request_id,
        }
        print(json.dumps(document), file=stdout)
        return 1
    print(text, file=stdout)
    return 0
