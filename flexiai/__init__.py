"""flexiai: LLM calls that keep answering when a provider fails.

Everything is imported on first access, so ``import flexiai`` costs almost nothing and
pulls in no provider code, no redis, no httpx and no boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flexiai._lazy import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from flexiai._deadline import deadline
    from flexiai.circuit_breaker import BreakerSnapshot, CircuitState, StoreHealth
    from flexiai.client import FlexiAI, ProviderStatus
    from flexiai.config import load_config
    from flexiai.exceptions import (
        AllProvidersFailedError,
        CircuitOpenError,
        ConfigError,
        DeadlineExceededError,
        FlexiAIError,
        InvalidRequestError,
        ProviderError,
    )
    from flexiai.models import (
        CircuitBreakerConfig,
        FlexiAIConfig,
        ProviderConfig,
        ResponseMeta,
        RetryConfig,
        SyncConfig,
        UnifiedResponse,
    )

__all__ = [
    "AllProvidersFailedError",
    "BreakerSnapshot",
    "CircuitBreakerConfig",
    "CircuitOpenError",
    "CircuitState",
    "ConfigError",
    "DeadlineExceededError",
    "FlexiAI",
    "FlexiAIConfig",
    "FlexiAIError",
    "InvalidRequestError",
    "ProviderConfig",
    "ProviderError",
    "ProviderStatus",
    "ResponseMeta",
    "RetryConfig",
    "StoreHealth",
    "SyncConfig",
    "UnifiedResponse",
    "__version__",
    "deadline",
    "load_config",
]

_HOMES = {
    "FlexiAI": "flexiai.client",
    "ProviderStatus": "flexiai.client",
    "StoreHealth": "flexiai.circuit_breaker",
    "load_config": "flexiai.config",
    "deadline": "flexiai._deadline",
    "BreakerSnapshot": "flexiai.circuit_breaker",
    "CircuitState": "flexiai.circuit_breaker",
    **dict.fromkeys(
        [
            "CircuitBreakerConfig",
            "FlexiAIConfig",
            "ProviderConfig",
            "ResponseMeta",
            "RetryConfig",
            "SyncConfig",
            "UnifiedResponse",
        ],
        "flexiai.models",
    ),
    **dict.fromkeys(
        [
            "AllProvidersFailedError",
            "CircuitOpenError",
            "ConfigError",
            "DeadlineExceededError",
            "FlexiAIError",
            "InvalidRequestError",
            "ProviderError",
        ],
        "flexiai.exceptions",
    ),
}


__getattr__, __dir__ = lazy_exports("flexiai", globals(), _HOMES)
