"""API keys that are references (``secretsmanager:NAME#field``, ``ssm:/path``) instead of
values. The AWS code that resolves them is imported only when a reference is first used."""

from __future__ import annotations

import threading
from collections.abc import Callable

from pydantic import SecretStr

__all__ = ["REFERENCE_PREFIXES", "api_key_source", "is_reference"]

REFERENCE_PREFIXES = ("secretsmanager:", "ssm:")


def is_reference(value: str) -> bool:
    return value.startswith(REFERENCE_PREFIXES)


def api_key_source(provider: str, api_key: SecretStr | None) -> Callable[[], str | None]:
    """A function returning the key: the value itself, or the resolved reference (cached by
    ``flexiai.aws.secrets`` with a maximum age, so rotation is picked up)."""
    if api_key is None:
        return lambda: None
    value = api_key.get_secret_value()
    if not is_reference(value):
        return lambda: value
    lock = threading.Lock()

    def resolve() -> str | None:
        from flexiai.aws.secrets import resolve_reference

        with lock:
            return resolve_reference(value, provider=provider)

    return resolve
