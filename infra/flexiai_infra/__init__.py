"""CDK v2 constructs that deploy flexiai on AWS Lambda with a fleet-wide breaker store.

``BreakerStore`` is an ElastiCache Serverless (Valkey) cache, optionally IAM-authenticated.
``FlexiAIFunctions`` runs ``handlers/`` as two VPC Lambda functions with the flexiai and
Powertools layers, least-privilege grants and a ``CircuitOpened`` alarm. ``FlexiAIHttpApi``
puts them behind an IAM-authorized HTTP API. All take an existing ``ec2.IVpc``: nothing here
looks anything up, so a stack synthesizes offline. See ``docs/deploy.md``.
"""

from ._functions import (
    METRICS_NAMESPACE,
    POWERTOOLS_LAYER_PARAMETER,
    FlexiAIFunctions,
    FlexiAIHttpApi,
    ProviderSpec,
)
from ._store import VALKEY_PORTS, BreakerStore

__all__ = [
    "METRICS_NAMESPACE",
    "POWERTOOLS_LAYER_PARAMETER",
    "VALKEY_PORTS",
    "BreakerStore",
    "FlexiAIFunctions",
    "FlexiAIHttpApi",
    "ProviderSpec",
]
