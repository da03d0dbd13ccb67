"""The client of the invocation in progress, handed from the middleware to the handler.

A context variable rather than an extra handler argument: the handler keeps Lambda's
``(event, context)`` signature, so it stacks with any other middleware, and code deep in the
call stack reaches the client without threading it through. No Powertools import here, so
library code may call ``current_client()`` cheaply.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flexiai.client import FlexiAI

__all__ = ["NoInvocationError", "current_client", "use_client"]

_CLIENT: ContextVar[FlexiAI | None] = ContextVar("flexiai_lambda_client", default=None)


class NoInvocationError(RuntimeError):
    """``current_client()`` was called outside a handler decorated with ``flexiai_handler``."""


def current_client() -> FlexiAI:
    """The ``FlexiAI`` client of this execution environment, inside a ``flexiai_handler``.

    The same client is returned on every warm invocation. Threads started by the handler do
    not inherit it (context variables do not cross into plain threads): pass the client to
    them, or run them with ``contextvars.copy_context().run``.
    """
    client = _CLIENT.get()
    if client is None:
        raise NoInvocationError(
            "current_client() is only available while a handler decorated with "
            "@flexiai_handler runs; build a FlexiAI yourself elsewhere"
        )
    return client


@contextmanager
def use_client(client: FlexiAI) -> Iterator[FlexiAI]:
    """Make ``client`` the current one for the block (the middleware does this)."""
    token = _CLIENT.set(client)
    try:
        yield client
    finally:
        _CLIENT.reset(token)
