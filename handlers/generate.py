"""POST /generate: answer a prompt with the first healthy provider (see template.yaml).

The client is built from the function's FLEXIAI_* environment on the first invocation and
reused while the execution environment lives; the request/response mapping (400, 502, 503
with Retry-After, 504) lives in flexiai.aws.http_events, where it is tested.

Powertools' decorators in their documented order: the tracer outermost (a ``## handler``
subsegment, with flexiai's ``## flexiai`` inside), the logger (API Gateway's request id as
the correlation id of every record, flexiai's included), metrics (the one ``ColdStart``
series, dimensions ``function_name`` and ``service``), flexiai's middleware innermost.
"""

import os
import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from flexiai.aws import flexiai_handler
from flexiai.aws.http_events import generate_api
from flexiai.aws.middleware import DEFAULT_NAMESPACE

# auto_patch=False: patching every library the X-Ray SDK knows (botocore, httplib...) costs
# cold start and adds nothing: flexiai's own subsegment says which provider answered.
tracer = Tracer(auto_patch=False)
logger = Logger()
# The namespace of flexiai's own metrics, also when the variable is not set (a local run).
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE)
app = generate_api()

# flexiai flushes its own metrics (they carry a provider dimension); this Metrics carries
# only the cold start, so a warm invocation has nothing of its own to publish.
warnings.filterwarnings("ignore", "No application metrics to publish")


@tracer.capture_lambda_handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics(capture_cold_start_metric=True)
@flexiai_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
