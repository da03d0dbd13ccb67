"""A cause peer of bench/lambda_cold_start.py (``--causes``): pydantic_handler.py's handler
routed through Powertools' event handler (``APIGatewayHttpResolver``), as
flexiai.aws.http_events routes the shipped handlers. Its distance to pydantic_handler.py is
what the event handler costs; the generate handler's distance to it is flexiai's own code."""

import json
import os
import warnings
from typing import Any, Literal

import httpx
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
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
app = APIGatewayHttpResolver()


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


@app.post(".+")
def generate() -> Response[str]:
    body = json.loads(app.current_event.raw_event["body"])
    message = Message(role="user", content=body["prompt"])
    answer = client.post(
        "/chat/completions", json={"model": "gpt-4o-mini", "messages": [message.model_dump()]}
    )
    answer.raise_for_status()
    reply = Message.model_validate(answer.json()["choices"][0]["message"])
    return Response(200, "application/json", json.dumps({"content": reply.content}))


@tracer.capture_lambda_handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
