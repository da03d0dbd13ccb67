"""The ``flexiai`` command. Each subcommand lives in its own module, imported only when run.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Errors that a user
can fix (bad URL, server down, bad config) print one line and exit non-zero, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from flexiai import __version__

__all__ = ["main"]

# name -> (module, one-line help)
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("flexiai_dev.demo", "run a fleet of workers through a provider outage, locally"),
    "status": ("flexiai.cli.operator", "show every provider's shared breaker state"),
    "reset": ("flexiai.cli.operator", "close breakers for the whole fleet"),
    "watch": ("flexiai.cli.operator", "stream live breaker events"),
    "functions": ("flexiai.cli.functions", "load flexiai's Redis function library (FCALL)"),
    "invoke": ("flexiai_dev.invoke", "run a Lambda function on the Lambda runtime, no Docker"),
    "start-api": ("flexiai_dev.start_api", "serve a template's HTTP API routes locally, no Docker"),
}


class CommandError(Exception):
    """A user-fixable problem: printed as one line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="flexiai", description="flexiai operator tools")
    parser.add_argument("--version", action="version", version=f"flexiai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in _COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    # Parse only the command name first, so only that command's module is imported.
    known, _ = parser.parse_known_args(args_list[:1] or ["--help"])
    if known.command is None:
        parser.print_help()
        return 2
    module_name, help_text = _COMMANDS[known.command]
    module = importlib.import_module(module_name)
    command_parser = argparse.ArgumentParser(prog=f"flexiai {known.command}", description=help_text)
    module.add_arguments(command_parser, known.command)
    args = command_parser.parse_args(args_list[1:])
    args.command = known.command
    try:
        code: int = module.run(args)
    except CommandError as exc:
        print(f"flexiai {known.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
