"""Provider adapters, one module per API, imported only when a provider of that kind is used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flexiai.providers.base import Provider

__all__ = ["provider_class"]

_ADAPTERS = {
    "openai": ("flexiai.providers.openai", "OpenAIProvider"),
    "anthropic": ("flexiai.providers.anthropic", "AnthropicProvider"),
    "gemini": ("flexiai.providers.gemini", "GeminiProvider"),
    "bedrock": ("flexiai.providers.bedrock", "BedrockProvider"),
}


def provider_class(kind: str) -> type[Provider]:
    module_name, class_name = _ADAPTERS[kind]
    cls: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return cls
