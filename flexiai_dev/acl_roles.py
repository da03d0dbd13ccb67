"""The tightest Redis ACL for each role that touches flexiai's breaker state.

docs/redis-least-privilege.md prints these lines and tests/circuit_breaker/test_acl_roles.py
runs each role against a real Redis 7 started with ``acl-pubsub-default resetchannels``.

What each command is for:

* the breaker code (``breaker.lua``), run by ``EVALSHA`` (``SCRIPT LOAD`` after NOSCRIPT) or,
  with ``redis_use_functions``, by ``FCALL``; inside it ``TIME``, ``GET``, ``SET`` and
  ``PUBLISH``, which Redis checks against the caller's ACL like any other command;
* ``MGET`` and ``TIME``: a snapshot read and the server's clock;
* ``SUBSCRIBE``: the pub/sub worker's event listener; ``PING``: health checks;
* ``SCAN``, ``PTTL``, ``TYPE``: ``flexiai status`` listing the state keys, their TTLs and
  garbage of another type; ``FUNCTION LOAD``: ``flexiai functions load``.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["ROLES", "Role", "acl_rules"]

Role = Literal["pubsub-worker", "snapshot-worker", "operator", "status-reader"]

#: The commands of each role besides the ones that run the breaker code.
_COMMANDS: dict[Role, tuple[str, ...]] = {
    "pubsub-worker": ("time", "get", "set", "mget", "publish", "subscribe", "ping"),
    "snapshot-worker": ("time", "get", "set", "mget", "publish", "ping"),
    "operator": (
        "time",
        "get",
        "set",
        "mget",
        "publish",
        "subscribe",
        "ping",
        "scan",
        "pttl",
        "type",
    ),
    "status-reader": ("mget", "time", "ping"),
}
ROLES: tuple[Role, ...] = tuple(_COMMANDS)


def acl_rules(
    role: Role,
    *,
    prefix: str = "flexiai",
    channel: str = "flexiai:events",
    functions: bool = False,
) -> str:
    """The ``ACL SETUSER`` rules (after the user name, ``on`` and its password) for
    ``role``. Keys: only the state keys (``{prefix}:state:*``, and the hash-tagged form a
    cluster uses), read-only for the status reader; channels: only the event channel, and
    none for the status reader."""
    keys = [f"{prefix}:state:*", f"{{{prefix}}}:state:*"]
    if role == "status-reader":
        rules = [f"%R~{k}" for k in keys] + ["resetchannels", "-@all"]
        return " ".join(rules + [f"+{c}" for c in _COMMANDS[role]])
    runner = ["fcall"] if functions else ["evalsha", "script|load"]
    if role == "operator" and functions:
        runner.append("function|load")
    rules = [f"~{k}" for k in keys] + ["resetchannels", f"&{channel}", "-@all"]
    return " ".join(rules + [f"+{c}" for c in [*runner, *_COMMANDS[role]]])
