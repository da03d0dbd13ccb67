"""POST /generate: answer a prompt with the first healthy provider (see template.yaml).

The client is built from the function's FLEXIAI_* environment on the first invocation and
reused while the execution environment lives; the request/response mapping (400, 502, 503
with Retry-After, 504) lives in flexiai.aws.http_events, where it is tested.
"""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from flexiai.aws import current_client, flexiai_handler
from flexiai.aws.http_events import generate_response

logger = Logger()


@logger.inject_lambda_context
@flexiai_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return generate_response(current_client(), event, context)
