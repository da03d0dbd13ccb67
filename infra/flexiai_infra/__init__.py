"""CDK v2 constructs that deploy flexiai on AWS Lambda with a fleet-wide breaker store.

``BreakerStore`` is an ElastiCache Serverless (Valkey) cache, optionally IAM-authenticated
(an app user that may publish on the store's channel, and a read-only status user).
``FlexiAIFunctions`` runs ``handlers/`` as two VPC Lambda functions (x86_64 or arm64) with the
flexiai and Powertools layers, least-privilege grants and a ``CircuitOpened`` alarm that
notifies an SNS topic. ``FlexiAIHttpApi`` puts them behind an IAM-authorized HTTP API whose
access log names each caller. All take an existing ``ec2.IVpc``: nothing here
looks anything up, so a stack synthesizes offline. See ``docs/aws.md``.
"""

from ._functions import (
    ACCESS_LOG_FIELDS,
    ACCESS_LOG_FORMAT,
    METRICS_NAMESPACE,
    POWERTOOLS_LAYER_ACCOUNT,
    POWERTOOLS_LAYER_VERSION,
    FlexiAIFunctions,
    FlexiAIHttpApi,
    ProviderSpec,
    powertools_layer_arn,
)
from ._store import (
    APP_COMMANDS,
    STATUS_COMMANDS,
    VALKEY_PORTS,
    BreakerStore,
    access_string,
    events_channel,
)

__all__ = [
    "ACCESS_LOG_FIELDS",
    "ACCESS_LOG_FORMAT",
    "APP_COMMANDS",
    "METRICS_NAMESPACE",
    "POWERTOOLS_LAYER_ACCOUNT",
    "POWERTOOLS_LAYER_VERSION",
    "STATUS_COMMANDS",
    "VALKEY_PORTS",
    "BreakerStore",
    "FlexiAIFunctions",
    "FlexiAIHttpApi",
    "ProviderSpec",
    "access_string",
    "events_channel",
    "powertools_layer_arn",
]
