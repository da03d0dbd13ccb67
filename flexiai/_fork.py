"""Starting afresh in a forked child: the one place that knows about ``os.fork``.

A client built at import time (the deployment guide's module-level client) is copied into
every worker that ``gunicorn --preload`` or ``multiprocessing`` (fork start method) forks
from the process that built it. The copy carries the parent's worker id, its pooled
sockets (Redis, HTTP keep-alive) and its record of background threads that do not exist
in the child. Used from the child, those sockets would interleave two processes' bytes on
one connection, and the dead threads would never flush counts or deliver events.

Objects that hold such state register here; in the child, right after the fork,
``_reset_after_fork()`` runs on each one still alive. Those methods only drop references
and make fresh locks: they open nothing and close nothing (closing a socket the parent
still uses could end its connection), so the child's first use connects anew, exactly as
in a process that never forked. Registration holds weak references, so a closed and
dropped client leaves nothing behind here.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["ForkAware", "forget_parent_module_state", "forget_parent_state"]

logger = logging.getLogger("flexiai.fork")


class ForkAware(Protocol):
    def _reset_after_fork(self) -> None:
        """Called in the child only. Must not do I/O or take a lock another thread of the
        parent may have held at the fork."""


_registered: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_module_resets: list[Callable[[], None]] = []


def forget_parent_state(obj: ForkAware) -> None:
    """Have ``obj._reset_after_fork()`` run in every child forked from now on while ``obj``
    is alive."""
    _registered.add(obj)


def forget_parent_module_state(reset: Callable[[], None]) -> None:
    """Run ``reset`` in every child forked from now on, before the objects' resets: for a
    module's process-wide state (a module lives as long as the process)."""
    _module_resets.append(reset)


def _after_fork_in_child() -> None:
    for reset in _module_resets:
        try:
            reset()
        except Exception:
            logger.exception("resetting %s after fork failed", reset.__qualname__)
    for obj in list(_registered):
        try:
            obj._reset_after_fork()
        except Exception:  # one broken object must not leave the others with parent state
            logger.exception("resetting %s after fork failed", type(obj).__name__)


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork to guard against
    os.register_at_fork(after_in_child=_after_fork_in_child)
