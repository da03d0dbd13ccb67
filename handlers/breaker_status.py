"""GET /breakers: every provider's fleet-wide breaker state, this worker's id and the
health of the shared store. Admin route: template.yaml puts it behind IAM auth.
"""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from flexiai.aws import current_client, flexiai_handler
from flexiai.aws.http_events import breaker_status_response

logger = Logger()


@logger.inject_lambda_context
@flexiai_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return breaker_status_response(current_client(), context)
