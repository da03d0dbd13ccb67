"""GET /breakers: every provider's fleet-wide breaker state, this worker's id and the
health of the shared store. Admin route: template.yaml puts it behind IAM auth.

The same Powertools decorators as handlers/generate.py (see there).
"""

import os
import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from flexiai.aws import flexiai_handler
from flexiai.aws.http_events import breaker_status_api
from flexiai.aws.middleware import DEFAULT_NAMESPACE

tracer = Tracer(auto_patch=False)
logger = Logger()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE)
app = breaker_status_api()

warnings.filterwarnings("ignore", "No application metrics to publish")


@tracer.capture_lambda_handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics(capture_cold_start_metric=True)
@flexiai_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
