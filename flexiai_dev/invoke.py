"""``flexiai invoke``: run a Lambda handler from template.yaml in this process, without Docker.

    flexiai invoke GenerateFunction --event events/generate.json [--env-vars env.json]
                   [--template template.yaml] [--parameter-overrides Key=Value ...]

Like ``sam local invoke``: the handler, code directory, timeout, memory and environment come
from the template (``Globals.Function`` included); ``--env-vars`` takes SAM's file format
(``{"Parameters": {...}, "<LogicalId>": {...}}``); the handler module is imported fresh from
``CodeUri`` with the function's variables set, plus ``AWS_LAMBDA_FUNCTION_NAME`` and its
siblings (so flexiai picks snapshot sync, as on Lambda), and called with a Lambda-like context
whose remaining time counts down from the template's ``Timeout``.

Unlike it: the handler runs with this Python and this environment's packages, and
``FLEXIAI_*`` variables the template does not declare are hidden from it, as in a container.

The response is printed as JSON on stdout; the function's own output (logs, EMF metrics)
goes to stderr. A handler error prints Lambda's error document and exits 1; running past the
timeout prints ``Task timed out`` and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from flexiai.cli import CommandError

__all__ = ["add_arguments", "run"]

_FALLBACK_TEMPLATES = ("template.yaml", "template.yml", "template.json")


def add_arguments(parser: argparse.ArgumentParser, command_name: str) -> None:
    parser.add_argument("function", metavar="FUNCTION_LOGICAL_ID", help="e.g. GenerateFunction")
    parser.add_argument(
        "-e", "--event", help="JSON file with the event ('-' reads stdin; default: {})"
    )
    parser.add_argument(
        "-n", "--env-vars", help="JSON file of variables in SAM's format (Parameters, LogicalId)"
    )
    parser.add_argument(
        "-t", "--template", help="SAM template (default: template.yaml in this directory)"
    )
    parser.add_argument(
        "--parameter-overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="template parameter values, as sam's Key=Value form",
    )


def run(args: argparse.Namespace) -> int:
    from flexiai.aws.context import LocalLambdaContext
    from flexiai_dev.cloudformation import (
        TemplateError,
        invocation_environment,
        read_env_vars_file,
        read_function,
    )

    template = _template_path(args.template)
    overrides = _parameter_overrides(args.parameter_overrides)
    try:
        spec = read_function(template, args.function, parameter_overrides=overrides)
        env_vars = read_env_vars_file(args.env_vars) if args.env_vars else {}
    except TemplateError as exc:
        raise CommandError(str(exc)) from None
    event = _read_event(args.event)
    variables, notes = invocation_environment(spec, env_vars)
    for note in notes:
        print(f"flexiai invoke: {note}", file=sys.stderr)

    region = variables.get("AWS_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    lambda_variables = {
        "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{spec.timeout:g}",
        "AWS_LAMBDA_FUNCTION_HANDLER": spec.handler,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group or f"/aws/lambda/{spec.function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", region),
    }
    module_name, _, function_name = spec.handler.rpartition(".")
    module_name = module_name.replace("/", ".")
    real_stdout = sys.stdout
    # The function's prints, logs and EMF go to stderr; stdout carries only the response.
    with (
        _environment({**lambda_variables, **variables}),
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
            log_group_name=lambda_variables["AWS_LAMBDA_LOG_GROUP_NAME"],
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


def _parameter_overrides(items: list[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in items:
        key, sign, value = item.partition("=")
        if not sign or not key:
            raise CommandError(f"--parameter-overrides: {item!r} is not Key=Value")
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
