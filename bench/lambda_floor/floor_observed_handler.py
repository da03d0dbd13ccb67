"""The floor with the Powertools utilities the shipped handlers must use (issue 13 item 5):
Tracer (``auto_patch=False``, as handlers/generate.py), Logger with API Gateway's
correlation id, Metrics with the ColdStart metric, and one pooled httpx client. It says what
the observability alone costs, so bench/lambda_cold_start.py can show flexiai's own share
next to the strict floor (floor_handler.py)."""

import json
import os
import warnings
from typing import Any

import httpx
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

tracer = Tracer(auto_patch=False)
logger = Logger()
metrics = Metrics(namespace="bench")
warnings.filterwarnings("ignore", "No application metrics to publish")
client = httpx.Client(
    base_url=os.environ["FLEXIAI_PROVIDER_1_BASE_URL"],
    headers={"authorization": f"Bearer {os.environ['FLEXIAI_PROVIDER_1_API_KEY']}"},
    timeout=30,
)


@tracer.capture_lambda_handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    body = json.loads(event["body"])
    answer = client.post(
        "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": body["prompt"]}]},
    )
    answer.raise_for_status()
    content = answer.json()["choices"][0]["message"]["content"]
    return {"statusCode": 200, "body": json.dumps({"content": content})}
