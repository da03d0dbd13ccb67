"""flexiai on AWS Lambda: a Powertools middleware, API keys from Secrets Manager or SSM,
HTTP event mapping and a Docker-free local invoke.

Names are imported on first access, so ``import flexiai.aws`` costs nothing, and only
``flexiai.aws.middleware`` and ``flexiai.aws.http_events`` (Powertools' event handler)
import ``aws_lambda_powertools``::

    from flexiai.aws import current_client, flexiai_handler

    @flexiai_handler
    def handler(event, context):
        return {"answer": current_client().generate(event["prompt"]).content}

Modules: ``middleware`` (``flexiai_handler``), ``secrets`` (``resolve_reference``),
``http_events`` (API Gateway / Function URL resolvers), ``context`` (a local Lambda
context), ``template`` (reading ``template.yaml`` as ``sam local invoke`` does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flexiai._lazy import lazy_exports

if TYPE_CHECKING:
    from flexiai.aws._invocation import NoInvocationError, current_client
    from flexiai.aws.context import LocalLambdaContext
    from flexiai.aws.middleware import close_clients, flexiai_handler
    from flexiai.aws.secrets import resolve_reference

__all__ = [
    "LocalLambdaContext",
    "NoInvocationError",
    "close_clients",
    "current_client",
    "flexiai_handler",
    "resolve_reference",
]

_HOMES = {
    "LocalLambdaContext": "flexiai.aws.context",
    "NoInvocationError": "flexiai.aws._invocation",
    "close_clients": "flexiai.aws.middleware",
    "current_client": "flexiai.aws._invocation",
    "flexiai_handler": "flexiai.aws.middleware",
    "resolve_reference": "flexiai.aws.secrets",
}


__getattr__, __dir__ = lazy_exports("flexiai.aws", globals(), _HOMES)
