"""A cause peer of bench/lambda_cold_start.py (``--causes``): the observed floor
(floor_observed_handler.py: Tracer, Logger with the correlation id, Metrics, one httpx
client) plus pydantic v2 on the request path, as flexiai has it: a model built at import,
the request's body and the provider's answer validated through it. Its distance to the
observed floor is what pydantic costs, before any of flexiai's own code runs."""

import json
import os
import warnings
from typing import Any, Literal

import httpx
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

tracer = Tracer(auto_patch=False)
logger = Logger()
metrics = Metrics(namespace="bench")
warnings.filterwarnings("ignore", "No application metrics to publish")
client = httpx.Client(
    base_url=os.environ["FLEXIAI_PROVIDER_1_BASE_URL"],
    headers={"authorization": f"Bearer {os.environ['FLEXIAI_PROVIDER_1_API_KEY']}"},
    timeout=30,
)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


@tracer.capture_lambda_handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    body = json.loads(event["body"])
    message = Message(role="user", content=body["prompt"])
    answer = client.post(
        "/chat/completions", json={"model": "gpt-4o-mini", "messages": [message.model_dump()]}
    )
    answer.raise_for_status()
    reply = Message.model_validate(answer.json()["choices"][0]["message"])
    return {"statusCode": 200, "body": json.dumps({"content": reply.content})}
