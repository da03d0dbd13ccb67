"""Print the README's configuration reference from the models, so it cannot drift.

    .venv/bin/python scripts/config_reference.py > /tmp/ref.md

tests/core/test_docs.py checks that the README lists every field and variable.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from flexiai.config import PROVIDER_VARIABLE
from flexiai.models import CircuitBreakerConfig, ProviderConfig, RetryConfig, SyncConfig

SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("SyncConfig", SyncConfig, "FLEXIAI_SYNC_"),
    ("CircuitBreakerConfig", CircuitBreakerConfig, "FLEXIAI_CIRCUIT_BREAKER_"),
    ("RetryConfig", RetryConfig, "FLEXIAI_RETRY_"),
    ("ProviderConfig", ProviderConfig, "FLEXIAI_PROVIDER_{N}_"),
]


def default_of(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return f"`{field.default_factory()!r}`"
    return f"`{field.default!r}`"


def main() -> None:
    provider_fields = PROVIDER_VARIABLE.pattern.split("(")[2].split(")")[0].split("|")
    for title, model, prefix in SECTIONS:
        doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        print(f"### `{title}`\n\n{doc}\n")
        print("| Field | Default | Environment variable | Notes |\n| --- | --- | --- | --- |")
        for name, field in model.model_fields.items():
            code_only = name == "failure_on" or (
                prefix.startswith("FLEXIAI_PROVIDER") and name.upper() not in provider_fields
            )
            var = "(code only)" if code_only else f"`{prefix}{name.upper()}`"
            notes = (field.description or "").replace("\n", " ")
            if field.metadata:
                bounds = ", ".join(
                    f"{k} {getattr(m, k)}"
                    for m in field.metadata
                    for k in ("ge", "gt", "le", "lt")
                    if getattr(m, k, None) is not None
                )
                notes = f"{bounds}. {notes}".strip(". ") if bounds else notes
            print(f"| `{name}` | {default_of(field)} | {var} | {notes} |")
        print()


if __name__ == "__main__":
    main()
