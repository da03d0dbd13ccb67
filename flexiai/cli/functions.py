"""``flexiai functions load``: put flexiai's breaker code on the server as a Redis Function.

With ``redis_use_functions=True`` workers call it with ``FCALL``, so their ACL user needs
neither ``EVAL``/``EVALSHA`` nor ``SCRIPT``: it can run flexiai's code and no other script.
Loading needs ``FUNCTION LOAD``, an operator's right. The library's name carries a hash of
its code, so loading a new version leaves the old one for the workers not yet upgraded.
Connection settings and errors as for ``flexiai status`` (see ``flexiai.cli.operator``).
"""

from __future__ import annotations

import argparse

from flexiai.cli import CommandError
from flexiai.cli import operator as _operator

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("action", choices=["load"], help="load: load the library (idempotent)")
    _operator.add_arguments(parser, command)


def run(args: argparse.Namespace) -> int:
    if args.action != "load":  # pragma: no cover - argparse allows only "load"
        raise CommandError(f"unknown action {args.action!r}")
    sync, _ = _operator._settings(args)
    with _operator._store(sync) as backend:
        name, loaded = backend.load_functions()
        where = backend.describe()
    print(f"{name} {'loaded on' if loaded else 'already loaded on'} {where}")
    return 0
